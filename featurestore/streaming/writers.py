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


def _stored_fields(plan: dict[str, Any]) -> list[pa.Field]:
    """The view's stored columns: its features, or the events its aggregations read."""
    return [pa.field(c["name"], fstypes.from_spec(c["dtype"]).to_arrow()) for c in plan["stored"]]


def stream_name(plan: dict[str, Any]) -> str:
    """How the offline store names this job's input when it records committed offsets."""
    return f"kafka:{plan['kafka']['topic']}"


class OnlineRows:
    """Writes the job's online rows through the store's monotonic write (the newest row per key wins)."""

    def __init__(self, plan: dict[str, Any], store: Any, extra: list[pa.Field] = ()):
        self.plan = plan
        self.store = store
        self.keys = plan["keys"]
        fields = _key_schema(plan) + list(extra)
        if plan["aggregations"]:
            from featurestore.online_aggregate import state_types

            fields += [pa.field(n, t) for n, t in state_types(plan["spec"]).items()]
        else:
            fields += _stored_fields(plan)
        self.schema = pa.schema(fields + [pa.field(EVENT_TS, _TS), pa.field(CREATED_TS, _TS)])
        ttl = plan.get("ttl_seconds")
        self.ttl = None if ttl is None else timedelta(seconds=ttl)

    def write(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        """(written, skipped as stale); the store keeps the newest row per key."""
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
        fields = _key_schema(plan) + _stored_fields(plan)
        self.schema = pa.schema(fields + [pa.field(EVENT_TS, _TS), pa.field(CREATED_TS, _TS)])
        self.stream = stream_name(plan)
        # Offsets committed per partition: read once, then kept up to date by this writer (the job is
        # the view's only stream writer; the commit itself re-checks them under the view's lock).
        self._done: dict[int, int] | None = None

    def append(self, items: list[tuple[dict[str, Any], int, int]]) -> int:
        """Append ``(row, partition, offset)`` items in one commit, skipping offsets already committed;
        returns the rows written."""
        offline = self.store.offline_store
        if self._done is None:
            self._done = offline.stream_offsets(self.plan["view"], self.stream)
        done = self._done
        fresh = [(row, p, o) for row, p, o in items if o > done.get(p, -1)]
        if not fresh:
            return 0
        spans: dict[int, tuple[int, int]] = {}
        for _, p, o in fresh:
            first, last = spans.get(p, (o, o))
            spans[p] = (min(first, o), max(last, o))
        table = pa.Table.from_pylist([row for row, _, _ in fresh], schema=self.schema)
        try:
            offline.append(self.plan["view"], table, EVENT_TS, stream=self.stream, offsets=spans)
        except BaseException:
            self._done = None  # read what is really committed before the next append
            raise
        done.update({p: last for p, (_, last) in spans.items()})
        offline.compact(self.plan["view"])  # one small file per commit: merge them as they pile up
        return table.num_rows


STATE_COLUMN = "__fs_stream_state"


class OnlineAggregator:
    """Folds events into each entity's aggregation state and writes the entity's online row.

    The state (``featurestore.streaming.state``: event lists, lifetime accumulators, and per Kafka
    partition the last offset folded in) travels as JSON in a hidden column of the entity's online row
    (``__fs_stream_state``; lookups never decode it). A batch reads the states of its entities, folds
    each entity's events in offset order, skipping offsets the state already holds (so a replay after
    a restart folds nothing twice), and writes the rows, state included, in one monotonic write. The job
    is the only writer of these states (parallelism 1), so reading and writing them needs no lock. A row
    without a state (written by materialization) starts a new one.
    """

    def __init__(self, plan: dict[str, Any], store: Any):
        from featurestore.streaming.state import AggregationState

        self.plan = plan
        self.store = store
        self.keys = plan["keys"]
        self.agg = AggregationState(plan["aggregations"])
        self.rows = OnlineRows(plan, store, extra=[pa.field(STATE_COLUMN, pa.string())])

    def write(self, items: list[tuple[dict[str, Any], int, int, int | None]]) -> tuple[int, int]:
        """Fold ``(row, partition, offset, kafka record ms)`` items; (rows written, skipped as stale)."""
        from featurestore.streaming.state import dumps, loads, to_us

        groups: dict[tuple, list] = {}
        for item in items:
            groups.setdefault(tuple(item[0][k] for k in self.keys), []).append(item)
        keys = list(groups)
        stored = self.store.online_store.read(self.plan["view"], self.keys, keys, [STATE_COLUMN],
                                              {STATE_COLUMN: pa.string()}).values[STATE_COLUMN]
        rows = []
        for key, text in zip(keys, stored):
            st = loads(text) if text else {**self.agg.new(), "pos": {}}
            changed = False
            for row, partition, offset, kafka_ms in groups[key]:
                if offset <= st["pos"].get(str(partition), -1):
                    continue
                created = row.get(CREATED_TS)
                self.agg.add(st, to_us(row[EVENT_TS]), None if created is None else to_us(created), row, kafka_ms)
                st["pos"][str(partition)] = offset
                changed = True
            if changed:
                rows.append({**dict(zip(self.keys, key)), **self.agg.row(st, times_as_us=True),
                             STATE_COLUMN: dumps(st)})
        return self.rows.write(rows)


class _PlainOnline:
    def __init__(self, plan: dict[str, Any], store: Any):
        self.rows = OnlineRows(plan, store)

    def write(self, items: list[tuple[dict[str, Any], int, int, int | None]]) -> tuple[int, int]:
        return self.rows.write([row for row, _, _, _ in items])


def online_writer(plan: dict[str, Any], store: Any) -> OnlineAggregator | _PlainOnline:
    """The job's online writer: events fold into aggregation states, or each event is a row."""
    return OnlineAggregator(plan, store) if plan["aggregations"] else _PlainOnline(plan, store)


def row_dead_letter(plan: dict[str, Any], reason: str, row: dict[str, Any], partition: int, offset: int) -> str:
    """The dead-letter record (JSON text) of an event the job read but applies to neither store (late,
    or its transforms failed): why, where from, and the row as the job had it (times as ISO text)."""
    import json

    return json.dumps({"reason": reason, "view": plan["view"], "topic": plan["kafka"]["topic"],
                       "partition": partition, "offset": offset,
                       "row": {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                               for k, v in row.items() if not isinstance(v, bytes)}})


class DeadLetters:
    """Produces dead-letter records to the source's dead-letter topic, waiting for the broker's acks."""

    def __init__(self, plan: dict[str, Any]):
        from connectors.kafka import KafkaClient, KafkaConfig

        self.topic = plan["kafka"]["dead_letter_topic"]
        self.client = KafkaClient(KafkaConfig(bootstrap_servers=plan["kafka"]["bootstrap_servers"],
                                              timeout_seconds=60))

    def send(self, records: list[str]) -> None:
        self.client.produce(self.topic, records)
