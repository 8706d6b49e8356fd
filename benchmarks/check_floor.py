"""Check the hand-written DuckDB floor against a brute-force point-in-time join on a sample.

The benchmark judges every system by the floor's answer, so the floor itself is checked here with a
plain per-row loop over the README's point-in-time rule (latest e <= t with e >= t - ttl, ties by latest created,
no match gives nulls). Rows are sampled from the 100k entity frame plus every duplicate, edge and
unknown-key kind the generator makes.

    .venv/bin/python benchmarks/check_floor.py [--sample 3000]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "runners"))

import generate  # noqa: E402
from run_duckdb import build_sql  # noqa: E402


def _index(table: pa.Table) -> dict[int, list[tuple[int, int, int]]]:
    """driver_id -> [(event_us, created_us, row)]"""
    ids = table.column("driver_id").to_numpy()
    ev = table.column("event_timestamp").cast(pa.int64()).to_numpy()
    cr = table.column("created").cast(pa.int64()).to_numpy()
    out: dict[int, list] = {}
    for i in range(len(ids)):
        out.setdefault(int(ids[i]), []).append((int(ev[i]), int(cr[i]), i))
    return out


def brute_force(entities: pa.Table, table: pa.Table, features: list[str], ttl_days: int) -> dict[str, list]:
    idx = _index(table)
    ttl = ttl_days * generate.US_PER_DAY
    cols = {f: table.column(f).to_pylist() for f in features}
    out: dict[str, list] = {f: [] for f in features}
    ids = entities.column("driver_id").to_pylist()
    ts = entities.column("event_timestamp").cast(pa.int64()).to_pylist()
    for k, t in zip(ids, ts):
        best = None
        for e, c, i in idx.get(k, ()):
            if t - ttl <= e <= t and (best is None or (e, c) > best[:2]):
                best = (e, c, i)
        for f in features:
            out[f].append(None if best is None else cols[f][best[2]])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, default=3000)
    ap.add_argument("--data", type=Path, default=generate.DEFAULT_DIR)
    args = ap.parse_args()
    files = generate.generate(args.data)
    ent = pq.read_table(files["entities_100k"])
    rng = np.random.default_rng(7)
    pick = np.sort(rng.choice(ent.num_rows, min(args.sample, ent.num_rows), replace=False))
    sample = ent.take(pa.array(pick))
    hourly, daily = pq.read_table(files["hourly"]), pq.read_table(files["daily"])
    # make sure the sample holds each tie (both rows of a tie sit at the same event time)
    ev = hourly.column("event_timestamp").cast(pa.int64()).to_numpy()
    ids = hourly.column("driver_id").to_numpy()
    tie_rows = np.flatnonzero((ids[1:] == ids[:-1]) & (ev[1:] == ev[:-1])) + 1
    ties = pa.table({"driver_id": pa.array(ids[tie_rows]),
                     "event_timestamp": pa.array(ev[tie_rows] + 60_000_000).cast(generate.TS_TYPE)})
    sample = pa.concat_tables([sample, ties, sample.slice(0, 50)])  # and some duplicates

    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("entity_df", sample.append_column("rn", pa.array(np.arange(sample.num_rows))))
    got = con.sql(build_sql(str(files["hourly"]), str(files["daily"]))).to_arrow_table()

    hf = [n for n, _ in generate.HOURLY_FEATURES]
    df = [n for n, _ in generate.DAILY_FEATURES]
    want = {**brute_force(sample, hourly, hf, generate.HOURLY_TTL_DAYS),
            **brute_force(sample, daily, df, generate.DAILY_TTL_DAYS)}
    bad = 0
    for f in hf + df:
        g = got.column(f).to_pylist()
        for i, (a, b) in enumerate(zip(g, want[f])):
            same = (a is None and b is None) or (a is not None and b is not None and
                                                (a == b or (isinstance(a, float) and math.isclose(a, b))))
            if not same:
                bad += 1
                if bad <= 10:
                    print(f"row {i} {f}: floor {a!r} brute force {b!r}")
    keys_ok = (got.column("driver_id").equals(sample.column("driver_id"))
               and got.column("event_timestamp").equals(sample.column("event_timestamp")))
    nulls = sum(v is None for v in want["conv_rate"])
    print(f"{sample.num_rows} rows ({len(tie_rows)} at ties, {nulls} with no hourly match): "
          f"{bad} value mismatches, keys in input order: {keys_ok}")
    return 0 if bad == 0 and keys_ok else 1


if __name__ == "__main__":
    sys.exit(main())
