"""Write data/clicks_history.parquet: yesterday's clicks, the history behind the Kafka topic.

    python generate_history.py [--users 10] [--rows 1000]
"""

from __future__ import annotations

import argparse
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
    rows = sorted(((start + timedelta(seconds=rnd.randrange(12 * 3600)), rnd.randrange(1, args.users + 1),
                    rnd.randrange(1, 200) / 4) for _ in range(args.rows)))
    table = pa.table({"user_id": pa.array([r[1] for r in rows], pa.int64()),
                      "price": pa.array([r[2] for r in rows], pa.float64()),
                      "ts": pa.array([r[0] for r in rows], pa.timestamp("us", tz="UTC"))})
    (HERE / "data").mkdir(exist_ok=True)
    pq.write_table(table, HERE / "data" / "clicks_history.parquet")
    print(f"wrote {table.num_rows} clicks of {args.users} users to data/clicks_history.parquet")


if __name__ == "__main__":
    main()
