"""The floor: one hand-written DuckDB query with two ASOF LEFT JOINs over the Parquet files.

Ties on event time are removed first (latest ``created`` wins); the TTL is applied to the matched row
(the ASOF join finds the latest row at or before t; if that row is older than t - ttl, every earlier
one is too, so nulling it is exact). A row number carried from the input restores input order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from common import run, spec


def _view_cte(name: str, path: str, features: list[str]) -> str:
    cols = ", ".join(features)
    return (f"{name} AS (SELECT driver_id, event_timestamp AS {name}_ts, {cols} "
            f"FROM read_parquet('{path}') "
            f"QUALIFY row_number() OVER (PARTITION BY driver_id, event_timestamp ORDER BY created DESC) = 1)")


def build_sql(hourly_path: str, daily_path: str) -> str:
    hf = [n for n, _ in spec.HOURLY_FEATURES]
    df = [n for n, _ in spec.DAILY_FEATURES]
    h_sel = ", ".join(f"CASE WHEN h.h_ts >= e.event_timestamp - INTERVAL {spec.HOURLY_TTL_DAYS} DAY "
                      f"THEN h.{n} END AS {n}" for n in hf)
    d_sel = ", ".join(f"CASE WHEN d.d_ts >= e.event_timestamp - INTERVAL {spec.DAILY_TTL_DAYS} DAY "
                      f"THEN d.{n} END AS {n}" for n in df)
    return f"""
WITH {_view_cte('h', hourly_path, hf)},
     {_view_cte('d', daily_path, df)}
SELECT e.driver_id, e.event_timestamp, {h_sel}, {d_sel}
FROM entity_df e
ASOF LEFT JOIN h ON e.driver_id = h.driver_id AND e.event_timestamp >= h.h_ts
ASOF LEFT JOIN d ON e.driver_id = d.driver_id AND e.event_timestamp >= d.d_ts
ORDER BY e.rn
"""


def export(args, df) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    ent = pa.Table.from_pandas(df, preserve_index=False)
    ent = ent.append_column("rn", pa.array(np.arange(ent.num_rows, dtype=np.int64)))
    con.register("entity_df", ent)
    sql = build_sql(str(args.data / "driver_hourly.parquet"), str(args.data / "driver_daily.parquet"))
    return con.sql(sql).to_arrow_table()


if __name__ == "__main__":
    run(export)
