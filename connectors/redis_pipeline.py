"""Pipelined writes of encoded rows over one Redis connection: the bulk ``SET key row NX [PXAT t]``
pass and the calls of the monotonic upsert script (``redis_scripts``), packed column-wise in RESP.

Used by ``online_redis`` for one node and, per node, for a cluster. On a cluster a row whose key the
node does not serve (a redirect reply: the slot moved or is migrating) is not an error here: it is
reported back in a mask, and the cluster client routes those rows key by key.
"""

from __future__ import annotations

import collections
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectors import online_codec as codec
from connectors.redis_async import _DOLLAR_BYTE, _PLUS, _UNDERSCORE

# The SET NX bulk path (``set_absent``) probes with a first slice of ABSENT_PROBE_ROWS, then sends
# ABSENT_SLICE_ROWS rows at a time.
ABSENT_PROBE_ROWS = 2_000
ABSENT_SLICE_ROWS = 25_000
CALLS_PER_PIPELINE = 25  # script calls per slice of rows encoded and sent at once
_SET_HEAD = b"*4\r\n$3\r\nSET\r\n"
_SET_HEAD_TTL = b"*6\r\n$3\r\nSET\r\n"
_NX = b"$2\r\nNX\r\n"
_NX_PXAT = b"$2\r\nNX\r\n$4\r\nPXAT\r\n"
_MINUS = ord("-")
# Error replies that say "not on this node, or not now" on a cluster (the row is routed again).
REDIRECT_REPLIES = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "FSREDIRECT", "MASTERDOWN", "LOADING",
                    "READONLY")

EMPTY = pa.scalar(b"", pa.large_binary())
_CRLF = pa.scalar(b"\r\n", pa.large_binary())
_DOLLAR = pa.scalar(b"$", pa.large_binary())


def resp_bulk(values: pa.Array) -> pa.Array:
    """Each value as a RESP bulk string, ``$<len>\\r\\n<bytes>\\r\\n`` (large_binary)."""
    values = values.cast(pa.large_binary())
    length = pc.binary_length(values).cast(pa.string()).cast(pa.large_binary())
    return pc.binary_join_element_wise(_DOLLAR, length, _CRLF, values, _CRLF, EMPTY)


def data_and_offsets(arr: pa.Array) -> tuple[memoryview, np.ndarray]:
    """The data buffer of a large_binary array and its value offsets (rows i..j = data[off[i]:off[j]])."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=arr.offset + len(arr) + 1)[arr.offset:]
    data = arr.buffers()[2]
    return memoryview(data if data is not None else b""), offsets


def raw_socket_ok(conn) -> bool:
    """Whether replies can be read off this redis-py connection's socket directly (``_sock`` is
    redis-py's socket attribute)."""
    conn.connect()  # a no-op when connected
    return getattr(conn, "_sock", None) is not None


def get_connection(pool):
    """A connection of a redis-py pool (redis-py < 5.3 wants a command name; later versions deprecate it)."""
    command_name = inspect.signature(pool.get_connection).parameters.get("command_name")
    if command_name is None or command_name.default is not inspect.Parameter.empty:
        return pool.get_connection()
    return pool.get_connection("EVAL")


def is_redirect(error: Exception, exc) -> bool:
    """Whether an error reply (a redis-py exception; its classes drop the reply's first word) says the
    key is served elsewhere or not right now."""
    if isinstance(error, (exc.MovedError, exc.AskError, exc.TryAgainError, exc.ClusterDownError,
                          exc.BusyLoadingError, exc.ReadOnlyError)):
        return True
    return str(error).startswith(REDIRECT_REPLIES)


def set_nx_slices(n: int) -> list[tuple[int, int]]:
    """The row ranges a bulk write of ``n`` rows sends at a time: the probe, then
    ``ABSENT_SLICE_ROWS`` rows each."""
    bounds = [(0, min(n, ABSENT_PROBE_ROWS))]
    bounds += [(lo, min(n, lo + ABSENT_SLICE_ROWS)) for lo in range(bounds[0][1], n, ABSENT_SLICE_ROWS)]
    return bounds


