"""Windowed aggregations online: what the online store keeps, and how a lookup finishes the value.

The value of an aggregation at time t covers events in (t - window, t], the same definition exports
use. To keep that exact while windows slide after the last materialization, the online store keeps,
per entity, the events of its longest finite window (their times, created times and the aggregated
columns, as lists) and the lifetime aggregates as of the materialization end; a lookup at time ``now``
filters the events to (now - window, now] and aggregates them. The row's event time is the entity's
latest event, so the view's TTL decides freshness exactly as for plain views; its created time is the
materialization end, so a later materialization of the same events (late data included) replaces it
and a rerun of an older one never does.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Iterator

import pyarrow as pa

from featurestore import types as fstypes
from featurestore.engines.base import CREATED_TS, EVENT_TS

if TYPE_CHECKING:
    from featurestore.engines.base import ViewData
    from featurestore.store import FeatureStore
    from transforms.aggregation import Aggregation

EV_TS, EV_CR = "__fs_ev_ts", "__fs_ev_cr"
_TS = pa.timestamp("us", tz="UTC")


def ev_column(column: str) -> str:
    return f"__fs_ev_{column}"


def aggregations_of(spec: dict) -> list["Aggregation"]:
    from transforms.aggregation import Aggregation

    return [Aggregation.from_spec(a) for a in spec.get("aggregations", [])]


def state_types(spec: dict) -> dict[str, pa.DataType]:
    """The online store columns of an aggregation view's state, with their Arrow types."""
    aggs = aggregations_of(spec)
    events = {c["name"]: fstypes.from_spec(c["dtype"]).to_arrow() for c in spec["event_columns"]}
    outputs = {f["name"]: fstypes.from_spec(f["dtype"]).to_arrow() for f in spec["schema"]}
    types: dict[str, pa.DataType] = {}
    windowed = [a for a in aggs if a.window is not None]
    if windowed:
        types[EV_TS] = pa.list_(_TS)
        types[EV_CR] = pa.list_(_TS)
        for a in windowed:
            types[ev_column(a.column)] = pa.list_(events[a.column])
    for a in aggs:
        if a.window is None:
            types[a.name] = outputs[a.name]
    return types


def aggregation_state(store: "FeatureStore", spec: dict, data: "ViewData", start: datetime,
                      end: datetime, batch_rows: int = 100_000) -> Iterator[pa.Table]:
    """State rows for every entity with an event in [start, end), computed as of ``end``."""
    from featurestore.engines.local import LocalEngine, fetch_arrow, quote
    from transforms.aggregation import Aggregation
    from transforms.compile_duckdb import aggregate_at_points_sql

    engine = store.engine if isinstance(store.engine, LocalEngine) else LocalEngine()
    aggs = aggregations_of(spec)
    keys = [c["name"] for c in spec["entity_columns"]]
    key_types = {c["name"]: fstypes.from_spec(c["dtype"]).to_arrow() for c in spec["entity_columns"]}
    events = {c["name"]: fstypes.from_spec(c["dtype"]) for c in spec["event_columns"]}
    windowed = [a for a in aggs if a.window is not None]
    lifetime = [a for a in aggs if a.window is None]
    k = ", ".join(quote(c) for c in keys)
    con = engine._connect()
    try:
        params: dict = {"end": end, "start": start}
        scan = engine._scan(con, data, "fs_src", params)
        ts = engine._ts(data.timestamp_column)
        cr = engine._ts(data.created_column) if data.created_column else "NULL::TIMESTAMPTZ"
        cols = [f"{engine._cast(quote(c), key_types[c])} AS {quote(c)}" for c in keys]
        cols += [f"{ts} AS __ts", f"{cr} AS __cr"] + [quote(c) for c in events]
        ctes = [f"ev AS (SELECT {', '.join(cols)} FROM {scan} WHERE {ts} < $end)",
                f"touched AS (SELECT DISTINCT {k} FROM ev WHERE __ts >= $start)"]
        select = [f"touched.{quote(c)}" for c in keys]
        joins = ""
        if windowed:
            longest = max(a.window_micros for a in windowed)
            params["since"] = end - timedelta(microseconds=longest)
            order = "ORDER BY __ts, __cr NULLS FIRST"
            lists = [f"list(__ts {order}) AS {EV_TS}", f"list(__cr {order}) AS {EV_CR}"]
            lists += [f"list({quote(c)} {order}) AS {quote(ev_column(c))}"
                      for c in dict.fromkeys(a.column for a in windowed)]
            ctes.append(f"recent AS (SELECT {k}, {', '.join(lists)} FROM ev SEMI JOIN touched USING ({k}) "
                        f"WHERE __ts > $since GROUP BY {k})")
            joins += f" LEFT JOIN recent USING ({k})"
            select += [EV_TS, EV_CR] + [quote(ev_column(c)) for c in dict.fromkeys(a.column for a in windowed)]
        latest = Aggregation(column="__ts", function="max", window=None, name="__fs_latest")
        ctes.append(f"points AS (SELECT {k}, $end - INTERVAL 1 MICROSECOND AS __ts, "
                    f"row_number() OVER () AS __point_id FROM touched)")
        agg_sql = aggregate_at_points_sql("SELECT * FROM ev", "SELECT * FROM points", keys, "__ts",
                                          lifetime + [latest], "__cr", point_id="__point_id",
                                          schema=events | {"__ts": fstypes.Timestamp})
        ctes.append(f"life AS (SELECT points.*, a.* EXCLUDE (__point_id) FROM points JOIN ({agg_sql}) AS a "
                    f"USING (__point_id))")
        joins += f" JOIN life USING ({k})"
        select += [quote(a.name) for a in lifetime]
        select += [f"life.__fs_latest AS {EVENT_TS}", f"$end::TIMESTAMPTZ AS {CREATED_TS}"]
        sql = f"WITH {', '.join(ctes)} SELECT {', '.join(select)} FROM touched{joins}"
        table = fetch_arrow(con, sql, params)
    finally:
        con.close()
    types = state_types(spec) | key_types | {EVENT_TS: _TS, CREATED_TS: _TS}
    table = pa.Table.from_arrays(
        [table.column(n).cast(types[n]) if table.column(n).type != types[n] else table.column(n)
         for n in table.column_names], names=table.column_names)
    for offset in range(0, table.num_rows, batch_rows):
        yield table.slice(offset, batch_rows)


def finish(agg: "Aggregation", state: dict, now: datetime):
    """The aggregation's value at ``now`` from one entity's stored state."""
    if agg.window is None:
        return state.get(agg.name)
    times = state.get(EV_TS) or []
    created = state.get(EV_CR) or [None] * len(times)
    values = state.get(ev_column(agg.column)) or [None] * len(times)
    since = now - agg.window
    picked = [i for i, t in enumerate(times) if t is not None and since < t <= now]
    if agg.function == "last":
        if not picked:
            return None
        floor = datetime.min.replace(tzinfo=now.tzinfo)
        best = max(picked, key=lambda i: (times[i], created[i] or floor))
        return values[best]
    present = [values[i] for i in picked if values[i] is not None]
    fn = agg.function
    if fn == "count":
        return len(present)
    if not present:
        return None
    if fn == "sum":
        return sum(present)
    if fn == "mean":
        return sum(present) / len(present)
    if fn == "min":
        return min(present)
    if fn == "max":
        return max(present)
    if fn == "stddev":
        return statistics.stdev(present) if len(present) > 1 else None
    raise ValueError(f"unknown aggregation function {fn!r}")
