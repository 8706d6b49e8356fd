"""The floor: one hand-written DuckDB query computing the three windowed sums and counts per user at
one point in time, straight from the Parquet files.

One point per user makes this a plain GROUP BY: read only settled events in the TTL span
[t - ttl, t] (DuckDB pushes the filters into the Parquet scan), and aggregate each window with a
FILTER clause ts > t - w. A user whose latest settled event is older than t - ttl (or who has none)
has no group and gets nulls, counts included, as the product does; a fresh user with nothing in a
window gets a null sum and a zero count. The entity frame (all users at t) is LEFT JOINed so every
user comes back once.

Untimed, after the clock: the number of settled events in the materialization interval, which the
parent compares with the rows each engine's materialization wrote.
"""

from __future__ import annotations

import pyarrow.parquet as pq
from agg_common import FEATURES, MAT_END, MAT_START, POINT, TTL, WINDOWS, entity_table, run, spec


def build_sql() -> str:
    parts = []
    for fn in ("sum", "count"):
        for w in WINDOWS:
            parts.append(f"{fn}(amount) FILTER (WHERE ts > $lo_{w}) AS amount_{fn}_{w}")
    agg_cols = ",\n       ".join(parts)
    out_cols = ", ".join(f"a.{f}" for f in FEATURES)
    return f"""
WITH a AS (
SELECT user_id,
       {agg_cols}
FROM read_parquet($files)
WHERE status = 'settled' AND ts <= $t AND ts >= $lo_ttl
GROUP BY user_id)
SELECT e.user_id, {out_cols}
FROM entity_df e LEFT JOIN a ON a.user_id = e.user_id
"""


def build_window_sql() -> str:
    """For comparison only (not the floor): the same numbers from hand-written window functions, the
    general strategy that also serves many points per user. Events and points are stacked and one
    RANGE frame per window runs over each user's rows in time order; a point sees events in
    (t - w, t]."""
    wins = dict(WINDOWS, ttl=TTL)
    frames = ",\n       ".join(
        f"w_{w} AS (PARTITION BY user_id ORDER BY t_us RANGE BETWEEN {int(d.total_seconds() * 1e6) - 1} "
        f"PRECEDING AND CURRENT ROW)" for w, d in wins.items())
    cols = ", ".join(f"{fn}(amount) OVER w_{w} AS amount_{fn}_{w}" for fn in ("sum", "count") for w in WINDOWS)
    outs = ", ".join(f"CASE WHEN n_ttl > 0 THEN {f} END AS {f}" for f in FEATURES)
    return f"""
WITH u AS (
  SELECT user_id, epoch_us(ts) AS t_us, amount, 0 AS kind FROM read_parquet($files)
  WHERE status = 'settled' AND ts <= $t AND ts >= $lo_ttl
  UNION ALL
  SELECT user_id, epoch_us(event_timestamp), NULL, 1 FROM entity_df),
w AS (
  SELECT user_id, kind, {cols}, count(amount) OVER w_ttl AS n_ttl
  FROM u
  WINDOW {frames})
SELECT user_id, {outs} FROM w WHERE kind = 1
"""


# For comparison with materialization (not the floor): the same rows written as the offline store
# holds them (settled events of the interval, one folder per UTC day, zstd), by one COPY.
COPY_SQL = """
COPY (SELECT user_id, amount, ts AS event_timestamp, created AS created_timestamp, CAST(ts AS DATE) AS date
      FROM read_parquet($files) WHERE status = 'settled' AND ts >= $s AND ts < $e)
TO '{target}' (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd, ROW_GROUP_SIZE 131072)
"""


def params(files) -> dict:
    p = {"files": [str(f) for f in files], "t": POINT, "lo_ttl": POINT - TTL}
    p.update({f"lo_{w}": POINT - d for w, d in WINDOWS.items()})
    return p


def body(args, rec) -> None:
    import duckdb

    files = spec.files(args.data)
    entity = entity_table(args.users)

    def query():
        con = duckdb.connect()
        con.register("entity_df", entity)
        return con.sql(build_sql(), params=params(files)).to_arrow_table()

    result = rec.timed("export", query)
    rec.metrics["rows_out"] = result.num_rows
    rec.metrics["rows_in"] = entity.num_rows
    if args.out:
        pq.write_table(result, args.out)
    if args.window:
        def window_query():
            con = duckdb.connect()
            con.register("entity_df", entity)
            p = {k: v for k, v in params(files).items() if k in ("files", "t", "lo_ttl")}
            return con.sql(build_window_sql(), params=p).to_arrow_table()

        wres = rec.timed("export_window", window_query)
        if args.out:
            pq.write_table(wres, args.out.with_name(args.out.stem + "-window.parquet"))
        del wres
    if args.copy:
        import shutil

        target = args.work / "duckdb_copy"
        shutil.rmtree(target, ignore_errors=True)

        def copy():
            con = duckdb.connect()
            con.execute(COPY_SQL.format(target=str(target).replace("'", "''")),
                        {"files": [str(f) for f in files], "s": MAT_START, "e": MAT_END})

        rec.timed("materialize_copy", copy)
        rec.metrics["copy_rows"] = duckdb.connect().execute(
            "SELECT count(*) FROM read_parquet($p)", {"p": str(target / "**" / "*.parquet")}).fetchone()[0]
        shutil.rmtree(target, ignore_errors=True)
    con = duckdb.connect()
    rec.metrics["settled_in_materialize_interval"] = con.execute(
        "SELECT count(*) FROM read_parquet($files) WHERE status = 'settled' AND ts >= $s AND ts < $e",
        {"files": [str(f) for f in files], "s": MAT_START, "e": MAT_END}).fetchone()[0]
    rec.metrics["events"] = con.execute("SELECT count(*) FROM read_parquet($files)",
                                        {"files": [str(f) for f in files]}).fetchone()[0]


def _extra(ap) -> None:
    ap.add_argument("--window", action="store_true",
                    help="also time the window-function variant (for comparison; not the floor)")
    ap.add_argument("--copy", action="store_true",
                    help="also time a COPY writing the materialized rows as Parquet (for comparison)")


if __name__ == "__main__":
    run(body, _extra)
