"""Seeded transaction events for the aggregation benchmark (``bench_aggregations.py``).

``events`` rows over ``users`` users (default 10M over 1M), written as a few Parquet files under
``benchmarks/.data/txns/e<events>-u<users>/``, time-ordered like an append-only log:

- ``user_id`` int64 in [1, users]; each event picks its user uniformly (about events/users per user,
  a few users have none);
- ``ts`` UTC microseconds, uniform over the 30 days [START, END] (END inclusive);
- ``created`` = ``ts`` + 0..5 s;
- ``amount`` float64, log-normal, rounded to cents;
- ``country`` string (12 codes, US about 40%); ``status`` string, about 80% "settled" (the rest
  "pending", "declined", "refunded").

Window edges are planted on purpose: 1,000 settled events each at exactly END (inside every window),
END - 1 h, END - 1 day and END - 7 days (each outside its own window, whose value at END covers
(END - w, END]). ``generated.json`` in the folder records the parameters; a folder with matching
parameters is reused (``--force`` rewrites it).

    .venv/bin/python benchmarks/generate_txns.py --events 1000000 --users 100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE / ".data" / "txns"
SEED = 20261127
START = datetime(2026, 10, 1, tzinfo=timezone.utc)
END = START + timedelta(days=30)
FILES = 4
ROW_GROUP = 256 * 1024
EDGE_EVENTS = 1_000
EDGES = (timedelta(0), timedelta(hours=1), timedelta(days=1), timedelta(days=7))
COUNTRIES = ["US", "GB", "FR", "DE", "ES", "IT", "NL", "BR", "IN", "JP", "CA", "MX"]
COUNTRY_P = [0.40, 0.08, 0.07, 0.07, 0.05, 0.05, 0.04, 0.06, 0.06, 0.04, 0.05, 0.03]
STATUSES = ["settled", "pending", "declined", "refunded"]
STATUS_P = [0.80, 0.12, 0.05, 0.03]
VERSION = 1


def folder_for(events: int, users: int, root: Path = DEFAULT_ROOT) -> Path:
    return root / f"e{events}-u{users}"


def _params(events: int, users: int) -> dict:
    return {"version": VERSION, "seed": SEED, "events": events, "users": users, "start": START.isoformat(),
            "end": END.isoformat(), "files": FILES, "edge_events": EDGE_EVENTS}


def generate(events: int = 10_000_000, users: int = 1_000_000, root: Path = DEFAULT_ROOT,
             force: bool = False) -> Path:
    """Write the data set (unless an identical one is there); return its folder."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = folder_for(events, users, root)
    meta = folder / "generated.json"
    params = _params(events, users)
    if not force and meta.exists():
        try:
            if {k: v for k, v in json.loads(meta.read_text()).items() if k in params} == params:
                return folder
        except ValueError:
            pass
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(SEED)
    span_us = int((END - START).total_seconds() * 1_000_000)
    start_us = int(START.timestamp() * 1_000_000)
    end_us = start_us + span_us

    n_edge = EDGE_EVENTS * len(EDGES)
    n_rand = events - n_edge
    if n_rand < 0:
        raise ValueError(f"need at least {n_edge} events")
    user = rng.integers(1, users + 1, events, dtype=np.int64)
    ts = np.empty(events, dtype=np.int64)
    ts[:n_rand] = start_us + rng.integers(0, span_us + 1, n_rand, dtype=np.int64)
    for i, edge in enumerate(EDGES):
        ts[n_rand + i * EDGE_EVENTS: n_rand + (i + 1) * EDGE_EVENTS] = end_us - int(edge.total_seconds() * 1e6)
    status = rng.choice(len(STATUSES), events, p=STATUS_P).astype(np.int8)
    status[n_rand:] = 0  # planted edge events are settled, so they matter
    country = rng.choice(len(COUNTRIES), events, p=COUNTRY_P).astype(np.int8)
    amount = np.round(rng.lognormal(mean=3.0, sigma=1.0, size=events), 2)
    created = ts + rng.integers(0, 5_000_001, events, dtype=np.int64)

    order = np.argsort(ts, kind="stable")  # an append-only log: time order
    tz = pa.timestamp("us", tz="UTC")

    def strings(codes, values, order):
        return pa.DictionaryArray.from_arrays(pa.array(codes[order]), pa.array(values)).cast(pa.string())

    table = pa.table({
        "user_id": pa.array(user[order]),
        "ts": pa.array(ts[order]).cast(tz),
        "created": pa.array(created[order]).cast(tz),
        "amount": pa.array(amount[order]),
        "country": strings(country, COUNTRIES, order),
        "status": strings(status, STATUSES, order),
    })
    del user, ts, status, country, amount, created, order
    per_file = -(-events // FILES)
    for i in range(FILES):
        part = table.slice(i * per_file, per_file)
        pq.write_table(part, folder / f"part-{i:02d}.parquet", row_group_size=ROW_GROUP, compression="snappy")
    meta.write_text(json.dumps(dict(params, seconds=round(time.perf_counter() - t0, 2),
                                    bytes=sum(p.stat().st_size for p in folder.glob("*.parquet"))), indent=2) + "\n")
    return folder


def files(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    folder = generate(args.events, args.users, args.root, args.force)
    print(folder)
    print((folder / "generated.json").read_text())


if __name__ == "__main__":
    main()
