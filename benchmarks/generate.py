"""Deterministic data for the point-in-time export benchmark.

Writes into ``benchmarks/.data/`` (or ``--out``):

- ``driver_hourly.parquet``: 10,000 drivers (``driver_id`` 1001..11000) x 100 hourly rows = 1,000,000
  rows, 10 features (float32, float64 and int64). ``event_timestamp`` and ``created`` are UTC-aware
  microsecond timestamps. A few hundred rows repeat their driver's previous event time with a different
  ``created``, so tie-breaking by created time decides the answer.
- ``driver_daily.parquet``: the same drivers x 5 days, 5 features, same timestamp columns.
- ``entities_100k.parquet`` / ``entities_1m.parquet``: ``driver_id``, ``event_timestamp`` in shuffled
  order, with ~5% unknown driver ids, ~5% times before any data, ~5% duplicated rows, and a small share
  of rows whose time hits a feature row's event time or the TTL boundary exactly.

Everything is seeded: the same command writes the same bytes.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / ".data"

N_DRIVERS = 10_000
FIRST_DRIVER = 1001
HOURS = 100
DAYS = 5
N_TIES = 300
SEED = 20250101
BASE = datetime(2025, 1, 1, tzinfo=timezone.utc)
US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR

# TTLs used by every system in the benchmark.
HOURLY_TTL_DAYS = 2
DAILY_TTL_DAYS = 3

# (name, arrow type) in column order.
HOURLY_FEATURES = [
    ("conv_rate", pa.float32()),
    ("acc_rate", pa.float32()),
    ("avg_daily_trips", pa.int64()),
    ("trip_count", pa.int64()),
    ("avg_speed", pa.float64()),
    ("rating", pa.float64()),
    ("cancel_rate", pa.float32()),
    ("idle_minutes", pa.int64()),
    ("earnings", pa.float64()),
    ("distance_km", pa.float64()),
]
DAILY_FEATURES = [
    ("daily_trips", pa.int64()),
    ("daily_earnings", pa.float64()),
    ("daily_rating", pa.float32()),
    ("daily_hours_online", pa.float64()),
    ("daily_cancellations", pa.int64()),
]
ENTITY_SIZES = {"100k": 100_000, "1m": 1_000_000}
TS_TYPE = pa.timestamp("us", tz="UTC")
FILES_VERSION = 2  # bump when the layout changes so stale data is regenerated


def _base_us() -> int:
    return int(BASE.timestamp()) * 1_000_000


def _feature_values(rng: np.random.Generator, typ: pa.DataType, n: int) -> pa.Array:
    if pa.types.is_integer(typ):
        return pa.array(rng.integers(0, 1000, n, dtype=np.int64))
    if typ == pa.float32():
        return pa.array(rng.random(n, dtype=np.float32))
    return pa.array(rng.random(n) * 100.0)


def hourly_table(rng: np.random.Generator) -> pa.Table:
    n = N_DRIVERS * HOURS
    driver_id = np.repeat(np.arange(FIRST_DRIVER, FIRST_DRIVER + N_DRIVERS, dtype=np.int64), HOURS)
    hour = np.tile(np.arange(HOURS, dtype=np.int64), N_DRIVERS)
    # each driver reports at its own minute and second past the hour
    offset = rng.integers(0, US_PER_HOUR // 1_000_000, N_DRIVERS, dtype=np.int64) * 1_000_000
    event = _base_us() + hour * US_PER_HOUR + np.repeat(offset, HOURS)
    # ties: a few hundred rows take the event time of their driver's previous row
    tie_pos = rng.choice(np.flatnonzero(hour > 0), N_TIES, replace=False)
    event[tie_pos] = event[tie_pos - 1]
    created = event + rng.integers(1_000_000, 600_000_000, n, dtype=np.int64)
    same = created[tie_pos] == created[tie_pos - 1]
    created[tie_pos[same]] += 1_000_000
    cols = {
        "driver_id": pa.array(driver_id),
        "event_timestamp": pa.array(event, type=pa.int64()).cast(TS_TYPE),
        "created": pa.array(created, type=pa.int64()).cast(TS_TYPE),
    }
    for name, typ in HOURLY_FEATURES:
        cols[name] = _feature_values(rng, typ, n)
    return pa.table(cols)


def daily_table(rng: np.random.Generator) -> pa.Table:
    n = N_DRIVERS * DAYS
    driver_id = np.repeat(np.arange(FIRST_DRIVER, FIRST_DRIVER + N_DRIVERS, dtype=np.int64), DAYS)
    day = np.tile(np.arange(DAYS, dtype=np.int64), N_DRIVERS)
    event = _base_us() + day * US_PER_DAY
    created = event + US_PER_HOUR + rng.integers(0, 60_000_000, n, dtype=np.int64)
    cols = {
        "driver_id": pa.array(driver_id),
        "event_timestamp": pa.array(event, type=pa.int64()).cast(TS_TYPE),
        "created": pa.array(created, type=pa.int64()).cast(TS_TYPE),
    }
    for name, typ in DAILY_FEATURES:
        cols[name] = _feature_values(rng, typ, n)
    return pa.table(cols)


def entity_table(rng: np.random.Generator, n: int, hourly_events: np.ndarray) -> pa.Table:
    """n rows: ~5% duplicates of other rows, ~5% unknown ids, ~5% times before any data, shuffled."""
    n_dup = n // 20
    n_base = n - n_dup
    driver_id = rng.integers(FIRST_DRIVER, FIRST_DRIVER + N_DRIVERS, n_base, dtype=np.int64)
    # times from the first hour to three days past the last one, so some rows fall out of each TTL
    span = HOURS * US_PER_HOUR + 72 * US_PER_HOUR
    ts = _base_us() + rng.integers(0, span, n_base, dtype=np.int64)
    kind = rng.random(n_base)
    unknown = kind < 0.05
    driver_id[unknown] = rng.integers(1, FIRST_DRIVER, unknown.sum(), dtype=np.int64)  # ids below 1001
    early = (kind >= 0.05) & (kind < 0.10)
    ts[early] = _base_us() - rng.integers(1, 30 * US_PER_DAY, early.sum(), dtype=np.int64)
    # exact hits on a feature row's event time, and on the hourly TTL's lower bound (both inclusive)
    exact = (kind >= 0.10) & (kind < 0.12)
    rows = rng.integers(0, len(hourly_events), exact.sum())
    driver_id[exact] = FIRST_DRIVER + rows // HOURS
    ts[exact] = hourly_events[rows]
    edge = (kind >= 0.12) & (kind < 0.13)
    # a driver's last hourly row, so the TTL bound (not a later row) decides
    rows = rng.integers(0, N_DRIVERS, edge.sum()) * HOURS + HOURS - 1
    driver_id[edge] = FIRST_DRIVER + rows // HOURS
    ts[edge] = hourly_events[rows] + HOURLY_TTL_DAYS * US_PER_DAY
    dup_src = rng.integers(0, n_base, n_dup)
    driver_id = np.concatenate([driver_id, driver_id[dup_src]])
    ts = np.concatenate([ts, ts[dup_src]])
    order = rng.permutation(n)
    return pa.table({
        "driver_id": pa.array(driver_id[order]),
        "event_timestamp": pa.array(ts[order], type=pa.int64()).cast(TS_TYPE),
    })


def paths(out: Path) -> dict[str, Path]:
    files = {"hourly": out / "driver_hourly.parquet", "daily": out / "driver_daily.parquet"}
    for label in ENTITY_SIZES:
        files[f"entities_{label}"] = out / f"entities_{label}.parquet"
    return files


def is_complete(out: Path = DEFAULT_DIR) -> bool:
    stamp = out / "generated.json"
    if not stamp.exists() or json.loads(stamp.read_text()).get("version") != FILES_VERSION:
        return False
    return all(p.exists() for p in paths(out).values())


def generate(out: Path = DEFAULT_DIR, force: bool = False) -> dict[str, Path]:
    files = paths(out)
    if not force and is_complete(out):
        return files
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    hourly = hourly_table(rng)
    pq.write_table(hourly, files["hourly"], row_group_size=131_072)
    pq.write_table(daily_table(rng), files["daily"])
    events = hourly.column("event_timestamp").cast(pa.int64()).to_numpy()
    for label, n in ENTITY_SIZES.items():
        ent = entity_table(np.random.default_rng([SEED, n]), n, events)
        pq.write_table(ent, files[f"entities_{label}"])
    (out / "generated.json").write_text(json.dumps({"version": FILES_VERSION, "seed": SEED}) + "\n")
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--force", action="store_true", help="regenerate even if the files exist")
    args = ap.parse_args()
    for name, path in generate(args.out, args.force).items():
        print(f"{name:14s} {pq.ParquetFile(path).metadata.num_rows:>9,d} rows  {path}")


if __name__ == "__main__":
    main()
