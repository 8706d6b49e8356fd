"""A stream job's per-entity aggregation state, and the online row it becomes.

The online layout is the one materialization writes (``featurestore.online_aggregate``): per entity,
the events of the longest finite window (times, created times, the aggregated columns) and the
lifetime aggregates; a lookup at ``now`` filters the events to (now - window, now] and aggregates.
The job keeps this state in Flink keyed state, adds each admitted event to it and emits the entity's
new online row, so the value a lookup computes equals the batch engines' value for the same events.

Events at or before ``latest - longest window`` (``latest`` = the entity's newest event time) are
dropped from the state: no lookup at a time after the newest event can include them. Lifetime
aggregates are accumulated exactly (integers stay integers; ``mean`` as sum and count; ``stddev`` by
Welford's method; ``last`` by the largest (event time, created time)).

The row's event time is the entity's newest event time (so the view's TTL decides freshness, as for
plain views), and its created time the largest Kafka record time of the events applied, raised where
needed so that every fold has a larger one than the fold before: the event-time monotonic write then
takes each new fold of the state (an event that arrives after a later one of its entity changes the
state but not the newest event time) and still refuses older writers.
The state is made of JSON types only (lists, numbers, strings), so the stream job can keep it in the
online store as JSON. Plain Python (no pyflink), so the main environment tests it against
the batch engines.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, Sequence

from featurestore import timestamps
from featurestore.online_aggregate import EV_CR, EV_TS, ev_column
from featurestore.ports.engine import CREATED_TS, EVENT_TS
from transforms.aggregation import Aggregation

_NO_CREATED = -(2**63)  # a missing created time orders first


def from_us(us: int | None) -> datetime | None:
    return None if us is None else timestamps.from_us(us)


class AggregationState:
    """How one view's events fold into an entity's state."""

    def __init__(self, aggregations: Sequence[Aggregation]):
        self.aggregations = tuple(aggregations)
        windowed = [a for a in aggregations if a.window is not None]
        self.longest_us = max(a.window_micros for a in windowed) if windowed else None
        self.window_columns = list(dict.fromkeys(a.column for a in windowed))
        self.lifetime = [a for a in aggregations if a.window is None]

    def new(self) -> dict[str, Any]:
        return {"ts": [], "cr": [], "v": {c: [] for c in self.window_columns},
                "life": {a.name: None for a in self.lifetime}, "latest": None, "kafka": None}

    def add(self, state: dict[str, Any], ts_us: int, cr_us: int | None, values: dict[str, Any],
            kafka_ms: int | None) -> None:
        """Fold one event into ``state`` (in place)."""
        for v in values.values():
            if isinstance(v, float) and not math.isfinite(v):
                state["nonfinite"] = True  # sticky: see dumps()
        state["latest"] = ts_us if state["latest"] is None else max(state["latest"], ts_us)
        if kafka_ms is not None:
            state["kafka"] = kafka_ms if state["kafka"] is None else max(state["kafka"], kafka_ms)
        # The row's created time: the newest Kafka record time, but always past the previous fold's, so
        # the event-time monotonic write takes every new fold of the state (an out-of-order event leaves
        # the newest event time as it was, and record times repeat within a millisecond).
        previous = state.get("version")
        floor = 0 if state["kafka"] is None else state["kafka"] * 1000
        state["version"] = floor if previous is None else max(floor, previous + 1)
        if self.longest_us is not None:
            state["ts"].append(ts_us)
            state["cr"].append(cr_us)
            for c in self.window_columns:
                state["v"][c].append(values.get(c))
            cutoff = state["latest"] - self.longest_us
            if state["ts"][0] <= cutoff or min(state["ts"]) <= cutoff:
                keep = [i for i, t in enumerate(state["ts"]) if t > cutoff]
                state["ts"] = [state["ts"][i] for i in keep]
                state["cr"] = [state["cr"][i] for i in keep]
                state["v"] = {c: [vals[i] for i in keep] for c, vals in state["v"].items()}
        for a in self.lifetime:
            state["life"][a.name] = _fold(a.function, state["life"][a.name], values.get(a.column), ts_us, cr_us)

    def row(self, state: dict[str, Any], *, times_as_us: bool = False) -> dict[str, Any]:
        """The entity's online state columns (``online_aggregate.state_types``), event and created time;
        times as aware datetimes, or as microseconds since the epoch (what Arrow builds from cheapest)."""
        out: dict[str, Any] = {}
        if self.longest_us is not None:
            if times_as_us:
                out[EV_TS], out[EV_CR] = list(state["ts"]), list(state["cr"])
            else:
                out[EV_TS] = [from_us(t) for t in state["ts"]]
                out[EV_CR] = [from_us(t) for t in state["cr"]]
            for c in self.window_columns:
                out[ev_column(c)] = list(state["v"][c])
        for a in self.lifetime:
            out[a.name] = _result(a.function, state["life"][a.name])
        created_us = state.get("version")
        if created_us is None and state["kafka"] is not None:  # a state folded before versions existed
            created_us = state["kafka"] * 1000
        out[EVENT_TS] = state["latest"] if times_as_us else from_us(state["latest"])
        out[CREATED_TS] = created_us if times_as_us else from_us(created_us)
        return out


def dumps(state: dict[str, Any]) -> str:
    """The state as JSON text: orjson unless ``add`` met a NaN or infinite value (orjson writes those
    as null), then the standard library's JSON, which keeps them."""
    import orjson

    if state.get("nonfinite"):
        return json.dumps(state)
    return orjson.dumps(state).decode()


def loads(text: str) -> dict[str, Any]:
    import orjson

    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN or Infinity, written by json.dumps
        return json.loads(text)


def _fold(fn: str, acc: Any, value: Any, ts_us: int, cr_us: int | None) -> Any:
    if fn == "last":
        order = [ts_us, _NO_CREATED if cr_us is None else cr_us]
        return [order, value] if acc is None or order > list(acc[0]) else acc
    if value is None:
        return acc
    if fn == "count":
        return (acc or 0) + 1
    if fn == "sum":
        return value if acc is None else acc + value
    if fn == "min":
        return value if acc is None else min(acc, value)
    if fn == "max":
        return value if acc is None else max(acc, value)
    if fn == "mean":
        n, total = acc or (0, 0)
        return [n + 1, total + value]
    if fn == "stddev":
        n, mean, m2 = acc or (0, 0.0, 0.0)
        n += 1
        delta = value - mean
        mean += delta / n
        return [n, mean, m2 + delta * (value - mean)]
    raise ValueError(f"unknown aggregation function {fn!r}")


def _result(fn: str, acc: Any) -> Any:
    if fn == "count":
        return acc or 0
    if acc is None:
        return None
    if fn == "last":
        return acc[1]
    if fn == "mean":
        n, total = acc
        return total / n
    if fn == "stddev":
        n, _, m2 = acc
        return math.sqrt(m2 / (n - 1)) if n > 1 else None
    return acc
