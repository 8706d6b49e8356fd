"""The Redis online store: the latest row per entity, one Redis string per (view, entity).

Key layout (the one place it is defined)::

    {key_prefix}:{project}:{view}:{entity key}          one node
    {key_prefix}:{project}:{view}:{{entity key}}        a Redis Cluster (``cluster: true``)

``key_prefix`` comes from the config (default ``fs``); project and view names are letters, digits,
``_`` and ``-`` (no ``:``); the entity key is ``online_codec.encode_key`` of the key tuple in join-key
order, each part ``<tag><byte length>:<payload>`` (tag ``i`` int, ``s`` str, ``b`` bytes). Example:
driver 1001 of view ``driver_hourly_stats`` in project ``demo`` is ``fs:demo:driver_hourly_stats:i4:1001``;
the composite key ``(1001, "us")`` ends in ``i4:1001s2:us``. The value is the encoded row
(``online_codec``): timestamps, the row's schema and every feature, so a lookup of N entities is one
``MGET``. With a TTL the key expires at ``event_ts + ttl + expiry_grace_seconds`` (``SET ... PXAT``;
needs Redis >= 6.2): during the grace a read still finds the row, so the server reports it as
``OUTSIDE_MAX_AGE`` rather than ``NOT_FOUND``; after it the key is gone, so dead entities do not pile up.
On a cluster the braces make the entity key the hash tag: every view's row of an entity is in one slot,
and ``connectors.redis_cluster`` routes reads and writes per node (one command per node for a lookup).

Writes are event-time monotonic and atomic: a Lua script (``redis_scripts``, run with EVALSHA on up to
``batch_size`` keys per call, many calls per pipeline) reads the stored rows with one MGET, compares the
big-endian ``(event_ts, created_ts)`` that lead each row, and sets only strictly newer rows. A stored
row that is not sound (``online_codec.row_problem``: truncated, garbage, a time out of range) counts as
absent, so any write replaces it; reads answer such a key alone as invalid, naming the key. Redis runs a
script without interleaving other commands, so concurrent writers keep the newest row per key. On a
cluster each master gets its rows' calls (a variant of the script that takes keys of many slots, all
read before any is written), the masters in parallel. Rows are encoded and sent a slice at a time
while Redis still runs the calls of the previous slice (a bounded window of calls in flight), so
encoding overlaps Redis' own work (``redis_pipeline``).

Bulk loads (writes of ``bulk_absent_min_rows`` rows or more: materialization) first send ``SET key row
NX [PXAT t]`` for every row, without the script: ``NX`` only creates a missing key, so it cannot break
the monotonic rule either, and only the rows whose key exists go through the script afterwards. Redis'
CPU is the floor of a bulk load, and a new key costs it less through ``SET ... NX`` than through the
script (whose Lua arguments and per-key calls cost more than the writes). A small first slice (the
probe) decides whether ``NX`` pays: when most keys exist (re-runs, incremental loads) a failed ``NX``
is work for nothing, so the rest of the rows go straight to the script.

Connection failures and timeouts become ``BackendUnavailableError`` within about ``socket_timeout``
(connect and reply); the pool drops broken connections, so the first call after Redis is back works.

Lookups from an event loop (the feature server) use ``read_many_async``: one connection per loop,
driven by the loop itself (``connectors.redis_async``: an asyncio protocol with hiredis' reply
parser, or its ``_PyReplyReader`` when hiredis is not installed), so a request waiting for Redis never blocks the others, and the MGETs of
concurrent requests share the connection in a pipeline. Same keys, decoding, errors and timeouts as
``read``, over TCP (``redis://``), TLS (``rediss://``, with redis-py's TLS settings from the URL, e.g.
``rediss://host:6380/0?ssl_ca_certs=/etc/redis/ca.crt``) or a unix socket (``unix:///run/redis.sock``).
A connection setting the loop cannot honour (OCSP checks, a custom connection class) runs ``read`` in
the loop's thread pool instead: never on the loop itself.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import functools
import hashlib
import math
import pathlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors import online_codec as codec
from connectors.redis_async import _AsyncRedis, _pack, _pack_mget
from connectors.redis_cluster import ClusterClient, ClusterUnavailableError, tag_slots
from connectors.redis_pipeline import (
    EMPTY as _EMPTY,
)
from connectors.redis_pipeline import (
    cluster_framer,
    get_connection,
    raw_socket_ok,
    set_absent,
    single_node_framer,
    upsert_calls,
)
from connectors.redis_scripts import CLUSTER_UPSERT_LUA, UPSERT_LUA
from featurestore.errors import BackendUnavailableError, InvalidInputError, MissingDependencyError
from featurestore.ports.online_store import (
    CAP_ASYNC_READ,
    CAP_MULTI_PROCESS,
    CAP_REMOTE,
    CAP_TTL_EXPIRY,
    OnlineStore,
    ReadResult,
    WriteResult,
)

_CLUSTER_UPSERT = CLUSTER_UPSERT_LUA.encode()
_UPSERT_SHA = hashlib.sha1(UPSERT_LUA.encode()).hexdigest().encode()
_MAX_KEYS_PER_CALL = 2000  # Lua's unpack() stack limit is about 8000 values
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
_UNAVAILABLE_REPLIES = ("OOM", "READONLY", "MASTERDOWN", "LOADING", "BUSY", "CLUSTERDOWN", "TRYAGAIN")


class RedisOnlineStoreConfig(BaseModel):
    """``online_store: {type: redis, url: redis://127.0.0.1:6379/0}``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["redis"] = "redis"
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "fs"
    socket_timeout: float = Field(0.5, gt=0)
    batch_size: int = Field(1000, ge=1)
    # Keys outlive their TTL by this much, so expired values read as OUTSIDE_MAX_AGE before vanishing.
    expiry_grace_seconds: float = Field(3600.0, ge=0)
    # Writes of at least this many rows first try SET NX for every row (the bulk-load fast path of
    # RedisOnlineStore._set_absent); stream batches are smaller and mostly update existing keys.
    bulk_absent_min_rows: int = Field(10_000, ge=1)
    # How long a bulk write (``bulk_absent_min_rows`` rows or more: materialization) waits for Redis'
    # replies to one pipelined slice of rows: a busy server takes longer than a lookup's socket_timeout
    # to work through 25,000 rows. Smaller writes (pushes, stream batches) wait socket_timeout.
    bulk_write_timeout: float = Field(10.0, gt=0)
    # Redis Cluster (Redis >= 7): ``url`` names any one node; the others are found from it.
    cluster: bool = False
    # On a cluster, lookups read from a replica of each slot (when it has one), not from its master.
    read_from_replicas: bool = False
    # On a cluster, how long a write keeps routing rows while slots move or a master fails over.
    # (Redis' default cluster-node-timeout is 15 s: a failover takes a little longer than that.)
    write_retry_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _cluster_settings(self) -> "RedisOnlineStoreConfig":
        if self.read_from_replicas and not self.cluster:
            raise ValueError("read_from_replicas needs cluster: true (a single node has no replicas to read)")
        if self.cluster and ("{" in self.key_prefix or "}" in self.key_prefix):
            raise ValueError(f"key_prefix {self.key_prefix!r}: no '{{' or '}}' on a cluster (they pick a key's slot)")
        return self


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisOnlineStore(OnlineStore):
    capabilities = frozenset({CAP_TTL_EXPIRY, CAP_MULTI_PROCESS, CAP_REMOTE, CAP_ASYNC_READ})

    def __init__(self, config: RedisOnlineStoreConfig, repo_path: pathlib.Path, project: str) -> None:
        if isinstance(config, dict):
            config = RedisOnlineStoreConfig.model_validate(config)
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise MissingDependencyError("redis", "redis") from exc
        self.config = config
        self.project = project
        self._exc = redis.exceptions
        self._unavailable = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
        # One immediate retry on a dropped connection (a pooled socket Redis closed while it
        # restarted), none on timeouts: a hung server costs one socket_timeout, not several.
        retry = Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
        try:
            self._client = redis.Redis.from_url(
                config.url, socket_timeout=config.socket_timeout, socket_connect_timeout=config.socket_timeout,
                retry=retry, retry_on_timeout=False)
            url_kwargs = redis.connection.parse_url(config.url)
        except ValueError as exc:
            raise InvalidInputError(f"invalid Redis URL {config.url!r}: {exc}") from None
        self._cluster: ClusterClient | None = None
        if config.cluster:
            if int(url_kwargs.get("db") or 0) != 0:
                raise InvalidInputError(f"Redis URL {config.url!r}: a cluster has only database 0")
            self._cluster = ClusterClient(url_kwargs, config.socket_timeout, retry, config.read_from_replicas)
        self._decoder = codec.RowDecoder()
        self._per_call = max(1, min(config.batch_size, _MAX_KEYS_PER_CALL))
        self._sha: bytes | None = None  # the upsert script's SHA once loaded (reloaded after NOSCRIPT)
        self._prefixes: dict[str, bytes] = {}
        self._int_frames: dict[str, list[bytes]] = {}  # view -> MGET frame heads of integer keys, by digits
        self._async = _AsyncRedis.for_pool(self._client.connection_pool, config.socket_timeout)
        if self._cluster is not None:
            self._cluster_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="redis-cluster-write")

    # -- keys ------------------------------------------------------------------------------------
    def _view_prefix(self, view: str) -> bytes:
        if not _NAME.match(view):
            raise InvalidInputError(f"view name {view!r}: letters, digits, '_' and '-' only")
        return f"{self.config.key_prefix}:{self.project}:{view}:".encode()

    def _keys_of(self, prefix: bytes, parts: pa.Array) -> pa.Array:
        """The Redis keys of encoded entity keys (large_binary): ``prefix + part``, or on a cluster
        ``prefix + {part}``, the entity as the hash tag."""
        scalar = functools.partial(pa.scalar, type=pa.large_binary())
        if self._cluster is None:
            return pc.binary_join_element_wise(scalar(prefix), parts, _EMPTY)
        return pc.binary_join_element_wise(scalar(prefix + b"{"), parts, scalar(b"}"), _EMPTY)

    def _unavailable_error(self, exc: Exception, what: str) -> BackendUnavailableError:
        where = "Redis Cluster" if self._cluster is not None else "Redis"
        return BackendUnavailableError(f"{where} at {self.config.url} is unavailable ({what}): {exc}")

    def _call(self, what: str, fn, *args, **kwargs) -> Any:
        try:
            return fn(*args, **kwargs)
        except (*self._unavailable, ClusterUnavailableError) as exc:
            raise self._unavailable_error(exc, what) from exc
        except self._exc.ResponseError as exc:
            if str(exc).startswith(_UNAVAILABLE_REPLIES):
                raise self._unavailable_error(exc, what) from exc
            if self._cluster is None and (str(exc).startswith(("MOVED", "ASK", "CROSSSLOT")) or isinstance(
                    exc, (self._exc.MovedError, self._exc.AskError, self._exc.ClusterCrossSlotError))):
                raise InvalidInputError(f"Redis at {self.config.url} is a cluster node ({exc}): set "
                                        "cluster: true in the online_store settings") from None
            raise

    # -- the contract ----------------------------------------------------------------------------
    def write(self, view: str, join_keys: list[str], table: pa.Table, *, event_ts_column: str,
              created_ts_column: str | None = None, ttl: datetime.timedelta | None = None) -> WriteResult:
        total = table.num_rows
        prefix = self._view_prefix(view)
        if total == 0:
            return WriteResult(0, 0)
        batch = codec.WriteBatch(table, join_keys, event_ts_column, created_ts_column)
        pxat: list[int] | None = None
        if ttl is not None and ttl < datetime.timedelta(0):
            raise InvalidInputError(f"ttl must not be negative, got {ttl}")
        if ttl:  # a zero TTL means no TTL, as in the view definitions
            ttl_us = ttl // datetime.timedelta(microseconds=1) + int(self.config.expiry_grace_seconds * 1_000_000)
            # Expire just after event_ts + ttl + grace (ms, rounded up); rows already past it are not written.
            expire_ms = -((-(batch.event_us + ttl_us)) // 1000)
            alive = expire_ms > math.floor(time.time() * 1000)
            if not alive.all():
                batch.select(alive)
                expire_ms = expire_ms[alive]
            pxat = expire_ms.tolist()
        if len(batch) == 0:
            return WriteResult(0, total)
        keys = self._keys_of(prefix, batch.keys)
        if self._cluster is not None:
            written = self._call("write", self._cluster_write, batch, keys, pxat)
        else:
            written = self._call("write", self._run_upserts, batch, keys, pxat)
        return WriteResult(written=written, skipped_stale=total - written)

    def _run_upserts(self, batch: codec.WriteBatch, keys: pa.Array, pxat: list[int] | None) -> int:
        """Run the upsert script over all rows, pipelined; idempotent, so one retry on a lost connection."""
        try:
            return self._run_upserts_once(batch, keys, pxat)
        except self._exc.ConnectionError:
            self._sha = None
            return self._run_upserts_once(batch, keys, pxat)
        except self._exc.ResponseError as exc:
            if not isinstance(exc, self._exc.NoScriptError) and "NOSCRIPT" not in str(exc):
                raise
            self._sha = None  # the server lost its script cache (restart, SCRIPT FLUSH): load it again
            return self._run_upserts_once(batch, keys, pxat)

    def _run_upserts_once(self, batch: codec.WriteBatch, keys: pa.Array, pxat: list[int] | None) -> int:
        if self._sha is None:
            self._sha = self._client.script_load(UPSERT_LUA).encode()
        expiry = None if pxat is None else pa.array(pxat, pa.int64()).cast(pa.string())
        pool = self._client.connection_pool
        conn = get_connection(pool)
        try:
            written = 0
            if len(keys) >= self.config.bulk_absent_min_rows and raw_socket_ok(conn):
                _set_timeout(conn, self.config.bulk_write_timeout)  # back to socket_timeout in finally
                written, todo, _ = set_absent(conn, self._exc, batch, keys, expiry)
                if not todo.any():
                    return written
                if not todo.all():
                    batch, keys, expiry = _rows(batch, keys, expiry, todo)
            framer = single_node_framer(self._sha, expiry is not None)
            return written + upsert_calls(conn, self._exc, framer, batch, keys, expiry, self._per_call)[0]
        except BaseException:
            conn.disconnect()  # replies may be pending: never hand this socket to someone else
            raise
        finally:
            _set_timeout(conn, self.config.socket_timeout)
            pool.release(conn)

    # -- a cluster ---------------------------------------------------------------------------------
    def _cluster_write(self, batch: codec.WriteBatch, keys: pa.Array, pxat: list[int] | None) -> int:
        """Rows grouped by the master of their slot, each master's rows pipelined on one connection
        (masters in parallel). A master that does not answer gets its rows again, pipelined, once the
        map is read again (its replica may have taken over), until ``write_retry_seconds``; rows a
        master says it does not serve (a moved or migrating slot) go key by key at the end."""
        cluster = self._cluster
        cluster.ensure_map()
        deadline = time.monotonic() + self.config.write_retry_seconds
        expiry = None if pxat is None else pa.array(pxat, pa.int64()).cast(pa.string())
        slots = _part_slots(batch.keys.to_pylist())
        pending = np.ones(len(keys), dtype=bool)
        one_by_one = np.zeros(len(keys), dtype=bool)
        written, attempt, problem = 0, 0, None
        while pending.any():
            if attempt:
                if time.monotonic() > deadline:
                    raise ClusterUnavailableError(f"{int(pending.sum())} row(s) not written in "
                                                  f"{self.config.write_retry_seconds} s: {problem}")
                time.sleep(min(0.5, 0.05 * attempt))
                try:
                    cluster.refresh(force=True)
                except ClusterUnavailableError as exc:
                    problem = exc
            attempt += 1
            owner = np.where(pending, cluster.masters_of(slots), -2)
            if (owner == -1).any():
                problem = problem or "some slots have no master (a failover under way)"
            jobs = []
            for node in np.unique(owner[owner >= 0]).tolist():
                mask = owner == node
                jobs.append((np.flatnonzero(mask), self._cluster_pool.submit(
                    self._node_write, cluster.topology.nodes[node], *_rows(batch, keys, expiry, mask))))
            for rows, job in jobs:
                count, redirected, error = job.result()
                written += count
                one_by_one[rows[redirected]] = True
                pending[rows[redirected]] = False
                if error is None:
                    pending[rows] = False
                else:
                    problem = error
        if one_by_one.any():
            written += self._write_key_by_key(batch, keys, expiry, slots, one_by_one)
        return written

    def _node_write(self, address, batch: codec.WriteBatch, keys: pa.Array,
                    expiry: pa.Array | None) -> tuple[int, np.ndarray, Exception | None]:
        """One master's rows: (rows written, mask of the rows it does not serve, the error that stopped
        it: the node did not answer, so any row not counted may or may not be written)."""
        pool = self._cluster.client(address).connection_pool
        redirected = np.zeros(len(keys), dtype=bool)
        try:
            conn = get_connection(pool)
        except self._unavailable as exc:
            return 0, redirected, exc
        written = 0
        try:
            rows = np.arange(len(keys))
            if len(keys) >= self.config.bulk_absent_min_rows and raw_socket_ok(conn):
                _set_timeout(conn, self.config.bulk_write_timeout)  # back to socket_timeout in finally
                written, todo, moved = set_absent(conn, self._exc, batch, keys, expiry, cluster=True)
                redirected |= moved
                if not todo.any():
                    return written, redirected, None
                rows = np.flatnonzero(todo)
                if not todo.all():
                    batch, keys, expiry = _rows(batch, keys, expiry, todo)
            framer = cluster_framer(_CLUSTER_UPSERT, expiry is not None)
            count, moved = upsert_calls(conn, self._exc, framer, batch, keys, expiry, self._per_call, cluster=True)
            redirected[rows[moved]] = True
            return written + count, redirected, None
        except self._unavailable as exc:
            conn.disconnect()  # rows of this node may or may not be written: they go again (idempotent)
            return 0, np.zeros(len(redirected), dtype=bool), exc
        except BaseException:
            conn.disconnect()
            raise
        finally:
            _set_timeout(conn, self.config.socket_timeout)
            pool.release(conn)

    def _write_key_by_key(self, batch: codec.WriteBatch, keys: pa.Array, expiry: pa.Array | None,
                          slots: np.ndarray, left: np.ndarray) -> int:
        """The rows ``left`` one key a command, each to the node serving its key (``_follow``)."""
        batch, keys, expiry = _rows(batch, keys, expiry, left)
        rows = batch.encoded_rows().to_pylist()
        flag = b"1" if expiry is not None else b"0"
        sha = _UPSERT_SHA
        tails = [[flag, row] for row in rows] if expiry is None else [
            [flag, row, px] for row, px in zip(rows, expiry.to_pylist())]
        commands = [_pack(b"EVALSHA", sha, b"1", key, *[t if isinstance(t, bytes) else t.encode() for t in tail])
                    for key, tail in zip(keys.to_pylist(), tails)]
        deadline = time.monotonic() + self.config.write_retry_seconds
        replies = self._cluster.follow_writes(slots[left].tolist(), commands, UPSERT_LUA.encode(), deadline)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return sum(int(r) for r in replies)

    def read(self, view: str, join_keys: list[str], keys: list[tuple], features: list[str],
             feature_types: dict[str, pa.DataType]) -> ReadResult:
        parts = self._entity_parts(join_keys, keys)
        redis_keys = self._read_keys(view, join_keys, keys, parts)
        if not redis_keys:
            rows = []
        elif self._cluster is not None:
            rows = self._call("read", self._cluster.read, redis_keys, _part_slots(parts))
        else:
            rows = self._call("read", self._client.mget, redis_keys)
        return _name_invalid(self._decoder.decode(rows, features, feature_types), redis_keys)

    def _read_keys(self, view: str, join_keys: list[str], keys: list[tuple],
                   parts: list[bytes] | None = None) -> list[bytes]:
        """The Redis keys of ``keys`` in ``view`` (``parts``: their encoded entity keys, when known)."""
        prefix = self._prefixes.get(view)
        if prefix is None:
            prefix = self._prefixes[view] = self._view_prefix(view)
        if parts is None:
            parts = self._entity_parts(join_keys, keys)
        if self._cluster is not None:
            prefix += b"{"
            return [prefix + p + b"}" for p in parts]
        return [prefix + p for p in parts]

    @staticmethod
    def _entity_parts(join_keys: list[str], keys: list[tuple]) -> list[bytes]:
        """``online_codec.encode_key`` of each key tuple, checked against the join keys."""
        width = len(join_keys)
        for key in keys:
            if len(key) != width:
                raise InvalidInputError(f"key {key!r} does not match join keys {join_keys!r}")
        if width == 1:
            part = codec.encode_key_part
            return [part(key[0]) for key in keys]
        return [codec.encode_key(key) for key in keys]

    def _mget_packet(self, view: str, join_keys: list[str], keys: list[tuple],
                     decimals_of: dict[int, list[bytes] | None]) -> bytes:
        """``MGET`` of the keys' Redis keys in RESP; the usual single integer join key in one formatting
        pass per key (``_pack_mget(_read_keys(...))`` builds each key, then its RESP frame).
        ``decimals_of`` caches the decimals per key list (by identity) across the views of one lookup."""
        if len(join_keys) != 1 or not keys:
            return _pack_mget(self._read_keys(view, join_keys, keys))
        if id(keys) in decimals_of:  # the key lists of one call are all alive: ids are unique
            decimals = decimals_of[id(keys)]
        else:
            decimals = decimals_of[id(keys)] = _int_decimals(keys)
        if decimals is not None:
            heads = self._int_frames.get(view)
            if heads is None:
                # key = prefix + b"i<digits>:<decimal>" (online_codec.encode_key_part); per digit
                # count, the frame up to the decimal: b"$<key length>\r\n<prefix>i<digits>:"
                prefix = self._view_prefix(view)
                heads = self._int_frames[view] = [
                    b"$%d\r\n%si%d:" % (len(prefix) + 2 + n + len(b"%d" % n), prefix, n) for n in range(24)]
            try:
                return (b"*%d\r\n$4\r\nMGET\r\n" % (len(decimals) + 1)
                        + b"".join([heads[len(d)] + d + b"\r\n" for d in decimals]))
            except IndexError:  # an integer wider than int64: the general path
                pass
        return _pack_mget(self._read_keys(view, join_keys, keys))

    def _read_all(self, reads: list[tuple]) -> list[ReadResult]:
        return [self.read(*args) for args in reads]

    async def read_many_async(self, reads: list[tuple]) -> list[ReadResult]:
        """``[read(*args) for args in reads]`` without blocking the running event loop: the MGETs of all
        ``reads`` are pipelined on this loop's connection (see the module docstring)."""
        if self._async is None:
            return await asyncio.get_running_loop().run_in_executor(None, self._read_all, reads)
        if self._cluster is not None:
            return await self._read_many_cluster(reads)
        decimals_of: dict[int, list[bytes] | None] = {}
        commands = [self._mget_packet(view, join_keys, keys, decimals_of) for view, join_keys, keys, *_ in reads]
        try:
            replies = await self._async.execute(commands)
        except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
            raise self._unavailable_error(exc, "read") from exc
        out = []
        for (view, join_keys, keys, features, feature_types), reply in zip(reads, replies):
            if isinstance(reply, Exception):  # hiredis.ReplyError: an error reply of Redis
                error = self._exc.ResponseError(str(reply))
                if str(reply).startswith(_UNAVAILABLE_REPLIES):
                    raise self._unavailable_error(error, "read") from error
                raise error
            rows = reply if keys else []
            result = self._decoder.decode(rows, features, feature_types)
            if result.invalid:
                result = _name_invalid(result, self._read_keys(view, join_keys, keys))
            out.append(result)
        return out

    async def _read_many_cluster(self, reads: list[tuple]) -> list[ReadResult]:
        """All reads' keys in one go: one command per node, nodes in parallel (``redis_cluster``). The
        views of one lookup mostly share their key list: it is encoded, and its slots computed (from
        the entity alone: the hash tag), once."""
        encoded: dict[tuple[int, int], tuple[list[bytes], np.ndarray]] = {}
        per_read, slots = [], []
        for view, join_keys, keys, *_ in reads:
            # The key lists of one call are all alive: ids are unique (the width is checked per width).
            known = encoded.get((id(keys), len(join_keys)))
            if known is None:
                parts = self._entity_parts(join_keys, keys)
                known = encoded[id(keys), len(join_keys)] = (parts, _part_slots(parts))
            per_read.append(self._read_keys(view, join_keys, keys, known[0]))
            slots.append(known[1])
        redis_keys = [key for keys in per_read for key in keys]
        try:
            rows = await self._cluster.read_async(redis_keys, np.concatenate(slots) if slots else np.zeros(0, np.int64))
        except (ConnectionError, OSError, asyncio.TimeoutError, ClusterUnavailableError) as exc:
            raise self._unavailable_error(exc, "read") from exc
        out, at = [], 0
        for (_, _, _, features, feature_types), keys in zip(reads, per_read):
            result = self._decoder.decode(rows[at:at + len(keys)], features, feature_types)
            at += len(keys)
            out.append(_name_invalid(result, keys) if result.invalid else result)
        return out

    def delete_view(self, view: str) -> None:
        pattern = _glob_escape(self._view_prefix(view).decode()) + "*"
        if self._cluster is None:
            self._call("delete_view", _delete_matching, self._client, pattern, False)
            return
        for address in self._call("delete_view", self._cluster.masters):
            self._call("delete_view", _delete_matching, self._cluster.client(address), pattern, True)

    def close(self) -> None:
        self._client.close()
        if self._async is not None:
            self._async.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster_pool.shutdown(wait=False)


def _delete_matching(client, pattern: str, one_key_a_command: bool) -> None:
    """``UNLINK`` the keys of ``pattern`` on one node (on a cluster node one key a command: the keys
    of one call must share a slot)."""
    doomed: list[bytes] = []

    def unlink() -> None:
        if one_key_a_command:
            pipe = client.pipeline(transaction=False)
            for key in doomed:
                pipe.unlink(key)
            pipe.execute()
        else:
            client.unlink(*doomed)
        doomed.clear()

    for key in client.scan_iter(match=pattern, count=1000):
        doomed.append(key)
        if len(doomed) >= 1000:
            unlink()
    if doomed:
        unlink()


def _set_timeout(conn, seconds: float) -> None:
    """The reply timeout of a redis-py connection's socket (a no-op when it is not connected)."""
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _rows(batch: codec.WriteBatch, keys: pa.Array, expiry: pa.Array | None,
          mask: np.ndarray) -> tuple[codec.WriteBatch, pa.Array, pa.Array | None]:
    """The rows of ``mask``: a copy of the batch, the keys and the expiries (the caller's stay whole)."""
    part = copy.copy(batch)
    part.select(mask)
    take = pa.array(np.flatnonzero(mask))
    return part, keys.take(take), None if expiry is None else expiry.take(take)


def _part_slots(parts: list[bytes]) -> np.ndarray:
    """The cluster slot of each encoded entity key (the key's hash tag: up to its first ``}``)."""
    return tag_slots([p.split(b"}", 1)[0] if b"}" in p else p for p in parts])


def _name_invalid(result: ReadResult, redis_keys: list[bytes]) -> ReadResult:
    """``result`` with each undecodable row's message naming its Redis key."""
    for i, reason in result.invalid.items():
        key = redis_keys[i].decode("utf-8", "backslashreplace")
        result.invalid[i] = f"the Redis key {key!r} holds a row that cannot be decoded: {reason}"
    return result


def _int_decimals(keys: list[tuple]) -> list[bytes] | None:
    """The decimal digits of each key of a list of one-int key tuples (None for any other keys), all
    formatted in C by one ``str.join``."""
    if set(map(len, keys)) != {1}:
        return None
    ints = [k for (k,) in keys]
    if set(map(type, ints)) != {int}:
        return None
    return " ".join(map(str, ints)).encode().split()


__all__ = ["RedisOnlineStore", "RedisOnlineStoreConfig"]
