"""The Redis online store: the latest row per entity, one Redis string per (view, entity).

Key layout (the one place it is defined)::

    {key_prefix}:{project}:{view}:{entity key}

``key_prefix`` comes from the config (default ``fs``); project and view names are letters, digits,
``_`` and ``-`` (no ``:``); the entity key is ``online_codec.encode_key`` of the key tuple in join-key
order, each part ``<tag><byte length>:<payload>`` (tag ``i`` int, ``s`` str, ``b`` bytes). Example:
driver 1001 of view ``driver_hourly_stats`` in project ``demo`` is ``fs:demo:driver_hourly_stats:i4:1001``;
the composite key ``(1001, "us")`` ends in ``i4:1001s2:us``. The value is the encoded row
(``online_codec``): timestamps, the row's schema and every feature, so a lookup of N entities is one
``MGET``. With a TTL the key expires at ``event_ts + ttl + expiry_grace_seconds`` (``SET ... PXAT``;
needs Redis >= 6.2): during the grace a read still finds the row, so the server reports it as
``OUTSIDE_MAX_AGE`` rather than ``NOT_FOUND``; after it the key is gone, so dead entities do not pile up.

Writes are event-time monotonic and atomic: a Lua script (``_UPSERT_LUA``, run with EVALSHA on up to
``batch_size`` keys per call, many calls per pipeline) reads the stored rows with one MGET, compares the
big-endian ``(event_ts, created_ts)`` that lead each row, and sets only strictly newer rows. A stored
row that is not sound (``online_codec.row_problem``: truncated, garbage, a time out of range) counts as
absent, so any write replaces it; reads answer such a key alone as invalid, naming the key. Redis runs a
script without interleaving other commands, so concurrent writers keep the newest row per key. Keys
of one call must live on one server: Redis Cluster is not supported. Rows are encoded and sent a slice
at a time while Redis still runs the calls of the previous slice (a bounded window of calls in
flight), so encoding overlaps Redis' own work.

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
import collections
import copy
import datetime
import functools
import inspect
import math
import pathlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from connectors import online_codec as codec
from connectors.redis_async import _DOLLAR_BYTE, _PLUS, _UNDERSCORE, _AsyncRedis, _pack_mget
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

# KEYS: entity keys. ARGV[1]: '1' when every row is followed by its expiry (unix ms), else '0';
# then per key: row [, pxat]. Returns how many rows were stored. A stored row that is not sound
# (``sound``, the checks of ``online_codec.row_problem`` in the same order) counts as absent, so a
# damaged row never blocks a write.
_UPSERT_LUA = """
local with_ttl = ARGV[1] == '1'
local stride = with_ttl and 2 or 1
local stored = redis.call('MGET', unpack(KEYS))
local written = 0
local mset = {}
local WIDTH = {%(widths)s}
local sizes = {}  -- schema section -> {bytes up to the blobs, offsets of the blob lengths}, or false

