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
from datetime import datetime
from typing import Mapping, Sequence

import pyarrow as pa

from featurestore.definitions import FeatureView
from featurestore.timestamps import TS
from transforms.aggregation import Aggregation

EV_TS, EV_CR = "__fs_ev_ts", "__fs_ev_cr"


def ev_column(column: str) -> str:
    return f"__fs_ev_{column}"


def view_state_types(view: FeatureView) -> dict[str, pa.DataType]:
    """The online store columns of an aggregation view's state, with their Arrow types."""
    return state_types(view.aggregations, {c.name: c.dtype.to_arrow() for c in view.event_columns},
                       {f.name: f.dtype.to_arrow() for f in view.schema})


def state_types(aggs: Sequence[Aggregation], events: Mapping[str, pa.DataType],
                outputs: Mapping[str, pa.DataType]) -> dict[str, pa.DataType]:
    """The state columns of ``aggs`` given the Arrow types of the event columns they read and of
    their outputs (a lifetime aggregate is stored as its value)."""
    types: dict[str, pa.DataType] = {}
    windowed = [a for a in aggs if a.window is not None]
    if windowed:
        types[EV_TS] = pa.list_(TS)
        types[EV_CR] = pa.list_(TS)
        for a in windowed:
            types[ev_column(a.column)] = pa.list_(events[a.column])
    for a in aggs:
        if a.window is None:
            types[a.name] = outputs[a.name]
    return types


def finish(agg: Aggregation, state: dict, now: datetime):
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