def _pack_set_nx(batch: codec.WriteBatch, keys: pa.Array, expiry: pa.Array | None, lo: int,
                 hi: int) -> memoryview:
    """Rows ``lo:hi`` as pipelined ``SET key row NX [PXAT t]`` commands, in RESP."""
    head = _SET_HEAD_TTL if expiry is not None else _SET_HEAD
    tail = _NX_PXAT if expiry is not None else _NX
    parts = [pa.scalar(head, pa.large_binary()), resp_bulk(keys.slice(lo, hi - lo)),
             resp_bulk(batch.encoded_rows(lo, hi)), pa.scalar(tail, pa.large_binary())]
    if expiry is not None:
        parts.append(resp_bulk(expiry.slice(lo, hi - lo)))
    data, offsets = data_and_offsets(pc.binary_join_element_wise(*parts, EMPTY))
    return data[offsets[0]:offsets[-1]]


class _SetNxReplies:
    """The replies to pipelined ``SET ... NX`` commands, read off a redis-py connection's socket.

    Every such reply is one line, ``+OK`` or a null (``_`` in RESP3, ``$-1`` in RESP2), so the replies
    of a slice are told apart by their first bytes in one numpy pass. On a cluster a redirect error
    line (``-MOVED ...``, ``-ASK ...``) marks its row for routing again; any other error reply (such as
    OOM) raises, and the caller drops the connection.
    """

    __slots__ = ("sock", "exc", "buf", "cluster")

    def __init__(self, sock, exc, cluster: bool) -> None:
        self.sock = sock
        self.exc = exc  # redis.exceptions
        self.buf = bytearray()  # bytes received and not consumed yet
        self.cluster = cluster

    def read(self, need: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next ``need`` replies: masks of the rows set (``+OK``), of those whose key existed, and
        of those redirected."""
        data, starts, ends = self._lines(need)
        first = data[starts]
        ok = first == _PLUS
        nil = (first == _UNDERSCORE) | (first == _DOLLAR_BYTE)
        moved = np.zeros(need, dtype=bool)
        other = ~(ok | nil)
        if other.any():
            for i in np.flatnonzero(other).tolist():
                at = int(starts[i])
                if not (self.cluster and data[at] == _MINUS and self._line(at)[1:].startswith(
                        tuple(r.encode() for r in REDIRECT_REPLIES))):
                    self._raise_unexpected(at)
                moved[i] = True
        del self.buf[:int(ends[-1]) + 1]
        return ok, nil, moved

    def _line(self, at: int) -> bytes:
        return bytes(self.buf[at:self.buf.find(b"\r\n", at)])

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
        reply = self._line(at)
        if reply.startswith(b"-"):
            raise self.exc.ResponseError(reply[1:].decode("utf-8", "replace"))
        raise self.exc.ConnectionError(f"unexpected reply from Redis to SET NX: {reply[:40]!r}")

    def check_drained(self) -> None:
        """Raise if Redis sent more than was read."""
        if self.buf:
            raise self.exc.ConnectionError("unexpected extra replies from Redis after a bulk write")


def set_absent(conn, exc, batch: codec.WriteBatch, keys: pa.Array, expiry: pa.Array | None, *,
               cluster: bool = False) -> tuple[int, np.ndarray, np.ndarray]:
    """The bulk-load fast path: ``SET key row NX [PXAT t]`` for every row, pipelined, no script.

    ``NX`` writes only a key that does not exist, atomically, so it can never overwrite a newer row:
    the monotonic rule holds with any number of writers. A key that exists gets a nil reply and its
    row is left to the compare-and-set script. A new key costs Redis less this way than through the
    script (whose Lua arguments and per-key calls cost more than the writes), but a failed ``NX`` is
    Redis work for nothing: when most keys of a slice already exist (a re-run, an incremental load)
    the rest of the rows go straight to the script.

    Returns (rows written, mask of the rows the script still has to try, mask of the rows redirected
    on a cluster). Replies are read off the socket as bytes (``_SetNxReplies``).
    """
    n = len(keys)
    todo = np.zeros(n, dtype=bool)
    redirected = np.zeros(n, dtype=bool)
    replies = _SetNxReplies(conn._sock, exc, cluster)
    pack = functools.partial(_pack_set_nx, batch, keys, expiry)
    written = 0
    in_flight: collections.deque = collections.deque()
    stop = n  # rows from here on are left to the script

    def collect(lo: int, hi: int) -> bool:
        """Read the replies of rows lo:hi; False when most of their keys existed."""
        nonlocal written
        ok, nil, moved = replies.read(hi - lo)
        written += int(ok.sum())
        todo[lo:hi] = nil
        redirected[lo:hi] = moved
        return int(nil.sum()) * 2 <= hi - lo

    # A small first slice (the probe) decides whether SET NX pays; its replies are awaited before
    # anything else is sent. After it, a helper thread encodes slice k+1 (Arrow and numpy, mostly
    # without the GIL) while this one sends slice k and reads the replies of slice k-1, so Redis
    # always has commands queued.
    bounds = set_nx_slices(n)
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
    return written, todo, redirected


# How a call of the upsert script is framed: (rows in the call, arguments per row) -> the bytes before
# the call's keys and the bytes between its keys and its rows.
Framer = Callable[[int, int], tuple[bytes, bytes]]


def single_node_framer(sha: bytes, with_ttl: bool) -> Framer:
    """``EVALSHA sha <n> key... flag row [pxat]...`` (``redis_scripts.UPSERT_LUA``)."""
    flag = b"$1\r\n1\r\n" if with_ttl else b"$1\r\n0\r\n"

    def frame(count: int, per_row: int) -> tuple[bytes, bytes]:
        head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%d\r\n%d\r\n" % (
            3 + count + 1 + count * per_row, sha, len(b"%d" % count), count)
        return head, flag
    return frame


def cluster_framer(script: bytes, with_ttl: bool) -> Framer:
    """``EVAL script 0 flag <n> key... row [pxat]...`` (``redis_scripts.CLUSTER_UPSERT_LUA``)."""
    start = b"$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n0\r\n%s" % (
        len(script), script, b"$1\r\n1\r\n" if with_ttl else b"$1\r\n0\r\n")

    def frame(count: int, per_row: int) -> tuple[bytes, bytes]:
        size = b"%d" % count
        head = b"*%d\r\n" % (5 + count + count * per_row) + start + b"$%d\r\n%s\r\n" % (len(size), size)
        return head, b""
    return frame


def upsert_calls(conn, exc, frame: Framer, batch: codec.WriteBatch, keys: pa.Array,
                 expiry: pa.Array | None, per_call: int, *,
                 cluster: bool = False) -> tuple[int, np.ndarray]:
    """Run the upsert script over all rows, ``per_call`` rows a call, pipelined. Returns (rows written,
    mask of the rows redirected on a cluster: their call wrote nothing)."""
    # Commands are packed here, column-wise, instead of by redis-py per argument: each argument
    # becomes "$<len>\r\n<bytes>\r\n" through Arrow, and a call's keys (then its arguments) are one
    # contiguous slice of the packed column's data buffer. Rows are encoded one slice
    # (CALLS_PER_PIPELINE calls) at a time; before sending slice k+1 the replies of slice k-1 are
    # read, so Redis always has a slice to run while the next one is encoded, and never more than two
    # slices queued (a reply is awaited for at most two slices of Redis work).
    per_row_args = 1 if expiry is None else 2
    n = len(keys)
    slice_rows = per_call * CALLS_PER_PIPELINE
    written = 0
    redirected = np.zeros(n, dtype=bool)
    in_flight: collections.deque = collections.deque()  # per slice sent: the row range of each call

    def read_replies(calls: list[tuple[int, int]]) -> None:
        nonlocal written
        for lo, hi in calls:
            try:
                reply = conn.read_response()
            except exc.ResponseError as error:
                reply = error
            if isinstance(reply, Exception):
                if not (cluster and is_redirect(reply, exc)):
                    raise reply
                redirected[lo:hi] = True
            else:
                written += int(reply)

    for lo in range(0, n, slice_rows):
        hi = min(n, lo + slice_rows)
        packed_keys = resp_bulk(keys.slice(lo, hi - lo))
        packed_args = resp_bulk(batch.encoded_rows(lo, hi))
        if expiry is not None:
            packed_args = pc.binary_join_element_wise(packed_args, resp_bulk(expiry.slice(lo, hi - lo)), EMPTY)
        key_view, key_off = data_and_offsets(packed_keys)
        arg_view, arg_off = data_and_offsets(packed_args)
        parts: list = []
        calls = []
        for start in range(0, hi - lo, per_call):
            stop = min(hi - lo, start + per_call)
            head, between = frame(stop - start, per_row_args)
            parts += [head, key_view[key_off[start]:key_off[stop]], between, arg_view[arg_off[start]:arg_off[stop]]]
            calls.append((lo + start, lo + stop))
        if len(in_flight) > 1:
            read_replies(in_flight.popleft())
        conn.send_packed_command(parts)
        in_flight.append(calls)
    while in_flight:
        read_replies(in_flight.popleft())
    return written, redirected