local function sizes_of(schema)
    local size, count, var_at, pos, n = 0, 0, {}, 1, #schema
    while pos <= n do
        if pos + 2 > n then return false end
        local code, length = struct.unpack('>BH', schema, pos)
        pos = pos + 3 + length
        if pos > n + 1 then return false end
        local width = WIDTH[code]
        if width == nil then return false end
        count = count + 1
        if width < 0 then
            var_at[#var_at + 1] = size
            width = 4
        end
        size = size + width
    end
    local nb = math.floor((count + 7) / 8)
    for j = 1, #var_at do var_at[j] = var_at[j] + nb end
    return {nb + size, var_at}
end

local last_schema, last_found = '', sizes_of('')  -- the previous stored row's schema and its sizes

-- Whether a stored row of n bytes, whose header (past its format byte) is e1..slen, is sound. A time
-- is (hi, lo): its signed high and unsigned low 32 bits, compared with the range's.
local function sound(row, n, e1, e2, c1, c2, slen)
    if e1 < %(min_hi)d or (e1 == %(min_hi)d and e2 < %(min_lo)d)
            or e1 > %(end_hi)d or (e1 == %(end_hi)d and e2 >= %(end_lo)d) then
        return false
    end
    if (c1 ~= -2147483648 or c2 ~= 0) and (c1 < %(min_hi)d or (c1 == %(min_hi)d and c2 < %(min_lo)d)
            or c1 > %(end_hi)d or (c1 == %(end_hi)d and c2 >= %(end_lo)d)) then
        return false
    end
    if %(header)d + slen > n then return false end
    local found
    -- Rows of one call mostly share a schema: compared in place, without copying it out of the row.
    if slen == #last_schema and string.find(row, last_schema, %(header)d + 1, true) == %(header)d + 1 then
        found = last_found
    else
        local schema = string.sub(row, %(header)d + 1, %(header)d + slen)
        found = sizes[schema]
        if found == nil then
            found = sizes_of(schema)
            sizes[schema] = found
        end
        last_schema, last_found = schema, found
    end
    if not found then return false end
    local start = %(header)d + slen
    local need = start + found[1]
    if need > n then return false end
    local var_at = found[2]
    for j = 1, #var_at do
        need = need + struct.unpack('<I4', row, start + var_at[j] + 1)
    end
    return need == n
end

for i = 1, #KEYS do
    local at = 2 + (i - 1) * stride
    local row = ARGV[at]
    local old = stored[i]
    local newer = true
    if old and #old >= %(header)d and string.byte(old, 1) == %(format)d then
        local b1, b2, b3, b4, slen = struct.unpack('>i4I4i4I4H', old, 2)
        if sound(old, #old, b1, b2, b3, b4, slen) then
            local a1, a2, a3, a4 = struct.unpack('>i4I4i4I4', row, 2)
            if a1 ~= b1 then newer = a1 > b1
            elseif a2 ~= b2 then newer = a2 > b2
            elseif a3 ~= b3 then newer = a3 > b3
            else newer = a4 > b4 end
        end
    end
    if newer then
        written = written + 1
        if with_ttl then
            redis.call('SET', KEYS[i], row, 'PXAT', ARGV[at + 1])
        else
            mset[#mset + 1] = KEYS[i]
            mset[#mset + 1] = row
        end
    end
end
if #mset > 0 then redis.call('MSET', unpack(mset)) end
return written
""" % {"format": codec.FORMAT, "header": codec.HEADER_SIZE,
       "widths": ", ".join(f"[{code}] = {width}" for code, width in sorted(codec.FIXED_SECTION_WIDTH.items())),
       "min_hi": codec.ROW_TS_MIN_US >> 32, "min_lo": codec.ROW_TS_MIN_US & 0xFFFFFFFF,
       "end_hi": codec.ROW_TS_END_US >> 32, "end_lo": codec.ROW_TS_END_US & 0xFFFFFFFF}

_MAX_KEYS_PER_CALL = 2000  # Lua's unpack() stack limit is about 8000 values
# The SET NX bulk path (RedisOnlineStore._set_absent, for writes of ``bulk_absent_min_rows`` or more)
# probes with a first slice of _ABSENT_PROBE_ROWS, then sends _ABSENT_SLICE_ROWS rows at a time.
_ABSENT_PROBE_ROWS = 2_000
_ABSENT_SLICE_ROWS = 25_000
_SET_HEAD = b"*4\r\n$3\r\nSET\r\n"
_SET_HEAD_TTL = b"*6\r\n$3\r\nSET\r\n"
_NX = b"$2\r\nNX\r\n"
_NX_PXAT = b"$2\r\nNX\r\n$4\r\nPXAT\r\n"
# First bytes of the one-line replies of SET ... NX: +OK (set), _ (RESP3 null) or $-1 (RESP2 null)
_CALLS_PER_PIPELINE = 25  # calls per slice of rows encoded and sent at once
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


_EMPTY = pa.scalar(b"", pa.large_binary())
_CRLF = pa.scalar(b"\r\n", pa.large_binary())
_DOLLAR = pa.scalar(b"$", pa.large_binary())


def _resp_bulk(values: pa.Array) -> pa.Array:
    """Each value as a RESP bulk string, ``$<len>\\r\\n<bytes>\\r\\n`` (large_binary)."""
    values = values.cast(pa.large_binary())
    length = pc.binary_length(values).cast(pa.string()).cast(pa.large_binary())
    return pc.binary_join_element_wise(_DOLLAR, length, _CRLF, values, _CRLF, _EMPTY)


def _data_and_offsets(arr: pa.Array) -> tuple[memoryview, np.ndarray]:
    """The data buffer of a large_binary array and its value offsets (rows i..j = data[off[i]:off[j]])."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=arr.offset + len(arr) + 1)[arr.offset:]
    data = arr.buffers()[2]
    return memoryview(data if data is not None else b""), offsets


def _raw_socket_ok(conn) -> bool:
    """Whether replies can be read off this redis-py connection's socket directly (``_sock`` is
    redis-py's socket attribute)."""
    conn.connect()  # a no-op when connected
    return getattr(conn, "_sock", None) is not None


def _set_nx_slices(n: int) -> list[tuple[int, int]]:
    """The row ranges a bulk write of ``n`` rows sends at a time: the probe, then
    ``_ABSENT_SLICE_ROWS`` rows each."""
    bounds = [(0, min(n, _ABSENT_PROBE_ROWS))]
    bounds += [(lo, min(n, lo + _ABSENT_SLICE_ROWS)) for lo in range(bounds[0][1], n, _ABSENT_SLICE_ROWS)]
    return bounds


def _pack_set_nx(batch: codec.WriteBatch, keys: pa.Array, expiry: pa.Array | None, lo: int,
                 hi: int) -> memoryview:
    """Rows ``lo:hi`` as pipelined ``SET key row NX [PXAT t]`` commands, in RESP."""
    head = _SET_HEAD_TTL if expiry is not None else _SET_HEAD
    tail = _NX_PXAT if expiry is not None else _NX
    parts = [pa.scalar(head, pa.large_binary()), _resp_bulk(keys.slice(lo, hi - lo)),
             _resp_bulk(batch.encoded_rows(lo, hi)), pa.scalar(tail, pa.large_binary())]
    if expiry is not None:
        parts.append(_resp_bulk(expiry.slice(lo, hi - lo)))
    data, offsets = _data_and_offsets(pc.binary_join_element_wise(*parts, _EMPTY))
    return data[offsets[0]:offsets[-1]]


class _SetNxReplies:
    """The replies to pipelined ``SET ... NX`` commands, read off a redis-py connection's socket.

    Every such reply is one line, ``+OK`` or a null (``_`` in RESP3, ``$-1`` in RESP2), so the replies
    of a slice are told apart by their first bytes in one numpy pass; anything else (an error reply
    such as OOM) raises, and the caller drops the connection.
    """

    __slots__ = ("sock", "exc", "buf")

    def __init__(self, sock, exc) -> None:
        self.sock = sock
        self.exc = exc  # redis.exceptions
        self.buf = bytearray()  # bytes received and not consumed yet

    def read(self, need: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``need`` replies: masks of the rows set (``+OK``) and of those whose key existed."""
        data, starts, ends = self._lines(need)
        first = data[starts]
        ok = first == _PLUS
        nil = (first == _UNDERSCORE) | (first == _DOLLAR_BYTE)
        if not (ok | nil).all():
            self._raise_unexpected(int(starts[np.flatnonzero(~(ok | nil))[0]]))
        del self.buf[:int(ends[-1]) + 1]
        return ok, nil

    def _lines(self, need: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The received bytes once they hold ``need`` lines, and where each of those lines starts and
        where its newline is."""
        buf = self.buf
        while buf.count(b"\n") < need:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise self.exc.ConnectionError("Redis closed the connection during a bulk write")
            buf.extend(chunk)
        data = np.frombuffer(bytes(buf), dtype=np.uint8)
        ends = np.flatnonzero(data == 10)[:need]  # each reply is one line
        starts = np.empty(need, dtype=np.int64)
        starts[0], starts[1:] = 0, ends[:-1] + 1
        return data, starts, ends

    def _raise_unexpected(self, at: int) -> NoReturn:
        reply = bytes(self.buf[at:self.buf.find(b"\r\n", at)])
        if reply.startswith(b"-"):
            raise self.exc.ResponseError(reply[1:].decode("utf-8", "replace"))
        raise self.exc.ConnectionError(f"unexpected reply from Redis to SET NX: {reply[:40]!r}")

    def check_drained(self) -> None:
        """Raise if Redis sent more than was read."""
        if self.buf:
            raise self.exc.ConnectionError("unexpected extra replies from Redis after a bulk write")


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
        try:
            self._client = redis.Redis.from_url(
                config.url,
                socket_timeout=config.socket_timeout,
                socket_connect_timeout=config.socket_timeout,
                # One immediate retry on a dropped connection (a pooled socket Redis closed while it
                # restarted), none on timeouts: a hung server costs one socket_timeout, not several.
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
                retry_on_timeout=False,
            )
        except ValueError as exc:
            raise InvalidInputError(f"invalid Redis URL {config.url!r}: {exc}") from None
        # redis-py < 5.3 wants a command name for get_connection(); later versions deprecate it.
        params = inspect.signature(self._client.connection_pool.get_connection).parameters
        command_name = params.get("command_name")
        self._bare_get_connection = command_name is None or command_name.default is not inspect.Parameter.empty
        self._decoder = codec.RowDecoder()
        self._per_call = max(1, min(config.batch_size, _MAX_KEYS_PER_CALL))
        self._sha: bytes | None = None  # the upsert script's SHA once loaded (reloaded after NOSCRIPT)
        self._prefixes: dict[str, bytes] = {}
        self._int_frames: dict[str, list[bytes]] = {}  # view -> MGET frame heads of integer keys, by digits
        self._async = _AsyncRedis.for_pool(self._client.connection_pool, config.socket_timeout)

    # -- keys ------------------------------------------------------------------------------------
    def _view_prefix(self, view: str) -> bytes:
        if not _NAME.match(view):
            raise InvalidInputError(f"view name {view!r}: letters, digits, '_' and '-' only")
        return f"{self.config.key_prefix}:{self.project}:{view}:".encode()

    def _unavailable_error(self, exc: Exception, what: str) -> BackendUnavailableError:
        return BackendUnavailableError(f"Redis at {self.config.url} is unavailable ({what}): {exc}")

    def _call(self, what: str, fn, *args, **kwargs) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._unavailable as exc:
            raise self._unavailable_error(exc, what) from exc
        except self._exc.ResponseError as exc:
            if str(exc).startswith(_UNAVAILABLE_REPLIES):
                raise self._unavailable_error(exc, what) from exc
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
        keys = pc.binary_join_element_wise(pa.scalar(prefix, pa.large_binary()), batch.keys, _EMPTY)
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
            self._sha = self._client.script_load(_UPSERT_LUA).encode()
        expiry = None if pxat is None else pa.array(pxat, pa.int64()).cast(pa.string())
        pool = self._client.connection_pool
        conn = pool.get_connection() if self._bare_get_connection else pool.get_connection("EVALSHA")
        try:
            written = 0
            if len(keys) >= self.config.bulk_absent_min_rows and _raw_socket_ok(conn):
                written, todo = self._set_absent(conn, batch, keys, expiry)
                if not todo.any():
                    return written
                if not todo.all():
                    batch = copy.copy(batch)  # the caller's batch stays whole (a retry starts over)
                    batch.select(todo)
                    take = pa.array(np.flatnonzero(todo))
                    keys = keys.take(take)
                    expiry = None if expiry is None else expiry.take(take)
            return written + self._upsert_script(conn, batch, keys, expiry)
        except BaseException:
            conn.disconnect()  # replies may be pending: never hand this socket to someone else
            raise
        finally:
            pool.release(conn)

    def _set_absent(self, conn, batch: codec.WriteBatch, keys: pa.Array,
                    expiry: pa.Array | None) -> tuple[int, np.ndarray]:
        """The bulk-load fast path: ``SET key row NX [PXAT t]`` for every row, pipelined, no script.

        ``NX`` writes only a key that does not exist, atomically, so it can never overwrite a newer row:
        the monotonic rule holds with any number of writers. A key that exists gets a nil reply and its
        row is left to the compare-and-set script. A new key costs Redis less this way than through the
        script (whose Lua arguments and per-key calls cost more than the writes), but a failed ``NX`` is
        Redis work for nothing: when most keys of a slice already exist (a re-run, an incremental load)
        the rest of the rows go straight to the script.

        Returns (rows written, mask of the rows the script still has to try). Replies are read off the
        socket as bytes (``_SetNxReplies``).
        """
        n = len(keys)
        todo = np.zeros(n, dtype=bool)
        replies = _SetNxReplies(conn._sock, self._exc)
        pack = functools.partial(_pack_set_nx, batch, keys, expiry)
        written = 0
        in_flight: collections.deque = collections.deque()
        stop = n  # rows from here on are left to the script

        def collect(lo: int, hi: int) -> bool:
            """Read the replies of rows lo:hi; False when most of their keys existed."""
            nonlocal written
            ok, nil = replies.read(hi - lo)
            written += int(ok.sum())
            todo[lo:hi] = nil
            return int(nil.sum()) * 2 <= hi - lo

        # A small first slice (the probe) decides whether SET NX pays; its replies are awaited before
        # anything else is sent. After it, a helper thread encodes slice k+1 (Arrow and numpy, mostly
        # without the GIL) while this one sends slice k and reads the replies of slice k-1, so Redis
        # always has commands queued.
        bounds = _set_nx_slices(n)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-encode") as encoder:
            ahead = None
            for k, (lo, hi) in enumerate(bounds):
                packed = ahead.result() if ahead is not None else pack(lo, hi)
                ahead = encoder.submit(pack, *bounds[k + 1]) if 0 < k < len(bounds) - 1 else None
                conn.send_packed_command([packed])
                in_flight.append((lo, hi))
                if (k == 0 or len(in_flight) > 1) and not collect(*in_flight.popleft()):
                    stop = hi
                    break
        while in_flight:
            collect(*in_flight.popleft())
        replies.check_drained()
        todo[stop:] = True
        return written, todo

    def _upsert_script(self, conn, batch: codec.WriteBatch, keys: pa.Array, expiry: pa.Array | None) -> int:
        # EVALSHA commands are packed here, column-wise, instead of by redis-py per argument: each
        # argument becomes "$<len>\r\n<bytes>\r\n" through Arrow, and a call's keys (then its
        # arguments) are one contiguous slice of the packed column's data buffer. Rows are encoded one
        # slice (_CALLS_PER_PIPELINE calls) at a time; before sending slice k+1 the replies of slice
        # k-1 are read, so Redis always has a slice to run while the next one is encoded, and never
        # more than two slices queued (a reply is awaited for at most two slices of Redis work).
        sha = self._sha
        per_row_args = 1 if expiry is None else 2
        flag = b"$1\r\n1\r\n" if expiry is not None else b"$1\r\n0\r\n"
        n = len(keys)
        step = self._per_call
        slice_rows = step * _CALLS_PER_PIPELINE
        written = 0
        in_flight: list[int] = []  # calls sent per slice whose replies are not read yet

        def read_replies(calls: int) -> None:
            nonlocal written
            for _ in range(calls):
                reply = conn.read_response()
                if isinstance(reply, Exception):
                    raise reply
                written += int(reply)

        for lo in range(0, n, slice_rows):
            hi = min(n, lo + slice_rows)
            packed_keys = _resp_bulk(keys.slice(lo, hi - lo))
            packed_args = _resp_bulk(batch.encoded_rows(lo, hi))
            if expiry is not None:
                packed_args = pc.binary_join_element_wise(
                    packed_args, _resp_bulk(expiry.slice(lo, hi - lo)), _EMPTY)
            key_view, key_off = _data_and_offsets(packed_keys)
            arg_view, arg_off = _data_and_offsets(packed_args)
            parts: list = []
            for start in range(0, hi - lo, step):
                stop = min(hi - lo, start + step)
                count = stop - start
                head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%d\r\n%d\r\n" % (
                    3 + count + 1 + count * per_row_args, sha, len(b"%d" % count), count)
                parts += [head, key_view[key_off[start]:key_off[stop]], flag,
                          arg_view[arg_off[start]:arg_off[stop]]]
            if len(in_flight) > 1:
                read_replies(in_flight.pop(0))
            conn.send_packed_command(parts)
            in_flight.append(len(parts) // 4)
        while in_flight:
            read_replies(in_flight.pop(0))
        return written

    def read(self, view: str, join_keys: list[str], keys: list[tuple], features: list[str],
             feature_types: dict[str, pa.DataType]) -> ReadResult:
        redis_keys = self._read_keys(view, join_keys, keys)
        rows = self._call("read", self._client.mget, redis_keys) if redis_keys else []
        return _name_invalid(self._decoder.decode(rows, features, feature_types), redis_keys)

    def _read_keys(self, view: str, join_keys: list[str], keys: list[tuple]) -> list[bytes]:
        prefix = self._prefixes.get(view)
        if prefix is None:
            prefix = self._prefixes[view] = self._view_prefix(view)
        width = len(join_keys)
        for key in keys:
            if len(key) != width:
                raise InvalidInputError(f"key {key!r} does not match join keys {join_keys!r}")
        if width == 1:
            part = codec.encode_key_part
            return [prefix + part(key[0]) for key in keys]
        return [prefix + codec.encode_key(key) for key in keys]

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

    def delete_view(self, view: str) -> None:
        pattern = _glob_escape(self._view_prefix(view).decode()) + "*"
        self._call("delete_view", self._delete_matching, pattern)

    def _delete_matching(self, pattern: str) -> None:
        doomed: list[bytes] = []
        for key in self._client.scan_iter(match=pattern, count=1000):
            doomed.append(key)
            if len(doomed) >= 1000:
                self._client.unlink(*doomed)
                doomed = []
        if doomed:
            self._client.unlink(*doomed)

    def close(self) -> None:
        self._client.close()
        if self._async is not None:
            self._async.close()


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
