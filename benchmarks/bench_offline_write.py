"""Offline materialization writes, side by side: the Delta Lake offline store against a hand-written
floor (one plain Parquet file per day, written and read with pyarrow: no transaction log, no
replace), on the same rows in one run.

The store receives the rows one UTC day at a time (``write(view, rows, day, day + 1)``, as
materialization chunks them), then the whole range again (a rerun, which replaces), then a read of
everything. Reported: seconds per phase (median of ``--repeat``) and the ratio store / floor.

    .venv/bin/python benchmarks/bench_offline_write.py                  # 1M rows over 30 days
    .venv/bin/python benchmarks/bench_offline_write.py --rows 3000000 --days 90
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.dataset as pds  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from connectors.offline_delta import DeltaOfflineStore, DeltaOfflineStoreConfig  # noqa: E402

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def day_tables(rows: int, days: int, seed: int = 7) -> list[pa.Table]:
    rng = np.random.default_rng(seed)
    per_day = rows // days
    out = []
    for d in range(days):
        base = int((T0 + timedelta(days=d)).timestamp() * 1_000_000)
        out.append(pa.table({
            "driver_id": pa.array(rng.integers(0, 100_000, per_day), pa.int64()),
            "trips": pa.array(rng.random(per_day), pa.float64()),
            "rate": pa.array(rng.random(per_day).astype(np.float32), pa.float32()),
            "event_timestamp": pa.array(np.sort(base + rng.integers(0, 86_400_000_000, per_day)),
                                        pa.timestamp("us", tz="UTC")),
            "created_timestamp": pa.array(np.full(per_day, base), pa.timestamp("us", tz="UTC")),
        }))
    return out


class Floor:
    """Plain files: day ``d`` is ``<dir>/v/<d>.parquet``, overwritten on a rerun."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, view, table, start, end, ts_col):
        path = self.root / view / f"{start:%Y%m%d%H}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="zstd")

    def read(self, view):
        return pds.dataset(self.root / view, format="parquet").to_table()


def run(make_store, tables: list[pa.Table]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp))
        times = {}
        for phase in ("write", "rerun"):
            t = time.perf_counter()
            for d, table in enumerate(tables):
                store.write("v", table, T0 + timedelta(days=d), T0 + timedelta(days=d + 1), "event_timestamp")
            times[phase] = time.perf_counter() - t
        t = time.perf_counter()
        n = store.read("v").num_rows
        times["read"] = time.perf_counter() - t
        assert n == sum(t.num_rows for t in tables), n
        return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tables = day_tables(args.rows, args.days)
    stores = {
        "floor (plain files)": Floor,
        "delta": lambda p: DeltaOfflineStore(DeltaOfflineStoreConfig(path=str(p)), p, "b"),
    }
    results: dict[str, dict[str, float]] = {name: {} for name in stores}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in stores}
    for _ in range(args.repeat):
        for name, make in stores.items():  # interleaved, so drift hits both
            for phase, seconds in run(make, tables).items():
                samples[name].setdefault(phase, []).append(seconds)
    for name in stores:
        results[name] = {phase: statistics.median(v) for phase, v in samples[name].items()}
    print(f"{args.rows:,} rows over {args.days} days, one write per day; median of {args.repeat}")
    print(f"{'store':22} {'write s':>9} {'rerun s':>9} {'read s':>9}")
    for name, r in results.items():
        print(f"{name:22} {r['write']:9.2f} {r['rerun']:9.2f} {r['read']:9.2f}")
    floor, ours = results["floor (plain files)"], results["delta"]
    for phase in ("write", "rerun", "read"):
        print(f"delta / floor {phase:6} {ours[phase] / floor[phase]:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
