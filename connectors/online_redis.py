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
big-endian ``(event_ts, created_ts)`` that lead each row, and sets only strictly newer rows. Redis runs a
script without interleaving other commands, so concurrent writers keep the newest row per key. Keys
of one call must live on one server: Redis Cluster is not supported.

Connection failures and timeouts become ``BackendUnavailableError`` within about ``socket_timeout``
(connect and reply); the pool drops broken connections, so the first call after Redis is back works.
"""

from __future__ import annotations

import datetime
import inspect
import math
import pathlib
import re
import time
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from connectors import online_codec as codec
from featurestore.errors import BackendUnavailableError, InvalidInputError, MissingDependencyError
from featurestore.online_store import (
    CAP_MULTI_PROCESS,
    CAP_REMOTE,
    CAP_TTL_EXPIRY,
    OnlineStore,
    ReadResult,
    WriteResult,
)

# KEYS: entity keys. ARGV[1]: '1' when every row is followed by its expiry (unix ms), else '0';
# then per key: row [, pxat]. Returns how many rows were stored.
_UPSERT_LUA = """
local with_ttl = ARGV[1] == '1'
local stride = with_ttl and 2 or 1
local stored = redis.call('MGET', unpack(KEYS))
local written = 0
local mset = {}
for i = 1, #KEYS do
    local at = 2 + (i - 1) * stride
    local row = ARGV[at]
    local old = stored[i]
    local newer = true
    if old and #old >= 17 and string.byte(old, 1) == %(format)d then
        local a1, a2, a3, a4 = struct.unpack('>i4I4i4I4', row, 2)
        local b1, b2, b3, b4 = struct.unpack('>i4I4i4I4', old, 2)
        if a1 ~= b1 then newer = a1 > b1
        elseif a2 ~= b2 then newer = a2 > b2
        elseif a3 ~= b3 then newer = a3 > b3
        else newer = a4 > b4 end
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
""" % {"format": codec.FORMAT}

_MAX_KEYS_PER_CALL = 2000  # Lua's unpack() stack limit is about 8000 values
_CALLS_PER_PIPELINE = 50
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


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisOnlineStore(OnlineStore):
    capabilities = frozenset({CAP_TTL_EXPIRY, CAP_MULTI_PROCESS, CAP_REMOTE})

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
        rows = batch.encoded_rows()
        keys = pc.binary_join_element_wise(pa.scalar(prefix, pa.large_binary()), batch.keys, _EMPTY)
        written = self._call("write", self._run_upserts, keys, rows, pxat)
        return WriteResult(written=written, skipped_stale=total - written)

    def _run_upserts(self, keys: pa.Array, rows: pa.Array, pxat: list[int] | None) -> int:
        """Run the upsert script over all rows, pipelined; idempotent, so one retry on a lost connection."""
        try:
            return self._run_upserts_once(keys, rows, pxat)
        except self._exc.ConnectionError:
            return self._run_upserts_once(keys, rows, pxat)

    def _run_upserts_once(self, keys: pa.Array, rows: pa.Array, pxat: list[int] | None) -> int:
        # EVALSHA commands are packed here, column-wise, instead of by redis-py per argument: each
        # argument becomes "$<len>\r\n<bytes>\r\n" through Arrow, and a call's keys (then its
        # arguments) are one contiguous slice of the packed column's data buffer.
        sha = self._client.script_load(_UPSERT_LUA).encode()
        packed_keys = _resp_bulk(keys)
        if pxat is None:
            packed_args = _resp_bulk(rows)
        else:
            packed_args = pc.binary_join_element_wise(
                _resp_bulk(rows), _resp_bulk(pa.array(pxat, pa.int64()).cast(pa.string())), _EMPTY)
        key_view, key_off = _data_and_offsets(packed_keys)
        arg_view, arg_off = _data_and_offsets(packed_args)
        per_row_args = 1 if pxat is None else 2
        flag = b"$1\r\n1\r\n" if pxat is not None else b"$1\r\n0\r\n"
        n = len(keys)
        step = self._per_call
        commands: list[list] = []
        for start in range(0, n, step):
            stop = min(n, start + step)
            count = stop - start
            head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%d\r\n%d\r\n" % (
                3 + count + 1 + count * per_row_args, sha, len(b"%d" % count), count)
            commands.append([head, key_view[key_off[start]:key_off[stop]], flag,
                             arg_view[arg_off[start]:arg_off[stop]]])
        pool = self._client.connection_pool
        conn = pool.get_connection() if self._bare_get_connection else pool.get_connection("EVALSHA")
        written = 0
        try:
            for first in range(0, len(commands), _CALLS_PER_PIPELINE):
                group = commands[first:first + _CALLS_PER_PIPELINE]
                conn.send_packed_command([part for command in group for part in command])
                replies = [conn.read_response() for _ in group]
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply
                    written += int(reply)
        except BaseException:
            conn.disconnect()  # replies may be pending: never hand this socket to someone else
            raise
        finally:
            pool.release(conn)
        return written

    def read(self, view: str, join_keys: list[str], keys: list[tuple], features: list[str],
             feature_types: dict[str, pa.DataType]) -> ReadResult:
        prefix = self._view_prefix(view)
        redis_keys = []
        for key in keys:
            if len(key) != len(join_keys):
                raise InvalidInputError(f"key {key!r} does not match join keys {join_keys!r}")
            redis_keys.append(prefix + codec.encode_key(key))
        rows = self._call("read", self._client.mget, redis_keys) if redis_keys else []
        values, stamps = self._decoder.decode(rows, features, feature_types)
        return ReadResult(values=values, event_timestamps=stamps)

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


__all__ = ["RedisOnlineStore", "RedisOnlineStoreConfig"]
