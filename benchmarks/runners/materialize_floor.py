"""The floor for materializing into Redis (project venv): what Redis itself costs to store the same rows
as per-key expiring strings, with nothing else in the way.

The rows of ``--parquet`` are encoded with our row codec and packed as ``SET key row PXAT t`` commands
*before* the clock starts (no Parquet read, no offline write, no encoding, no monotonic check); the
timed part only sends them over one raw socket, 25,000 commands per write, and reads the replies
(one batch behind). Prints one JSON line: rows, seconds, rows/s and the CPU redis-server used.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for the row codec

SLICE = 25_000


def redis_cpu(sock: socket.socket) -> float:
    """used_cpu_user + used_cpu_sys of the server (``INFO cpu``, a bulk string reply)."""
    sock.sendall(b"*2\r\n$4\r\nINFO\r\n$3\r\ncpu\r\n")
    data = b""
    while b"\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n")
    size = int(head[1:])
    while len(body) < size + 2:
        body += sock.recv(65536)
    fields = dict(line.split(":", 1) for line in body[:size].decode().splitlines() if ":" in line)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


def main() -> int:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from connectors.online_codec import WriteBatch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--parquet", required=True)
    ap.add_argument("--prefix", default="floor:mat:driver_hourly_stats:")
    ap.add_argument("--ttl-days", type=float, default=2.0)
    args = ap.parse_args()

    table = pq.read_table(args.parquet)
    batch = WriteBatch(table, ["driver_id"], "event_timestamp", "created")
    rows = batch.encoded_rows()
    keys = pc.binary_join_element_wise(pa.scalar(args.prefix.encode(), pa.large_binary()), batch.keys,
                                       pa.scalar(b"", pa.large_binary()))
    expire_ms = (batch.event_us // 1000 + int(args.ttl_days * 86_400_000)).tolist()
    packets = []
    for lo in range(0, len(rows), SLICE):
        parts = []
        for key, row, at in zip(keys.slice(lo, SLICE).to_pylist(), rows.slice(lo, SLICE).to_pylist(),
                                expire_ms[lo:lo + SLICE]):
            stamp = b"%d" % at
            parts.append(b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$4\r\nPXAT\r\n$%d\r\n%s\r\n"
                         % (len(key), key, len(row), row, len(stamp), stamp))
        packets.append((b"".join(parts), len(parts)))
    del parts, rows, keys, table, batch

    url = urlparse(args.redis_url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    db = int((url.path or "/0").lstrip("/") or 0)
    sock.sendall(b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%d\r\n" % (len(str(db)), db))
    assert sock.recv(16) == b"+OK\r\n"
    cpu0 = redis_cpu(sock)
    pending: list[int] = []
    buf = bytearray()

    def drain(count: int) -> None:
        nonlocal buf
        while buf.count(b"\n") < count:
            buf += sock.recv(1 << 20)
        cut = 0
        for _ in range(count):
            cut = buf.index(b"\n", cut) + 1
        if buf[:cut].replace(b"+OK\r\n", b""):
            raise SystemExit(f"unexpected reply: {bytes(buf[:80])!r}")
        del buf[:cut]

    started = time.perf_counter()
    for data, count in packets:
        sock.sendall(data)
        pending.append(count)
        if len(pending) > 1:
            drain(pending.pop(0))
    while pending:
        drain(pending.pop(0))
    seconds = time.perf_counter() - started
    cpu = redis_cpu(sock) - cpu0
    n = sum(count for _, count in packets)
    print(json.dumps({"rows": n, "seconds": seconds, "rows_per_s": n / seconds, "redis_cpu_seconds": cpu,
                      "command_bytes_per_row": sum(len(d) for d, _ in packets) / n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
