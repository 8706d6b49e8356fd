"""Benchmark of the feature server over HTTP on this machine (not part of the product API).

    .venv/bin/python benchmarks/bench_serving.py --redis-url redis://127.0.0.1:56379/0 [--workers 1] [--duration 10]

Builds a scratch repo like the benchmark workload (10,000 drivers; ``driver_hourly_stats`` with 10
features, ``driver_daily_stats`` with 5), materializes it into Redis under a unique key prefix, starts
``featurestore serve`` and measures:

- sequential latency of 1 entity x 10 features (one kept-alive connection, ``http.client``);
- throughput at concurrency 8 of 1 x 10 and 100 entities x 15 features with ``wrk`` (``apt-get install
  wrk``), random driver ids per request.

The Redis keys are deleted afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

FEATURES_PY = '''
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource
from featurestore.types import Float32, Float64, Int64

driver = Entity(name="driver", join_keys=["driver_id"])
hourly = FileSource(name="hourly", path="data/hourly.parquet", timestamp_field="event_timestamp")
daily = FileSource(name="daily", path="data/daily.parquet", timestamp_field="event_timestamp")
driver_hourly_stats = FeatureView(name="driver_hourly_stats", entities=[driver], ttl=timedelta(days=2),
    schema=[Field(name=f"h{i}", dtype=t) for i, t in enumerate([Float32] * 3 + [Int64] * 3 + [Float64] * 4)],
    source=hourly)
driver_daily_stats = FeatureView(name="driver_daily_stats", entities=[driver], ttl=timedelta(days=3),
    schema=[Field(name=f"d{i}", dtype=Float64) for i in range(5)], source=daily)
'''

HOURLY = [f"driver_hourly_stats:h{i}" for i in range(10)]
DAILY = [f"driver_daily_stats:d{i}" for i in range(5)]

WRK_LUA = """
local n_entities = %(n)d
local features = '%(features)s'
math.randomseed(%(seed)d)
request = function()
  local ids = {}
  for i = 1, n_entities do ids[i] = tostring(math.random(1001, %(hi)d)) end
  local body = '{"features":' .. features .. ',"entities":{"driver_id":[' .. table.concat(ids, ",") .. ']}}'
  return wrk.format("POST", "/get-online-features", {["Content-Type"] = "application/json"}, body)
end
"""


def build_repo(path: Path, redis_url: str, prefix: str, drivers: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    (path / "data").mkdir(parents=True)
    (path / "featurestore.yaml").write_text(
        "project: bench\nregistry: sqlite:///data/registry.db\noffline_store: {type: parquet, path: data/offline}\n"
        f"online_store: {{type: redis, url: '{redis_url}', key_prefix: {prefix}}}\n")
    (path / "features.py").write_text(FEATURES_PY)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ids = np.arange(1001, 1001 + drivers, dtype=np.int64)
    ts = pa.array([now - timedelta(minutes=int(m)) for m in rng.integers(1, 600, drivers)],
                  pa.timestamp("us", tz="UTC"))
    hourly = {"driver_id": ids, "event_timestamp": ts}
    for i, t in enumerate(["f4"] * 3 + ["i8"] * 3 + ["f8"] * 4):
        hourly[f"h{i}"] = rng.random(drivers).astype(t) if t != "i8" else rng.integers(0, 1000, drivers)
    pq.write_table(pa.table(hourly), path / "data" / "hourly.parquet")
    daily = {"driver_id": ids, "event_timestamp": ts, **{f"d{i}": rng.random(drivers) for i in range(5)}}
    pq.write_table(pa.table(daily), path / "data" / "daily.parquet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become healthy")


def sequential(port: int, n: int, entities: int, features: list[str]) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    times = []
    for _ in range(n):
        body = json.dumps({"features": features,
                           "entities": {"driver_id": [random.randint(1001, 11000) for _e in range(entities)]}})
        t = time.perf_counter()
        conn.request("POST", "/get-online-features", body, headers)
        resp = conn.getresponse()
        resp.read()
        times.append(time.perf_counter() - t)
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
    times = sorted(times[n // 10:])  # the first 10% warm up
    q = statistics.quantiles(times, n=100)
    return {"requests": len(times), "p50_ms": round(q[49] * 1e3, 3), "p99_ms": round(q[98] * 1e3, 3),
            "mean_ms": round(statistics.fmean(times) * 1e3, 3)}


def run_wrk(port: int, entities: int, features: list[str], duration: int, drivers: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA % {"n": entities, "features": json.dumps(features), "seed": 7, "hi": 1000 + drivers})
    try:
        out = subprocess.run(["wrk", "-t2", "-c8", f"-d{duration}s", "--latency", "-s", f.name,
                              f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {"requests_per_s": rps, "p99_ms": round(float(p99.group(1)) * scale[p99.group(2)], 3) if p99 else None,
            "non_2xx": int(bad.group(1)) if bad else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis-url", default=os.environ.get("FS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--requests", type=int, default=5000, help="sequential requests")
    ap.add_argument("--drivers", type=int, default=10_000)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")

    from featurestore import FeatureStore

    root = Path(tempfile.mkdtemp(prefix="fs-serve-bench-"))
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    repo = root / "repo"
    build_repo(repo, args.redis_url, prefix, args.drivers)
    store = FeatureStore(repo)
    store.apply()
    now = datetime.now(timezone.utc)
    store.materialize(now - timedelta(days=1), now + timedelta(minutes=1), progress=False)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "featurestore.cli", "--repo", str(repo), "serve", "--port",
                               str(port), "--workers", str(args.workers), "--log-level", "warning"],
                              start_new_session=True)
    results: dict = {"workers": args.workers, "cpus": os.cpu_count()}
    try:
        wait_healthy(port)
        results["sequential_1x10"] = sequential(port, args.requests, 1, HOURLY)
        results["wrk_c8_1x10"] = run_wrk(port, 1, HOURLY, args.duration, args.drivers)
        results["wrk_c8_100x15"] = run_wrk(port, 100, HOURLY + DAILY, args.duration, args.drivers)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        for view in ("driver_hourly_stats", "driver_daily_stats"):
            store.online_store.delete_view(view)
        store.close()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
