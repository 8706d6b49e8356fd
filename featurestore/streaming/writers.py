"""The stream job's two writes, as plain Python (testable without Flink): a batch of online rows through
``OnlineStore.write`` (the monotonic path materialization uses), and a batch of offline rows appended
exactly once by Kafka offset."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pyarrow as pa

from featurestore import types as fstypes
from featurestore.engines.base import CREATED_TS, EVENT_TS

_TS = pa.timestamp("us", tz="UTC")


def _key_schema(plan: dict[str, Any]) -> list[pa.Field]:
    return [pa.field(k, fstypes.from_spec(plan["key_types"][k]).to_arrow()) for k in plan["keys"]]


def stream_name(plan: dict[str, Any]) -> str:
    """How the offline store names this job's input when it records committed offsets."""
    return f"kafka:{plan['kafka']['topic']}"


class OnlineRows:
    """Writes the job's online rows: one row per entity per batch (its newest), monotonic per key."""

    def __init__(self, plan: dict[str, Any], store: Any):
        self.plan = plan
        self.store = store
        self.keys = plan["keys"]
        fields = _key_schema(plan)
        if plan["aggregations"]:
            from featurestore.online_aggregate import state_types

            fields += [pa.field(n, t) for n, t in state_types(plan["spec"]).items()]
        else:
            fields += [pa.field(c["name"], fstypes.from_spec(c["dtype"]).to_arrow()) for c in plan["stored"]]
        self.schema = pa.schema(fields + [pa.field(EVENT_TS, _TS), pa.field(CREATED_TS, _TS)])
        ttl = plan.get("ttl_seconds")
        self.ttl = None if ttl is None else timedelta(seconds=ttl)

    def write(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        """(written, skipped as stale). For an aggregation view the last row of an entity is its newest
        state; for a plain view the store keeps the newest event per key."""
        if self.plan["aggregations"]:
            latest: dict[tuple, dict[str, Any]] = {}
            for r in rows:
                latest[tuple(r[k] for k in self.keys)] = r
            rows = list(latest.values())
        if not rows:
            return 0, 0
        table = pa.Table.from_pylist(rows, schema=self.schema)
        result = self.store.online_store.write(self.plan["view"], self.keys, table, event_ts_column=EVENT_TS,
                                               created_ts_column=CREATED_TS, ttl=self.ttl)
        return result.written, result.skipped_stale


class OfflineRows:
    """Appends the job's rows (keys, stored columns, event and created time) to the offline store, and
    merges the small files those appends leave once a day partition has many."""

    def __init__(self, plan: dict[str, Any], store: Any):
        self.plan = plan
        self.store = store
        fields = _key_schema(plan) + [pa.field(c["name"], fstypes.from_spec(c["dtype"]).to_arrow())
                                      for c in plan["stored"]]
        self.schema = pa.schema(fields + [pa.field(EVENT_TS, _TS), pa.field(CREATED_TS, _TS)])
        self.stream = stream_name(plan)

    def append(self, items: list[tuple[dict[str, Any], int, int]]) -> int:
        """Append ``(row, partition, offset)`` items in one commit, skipping offsets already committed;
        returns the rows written."""
        offline = self.store.offline_store
        done = offline.stream_offsets(self.plan["view"], self.stream)
        fresh = [(row, p, o) for row, p, o in items if o > done.get(p, -1)]
        if not fresh:
            return 0
        spans: dict[int, tuple[int, int]] = {}
        for _, p, o in fresh:
            first, last = spans.get(p, (o, o))
            spans[p] = (min(first, o), max(last, o))
        table = pa.Table.from_pylist([row for row, _, _ in fresh], schema=self.schema)
        offline.append(self.plan["view"], table, EVENT_TS, stream=self.stream, offsets=spans)
        offline.compact(self.plan["view"])  # one small file per commit: merge them as they pile up
        return table.num_rows
