"""Online write throughput into Redis: ``RedisOnlineStore.write`` vs a hand-written pipelined SET loop.

    .venv/bin/python benchmarks/bench_online_write.py --url redis://127.0.0.1:56379/0
    .venv/bin/python benchmarks/bench_online_write.py --rows 1000000 --chunk 100000 --repeat 3 --ttl 86400

Workload: ``--rows`` distinct entities (int64 ids) x ``--features`` float64 features plus an event
timestamp, written in chunks of ``--chunk`` rows (the way materialization hands them over). The data is
generated before the clock starts; each timed run writes into an empty key space.

- ``floor``: redis-py, ``pipeline(transaction=False)``, one ``SET key value`` per row, executed every
  10,000 rows; the value is the row's features and timestamp packed with ``struct`` (the least work
  that still gets every value into Redis, with no monotonic check and no TTL).
- ``ours``: ``RedisOnlineStore.write`` (column-wise encoding, the atomic compare-and-set script, the
  view's TTL as key expiry when ``--ttl`` is given).

Afterwards ``read`` of 100 random entities x 15 features (mixed types) is timed too (p50/p99 over
``--reads`` calls), since that is what the feature server does per request. Keys are removed at the end.
The Redis URL defaults to ``$FS_BENCH_REDIS_URL``, then ``$FS_TEST_REDIS_URL``, then redis://127.0.0.1:6379/0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.online_redis import RedisOnlineStore, RedisOnlineStoreConfig  # noqa: E402

EV = "event_timestamp"
BASE_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z


def make_chunks(rows: int, chunk: int, features: int, seed: int = 7) -> list[pa.Table]:
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        cols: dict[str, pa.Array] = {"entity_id": pa.array(np.arange(start, start + n, dtype=np.int64))}
        for j in range(features):
            cols[f"f{j}"] = pa.array(rng.random(n))
        ev = BASE_US + rng.integers(0, 86_400_000_000, n)
        cols[EV] = pa.array(ev, pa.timestamp("us", tz="UTC"))
        out.append(pa.table(cols))
    return out


def cleanup(client, prefix: str) -> None:
    batch = []
    for key in client.scan_iter(match=f"{prefix}:*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def run_floor(client, chunks: list[pa.Table], features: int, prefix: str) -> float:
    pack = struct.Struct(f"<q{features}d").pack
    started = time.perf_counter()
    for tbl in chunks:
        ids = tbl.column("entity_id").to_pylist()
        ev = tbl.column(EV).cast(pa.int64()).to_pylist()
        cols = [tbl.column(f"f{j}").to_pylist() for j in range(features)]
        pipe = client.pipeline(transaction=False)
        for i, (eid, ts, *values) in enumerate(zip(ids, ev, *cols)):
            pipe.set(f"{prefix}:{eid}", pack(ts, *values))
            if i % 10_000 == 9_999:
                pipe.execute()
        pipe.execute()
    return time.perf_counter() - started


def run_ours(url: str, chunks: list[pa.Table], prefix: str, ttl: timedelta | None) -> tuple[float, int]:
    store = RedisOnlineStore(RedisOnlineStoreConfig(url=url, key_prefix=prefix, socket_timeout=5.0),
                             ROOT, "bench")
    written = 0
    started = time.perf_counter()
    for tbl in chunks:
        written += store.write("stats", ["entity_id"], tbl, event_ts_column=EV, ttl=ttl).written
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed, written


def bench_reads(url: str, prefix: str, reads: int) -> tuple[float, float]:
    """p50/p99 of read() for 100 entities x 15 features of mixed types, in milliseconds."""
    rng = np.random.default_rng(3)
    n = 10_000
    cols: dict[str, pa.Array] = {"entity_id": pa.array(np.arange(n, dtype=np.int64))}
    kinds = [pa.float64(), pa.int64(), pa.float32(), pa.string(), pa.bool_()]
    for j in range(15):
        kind = kinds[j % len(kinds)]
        if kind == pa.string():
            cols[f"r{j}"] = pa.array([f"category_{i % 97}" for i in range(n)])
        elif kind == pa.bool_():
            cols[f"r{j}"] = pa.array(rng.random(n) > 0.5)
        elif kind == pa.int64():
            cols[f"r{j}"] = pa.array(rng.integers(0, 10**9, n))
        else:
            cols[f"r{j}"] = pa.array(rng.random(n)).cast(kind)
    cols[EV] = pa.array(np.full(n, BASE_US), pa.timestamp("us", tz="UTC"))
    tbl = pa.table(cols)
    types = {name: tbl.schema.field(name).type for name in tbl.column_names if name.startswith("r")}
    store = RedisOnlineStore(RedisOnlineStoreConfig(url=url, key_prefix=prefix), ROOT, "bench")
    store.write("read15", ["entity_id"], tbl, event_ts_column=EV)
    features = list(types)
    times = []
    for i in range(reads + 50):
        keys = [(int(k),) for k in rng.integers(0, n, 100)]
        started = time.perf_counter()
        result = store.read("read15", ["entity_id"], keys, features, types)
        if i >= 50:  # warm-up
            times.append(time.perf_counter() - started)
        assert all(v is not None for v in result.values["r0"])
    store.close()
    times.sort()
    return statistics.median(times) * 1e3, times[int(len(times) * 0.99) - 1] * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("FS_BENCH_REDIS_URL")
                        or os.environ.get("FS_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--ttl", type=float, default=None, help="view TTL in seconds for ours (default: none)")
    parser.add_argument("--reads", type=int, default=1000)
    args = parser.parse_args(argv)

    import redis

    client = redis.Redis.from_url(args.url, socket_timeout=30)
    client.ping()
    print(f"redis {client.info('server')['redis_version']} at {args.url}; redis-py {redis.__version__}, "
          f"pyarrow {pa.__version__}")
    print(f"workload: {args.rows:,} distinct entities x {args.features} float64 features, "
          f"chunks of {args.chunk:,}" + (f", ttl {args.ttl:g}s" if args.ttl else ""))
    chunks = make_chunks(args.rows, args.chunk, args.features)
    ttl = timedelta(seconds=args.ttl) if args.ttl else None
    # Event times span one day of 2025; with a TTL they must stay alive while the runs last, so
    # shift them to end an hour from now (and use a TTL of a day or more).
    if ttl is not None:
        shift = int(time.time() * 1e6) - BASE_US - 86_400_000_000 + 3_600_000_000
        chunks = [t.set_column(t.schema.get_field_index(EV), EV,
                               pa.array(t.column(EV).cast(pa.int64()).to_numpy() + shift,
                                        pa.timestamp("us", tz="UTC"))) for t in chunks]
    results: dict[str, list[float]] = {"floor": [], "ours": []}
    for round_ in range(args.repeat):
        for system in ("floor", "ours"):  # alternate so drift in machine load hits both alike
            prefix = f"fsbench{uuid.uuid4().hex[:8]}"
            try:
                if system == "floor":
                    elapsed = run_floor(client, chunks, args.features, prefix)
                else:
                    elapsed, written = run_ours(args.url, chunks, prefix, ttl)
                    assert written == args.rows, f"ours wrote {written} of {args.rows} rows"
                rate = args.rows / elapsed
                results[system].append(rate)
                print(f"  round {round_ + 1} {system:5s}: {elapsed:7.2f} s  {rate:>11,.0f} rows/s")
            finally:
                cleanup(client, prefix)
    floor = statistics.median(results["floor"])
    ours = statistics.median(results["ours"])
    print(f"floor (pipelined SET loop): {floor:>11,.0f} rows/s")
    print(f"ours (RedisOnlineStore.write): {ours:>11,.0f} rows/s  = {ours / floor:.2f}x the floor, "
          f"{ours / 4_900:.0f}x Feast's ~4,900 rows/s (issue 3 target: >= 40x)")
    if args.reads:
        prefix = f"fsbench{uuid.uuid4().hex[:8]}"
        try:
            p50, p99 = bench_reads(args.url, prefix, args.reads)
        finally:
            cleanup(client, prefix)
        print(f"read 100 entities x 15 features: p50 {p50:.3f} ms, p99 {p99:.3f} ms (store call incl. MGET)")
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
