"""What a run's statistics cost materialization, side by side: the same materialization with
``quality: {statistics: true}`` (the default) and ``{statistics: false}``, on the same rows.

Each materialization runs in its own child process (imports, the store and the registry are set up
before the clock starts) into an empty offline store; the two settings alternate round by round, so
drift in the machine's load hits both alike. Reported per setting: wall seconds (median and fastest
of ``--repeat``) and CPU seconds of the process (all threads; median), and the ratios on / off; the
target is a median wall ratio of at most 1.10. On a machine other work keeps busy, the wall times
scatter (and the statistics' thread finds no idle core to run on): the CPU ratio says what they cost.

    .venv/bin/python benchmarks/bench_materialize_stats.py                  # 1M rows over 30 days, offline only
    .venv/bin/python benchmarks/bench_materialize_stats.py --rows 3000000 --repeat 5
    .venv/bin/python benchmarks/bench_materialize_stats.py --online sqlite  # the online store too

The view has 10 features: 4 float64 (one with nulls and NaN), 2 int64, a float32, 2 strings (50 and
~100,000 distinct values) and a bool, for 100,000 users. Offline only is the default because it is
the smallest denominator: whatever an online store adds makes the ratio smaller.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
TARGET = 1.10

FEATURES = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource
from featurestore.types import Bool, Float32, Float64, Int64, String
user = Entity(name="user", join_keys=["user_id"])
txns = FeatureView(name="txns", entities=[user], ttl=timedelta(days=90),
    source=FileSource(name="txns_src", path="{path}", timestamp_field="ts"),
    schema=[Field(name=n, dtype=Float64) for n in ("amount", "fee", "score", "balance")]
           + [Field(name="items", dtype=Int64), Field(name="age_days", dtype=Int64),
              Field(name="rate", dtype=Float32), Field(name="country", dtype=String),
              Field(name="merchant", dtype=String), Field(name="card", dtype=Bool)])
"""


def write_source(path: Path, rows: int, days: int, seed: int = 7) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    start = int(T0.timestamp() * 1_000_000)
    amount = rng.lognormal(3, 1, rows)
    amount[rng.random(rows) < 0.02] = np.nan
    table = pa.table({
        "user_id": pa.array(rng.integers(0, 100_000, rows), pa.int64()),
        "ts": pa.array(np.sort(start + rng.integers(0, days * 86_400_000_000, rows)), pa.timestamp("us", tz="UTC")),
        "amount": pa.array(amount, pa.float64(), mask=rng.random(rows) < 0.03),
        "fee": pa.array(rng.random(rows) * 3, pa.float64()),
        "score": pa.array(rng.normal(0, 1, rows), pa.float64()),
        "balance": pa.array(rng.normal(5000, 2000, rows), pa.float64()),
        "items": pa.array(rng.integers(1, 20, rows), pa.int64()),
        "age_days": pa.array(rng.integers(0, 4000, rows), pa.int64()),
        "rate": pa.array(rng.random(rows).astype(np.float32), pa.float32()),
        "country": pa.array(np.array([f"C{i}" for i in range(50)])[rng.integers(0, 50, rows)], pa.string()),
        "merchant": pa.array(np.char.add("m", rng.integers(0, 100_000, rows).astype(str)), pa.string()),
        "card": pa.array(rng.random(rows) < 0.6, pa.bool_()),
    })
    pq.write_table(table, path)


def make_repo(path: Path, source: Path, stats_on: bool, online: str) -> None:
    path.mkdir(parents=True)
    online_cfg = {"none": "{type: sqlite, path: data/online.db}", "sqlite": "{type: sqlite, path: data/online.db}"}[online]
    (path / "featurestore.yaml").write_text(textwrap.dedent(f"""\
        project: bench
        registry: sqlite:///data/registry.db
        offline_store: {{type: parquet, path: data/offline}}
        online_store: {online_cfg}
        quality: {{statistics: {str(stats_on).lower()}}}
        """))
    (path / "features.py").write_text(FEATURES.format(path=source))
    from featurestore import FeatureStore

    with FeatureStore(path) as store:
        store.apply()


def child(repo: Path, days: int, online: bool) -> dict:
    """One materialization of the whole range, timed (run in a child process)."""
    from featurestore import FeatureStore

    for leftover in ("data/offline", "data/online.db"):
        target = repo / leftover
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    with FeatureStore(repo) as store:
        store.catalog()
        cpu, started = _cpu(), time.perf_counter()
        result = store.materialize(T0, T0 + timedelta(days=days + 1), online=online)
        seconds, cpu = time.perf_counter() - started, _cpu() - cpu
        (run,) = store.quality_runs("txns")
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": result.rows, "stats": run.stats is not None}


def _cpu() -> float:
    """CPU seconds of this process, all threads (the statistics run on a helper thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--online", choices=["none", "sqlite"], default="none",
                        help="also write the online store (SQLite)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.days, args.online != "none")))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        work = Path(tmp)
        source = work / "txns.parquet"
        write_source(source, args.rows, args.days)
        settings = {"statistics off": False, "statistics on": True}
        repos = {name: work / name.replace(" ", "_") for name in settings}
        for name, on in settings.items():
            make_repo(repos[name], source, on, args.online)
        samples: dict[str, list[float]] = {name: [] for name in settings}
        cpu: dict[str, list[float]] = {name: [] for name in settings}
        for round_ in range(args.repeat):
            order = list(settings) if round_ % 2 == 0 else list(reversed(settings))
            for name in order:
                out = subprocess.run([sys.executable, __file__, "--child", str(repos[name]), "--days", str(args.days),
                                      "--online", args.online], capture_output=True, text=True, check=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                assert result["rows"] == args.rows and result["stats"] == settings[name], result
                samples[name].append(result["seconds"])
                cpu[name].append(result["cpu_seconds"])
    medians = {name: statistics.median(v) for name, v in samples.items()}
    cpu_medians = {name: statistics.median(v) for name, v in cpu.items()}
    print(f"{args.rows:,} rows over {args.days} days, 10 features, online: {args.online}; "
          f"median of {args.repeat} (each run in its own process)")
    fastest = {name: min(v) for name, v in samples.items()}
    print(f"{'':16} {'wall s':>8} {'fastest':>8} {'CPU s':>8}   wall seconds of each run")
    for name, seconds in medians.items():
        print(f"{name:16} {seconds:8.2f} {fastest[name]:8.2f} {cpu_medians[name]:8.2f}   "
              f"{', '.join(f'{s:.2f}' for s in samples[name])}")
    ratio = medians["statistics on"] / medians["statistics off"]
    print(f"on / off         {ratio:7.3f}x {fastest['statistics on'] / fastest['statistics off']:7.3f}x "
          f"{cpu_medians['statistics on'] / cpu_medians['statistics off']:7.3f}x   "
          f"(target: median wall <= {TARGET:.2f}x: {'met' if ratio <= TARGET else 'NOT met'})")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
