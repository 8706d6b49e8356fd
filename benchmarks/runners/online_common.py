"""Shared pieces of the online benchmark's runners (stdlib, numpy and pyarrow only, so both the project's
venv and Feast's import it).

The data is the export benchmark's (``generate.py``), with two changes the online path needs:

- the serving tables (``driver_hourly``, ``driver_daily``) are shifted in time so that each driver's
  latest row is recent: both systems check the views' TTLs (2 and 3 days) against the wall clock, and
  our Redis keys expire at ``event time + TTL``, so rows from 2025 would be expired or never stored;
- the materialization table has one row per entity (``distinct_table``): n distinct drivers x the
  hourly view's 10 features, event times spread over the last 30 hours.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1]
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import generate as spec  # noqa: E402

UTC = timezone.utc
HOURLY_VIEW = "driver_hourly_stats"
DAILY_VIEW = "driver_daily_stats"
VIEW_FEATURES = {HOURLY_VIEW: spec.HOURLY_FEATURES, DAILY_VIEW: spec.DAILY_FEATURES}
VIEW_TTL_DAYS = {HOURLY_VIEW: spec.HOURLY_TTL_DAYS, DAILY_VIEW: spec.DAILY_TTL_DAYS}
FIRST_DRIVER = spec.FIRST_DRIVER
LAST_DRIVER = spec.FIRST_DRIVER + spec.N_DRIVERS - 1
DISTINCT_FIRST_ID = 1


def refs(views: list[str]) -> list[str]:
    return [f"{v}:{n}" for v in views for n, _ in VIEW_FEATURES[v]]


def features_1x10() -> list[str]:
    return refs([HOURLY_VIEW])


def features_100x15() -> list[str]:
    return refs([HOURLY_VIEW, DAILY_VIEW])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _shift(table, delta_us: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in ("event_timestamp", "created"):
        i = table.column_names.index(name)
        us = pc.add(table.column(name).cast(pa.int64()), delta_us)
        table = table.set_column(i, name, us.cast(spec.TS_TYPE))
    return table


def serving_tables(out: Path, now: datetime) -> dict[str, Path]:
    """The export benchmark's hourly and daily tables, shifted so the last hourly row of every driver
    falls in the hour before ``now`` (the last daily row ~4 h before ``now``). Returns view -> path."""
    import pyarrow.parquet as pq

    files = spec.generate()
    hour = now.replace(minute=0, second=0, microsecond=0)
    delta_us = int((hour - (spec.BASE + timedelta(hours=spec.HOURS))).total_seconds()) * 1_000_000
    out.mkdir(parents=True, exist_ok=True)
    paths = {HOURLY_VIEW: out / "serve_hourly.parquet", DAILY_VIEW: out / "serve_daily.parquet"}
    pq.write_table(_shift(pq.read_table(files["hourly"]), delta_us), paths[HOURLY_VIEW],
                   row_group_size=131_072)
    pq.write_table(_shift(pq.read_table(files["daily"]), delta_us), paths[DAILY_VIEW])
    return paths


def distinct_table(path: Path, n: int, now: datetime, seed: int = 20250102) -> Path:
    """``n`` distinct drivers (ids 1..n), one row each, the hourly view's 10 features, event times over
    the 30 hours before ``now`` (whole seconds), ``created`` a few seconds later."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    now_us = int(now.timestamp()) * 1_000_000
    event = now_us - rng.integers(60, 30 * 3600, n, dtype=np.int64) * 1_000_000
    cols = {
        "driver_id": pa.array(np.arange(DISTINCT_FIRST_ID, DISTINCT_FIRST_ID + n, dtype=np.int64)),
        "event_timestamp": pa.array(event, type=pa.int64()).cast(spec.TS_TYPE),
        "created": pa.array(event + rng.integers(1, 30, n) * 1_000_000, type=pa.int64()).cast(spec.TS_TYPE),
    }
    for name, typ in spec.HOURLY_FEATURES:
        cols[name] = spec._feature_values(rng, typ, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path, row_group_size=131_072)
    return path


def parse_views(items: list[str]) -> dict[str, Path]:
    """``--view NAME=PATH`` arguments."""
    out = {}
    for item in items:
        name, _, path = item.partition("=")
        if name not in VIEW_FEATURES or not path:
            raise SystemExit(f"--view wants NAME=PATH with NAME in {sorted(VIEW_FEATURES)}, got {item!r}")
        out[name] = Path(path).resolve()
    return out


def add_common_args(ap) -> None:
    ap.add_argument("--repo", type=Path, required=True, help="scratch folder for the feature repo (rewritten)")
    ap.add_argument("--view", action="append", default=[], help="NAME=PARQUET, once per view")
    ap.add_argument("--project", default="bench")
    ap.add_argument("--start", required=True, help="materialize from (ISO time)")
    ap.add_argument("--end", required=True, help="materialize up to (ISO time)")
    ap.add_argument("--metrics", type=Path, required=True)


def timed(label: str, fn, metrics: dict) -> object:
    t0 = time.perf_counter()
    out = fn()
    metrics[label] = time.perf_counter() - t0
    return out


def iso(value: str) -> datetime:
    d = datetime.fromisoformat(value)
    return d if d.tzinfo else d.replace(tzinfo=UTC)
