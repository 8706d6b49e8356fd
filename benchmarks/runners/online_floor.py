"""The floor for online lookups (project venv): a hand-written redis-py loop that reads the same keys our
server reads, one ``MGET`` per request and no HTTP, no decoding. Sequential, one connection.

``--entities 1`` reads the hourly view's key of one random driver (the 1 x 10 request); ``--entities
100 --views driver_hourly_stats,driver_daily_stats`` reads 200 keys (the 100 x 15 request). Bounded by
``--duration`` seconds and ``--max-requests``; the first ``--warmup`` seconds are not counted.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for the key codec

from online_common import FIRST_DRIVER, LAST_DRIVER  # noqa: E402


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> int:
    import redis

    from connectors.online_codec import encode_key

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--project", required=True)
    ap.add_argument("--views", default="driver_hourly_stats")
    ap.add_argument("--entities", type=int, default=1)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--max-requests", type=int, default=2_000_000)
    args = ap.parse_args()

    views = args.views.split(",")
    prefixes = [f"{args.prefix}:{args.project}:{v}:".encode() for v in views]
    keys_of = {d: [p + encode_key((d,)) for p in prefixes] for d in range(FIRST_DRIVER, LAST_DRIVER + 1)}
    client = redis.Redis.from_url(args.redis_url)
    rng = random.Random(7)
    lat: list[float] = []
    missing = 0
    t_start = time.perf_counter()
    t_measure = t_start + args.warmup
    t_end = t_measure + args.duration
    n = 0
    while n < args.max_requests:
        keys = [k for _ in range(args.entities) for k in keys_of[rng.randint(FIRST_DRIVER, LAST_DRIVER)]]
        t0 = time.perf_counter()
        values = client.mget(keys)
        t1 = time.perf_counter()
        if t0 >= t_measure:
            lat.append(t1 - t0)
            missing += values.count(None)
        n += 1
        if t1 >= t_end:
            break
    elapsed = time.perf_counter() - t_measure
    lat.sort()
    print(json.dumps({"requests": len(lat), "seconds": elapsed, "rps": len(lat) / elapsed,
                      "p50_ms": percentile(lat, 0.50) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3,
                      "keys_per_request": len(keys), "missing_values": missing}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
