"""The stream job's two writes, as plain Python (testable without Flink): a batch of online rows through
``OnlineStore.write`` (the monotonic path materialization uses), and a batch of offline rows appended
exactly once by Kafka offset."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pyarrow as pa

from featurestore.errors import BackendUnavailableError
from featurestore.ports.engine import CREATED_TS, EVENT_TS
from featurestore.streaming.blueprint import Blueprint
from featurestore.streaming.state import AggregationState, dumps, loads
from featurestore.timestamps import TS, to_us


def _key_schema(blueprint: Blueprint) -> list[pa.Field]:
    return [pa.field(k, blueprint.key_types[k].to_arrow()) for k in blueprint.keys]


def _stored_fields(blueprint: Blueprint) -> list[pa.Field]:
    """The view's stored columns: its features, or the events its aggregations read."""
    return [pa.field(f.name, f.dtype.to_arrow()) for f in blueprint.stored]


def stream_name(blueprint: Blueprint) -> str:
    """How the offline store names this job's input when it records committed offsets."""
    return f"kafka:{blueprint.kafka.topic}"


class OnlineRows:
    """Writes the job's online rows through the store's monotonic write (the newest row per key wins)."""

    def __init__(self, blueprint: Blueprint, store: Any, extra: list[pa.Field] = ()):
        self.view = blueprint.view
        self.store = store
        self.keys = list(blueprint.keys)
        fields = _key_schema(blueprint) + list(extra)
        if blueprint.aggregations:
            fields += [pa.field(n, t) for n, t in blueprint.state_types().items()]
        else:
            fields += _stored_fields(blueprint)
        self.schema = pa.schema(fields + [pa.field(EVENT_TS, TS), pa.field(CREATED_TS, TS)])
        ttl = blueprint.ttl_seconds
        self.ttl = None if ttl is None else timedelta(seconds=ttl)

    def write(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        """(written, skipped as stale); the store keeps the newest row per key."""
        if not rows:
            return 0, 0
        table = pa.Table.from_pylist(rows, schema=self.schema)
        result = self.store.online_store.write(self.view, self.keys, table, event_ts_column=EVENT_TS,
                                               created_ts_column=CREATED_TS, ttl=self.ttl)
        return result.written, result.skipped_stale


class OfflineRows:
    """Appends the job's rows (keys, stored columns, event and created time) to the view's appended
    table, with the offsets and progress they complete, and merges the small files those appends leave
    once a day partition has many."""

    def __init__(self, blueprint: Blueprint, store: Any):
        self.view = blueprint.view
        self.offline = store.offline_store.appends
        fields = _key_schema(blueprint) + _stored_fields(blueprint)
        self.schema = pa.schema(fields + [pa.field(EVENT_TS, TS), pa.field(CREATED_TS, TS)])
        self.stream = stream_name(blueprint)

    def committed(self) -> tuple[dict[int, int], dict[str, Any]]:
        """(last offset committed per partition, the progress committed with them)."""
        return self.offline.stream_progress(self.view, self.stream)

    def table(self, rows: list[dict[str, Any]]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=self.schema)

    def stage(self, rows: list[dict[str, Any]] | pa.Table) -> Any:
        """Write ``rows`` as data files, not yet visible (``commit`` makes them so)."""
        table = rows if isinstance(rows, pa.Table) else self.table(rows)
        return self.offline.stage_append(self.view, table, EVENT_TS)

    def commit(self, staged: Any, spans: dict[int, tuple[int, int]], progress: dict[str, Any]) -> int:
        """Make the ``staged`` rows visible and record, in the same atomic commit, the offsets ``spans``
        (first, last per partition) as handled with ``progress``; returns the rows committed."""
        self.offline.commit_append(staged, stream=self.stream, offsets=spans, progress=progress)
        return staged.rows

    def discard(self, staged: Any) -> None:
        self.offline.discard_append(staged)

    def compact(self) -> None:
        """Merge the small files the commits leave once a day partition has many."""
        self.offline.compact(self.view)


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

    def __init__(self, blueprint: Blueprint, store: Any):
        self.view = blueprint.view
        self.store = store
        self.keys = list(blueprint.keys)
        self.agg = AggregationState(blueprint.aggregations)
        self.rows = OnlineRows(blueprint, store, extra=[pa.field(STATE_COLUMN, pa.string())])

    def write(self, items: list[tuple[dict[str, Any], int, int, int | None]]) -> tuple[int, int]:
        """Fold ``(row, partition, offset, kafka record ms)`` items; (rows written, skipped as stale)."""
        groups: dict[tuple, list] = {}
        for item in items:
            groups.setdefault(tuple(item[0][k] for k in self.keys), []).append(item)
        keys = list(groups)
        stored = self.store.online_store.read(self.view, self.keys, keys, [STATE_COLUMN],
                                              {STATE_COLUMN: pa.string()}).values[STATE_COLUMN]
        rows = []
        for key, text in zip(keys, stored):
            st = loads(text) if text else {**self.agg.new(), "pos": {}}
            changed = False
            for row, partition, offset, kafka_ms in groups[key]:
                if offset <= st["pos"].get(str(partition), -1):
                    continue
                created = row.get(CREATED_TS)
                self.agg.add(st, _us(row[EVENT_TS]), None if created is None else _us(created), row, kafka_ms)
                st["pos"][str(partition)] = offset
                changed = True
            if changed:
                rows.append({**dict(zip(self.keys, key)), **self.agg.row(st, times_as_us=True),
                             STATE_COLUMN: dumps(st)})
        return self.rows.write(rows)


def _us(t: Any) -> int:
    """A row's time as epoch microseconds (the sink hands them over as such; tests may use datetimes)."""
    return t if isinstance(t, int) else to_us(t)


class _PlainOnline:
    def __init__(self, blueprint: Blueprint, store: Any):
        self.rows = OnlineRows(blueprint, store)

    def write(self, items: list[tuple[dict[str, Any], int, int, int | None]]) -> tuple[int, int]:
        return self.rows.write([row for row, _, _, _ in items])


def online_writer(blueprint: Blueprint, store: Any) -> OnlineAggregator | _PlainOnline:
    """The job's online writer: events fold into aggregation states, or each event is a row."""
    return OnlineAggregator(blueprint, store) if blueprint.aggregations else _PlainOnline(blueprint, store)


def row_dead_letter(view: str, topic: str, reason: str, row: dict[str, Any], partition: int, offset: int) -> str:
    """The dead-letter record (JSON text) of an event of ``view``'s job, read from ``topic``, that the
    job applies to neither store (late, or its transforms failed): why, where from, and the row as
    the job had it (times as ISO text)."""
    return json.dumps({"reason": reason, "view": view, "topic": topic,
                       "partition": partition, "offset": offset,
                       "row": {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                               for k, v in row.items() if not isinstance(v, bytes)}})


class DeadLetters:
    """Produces dead-letter records to the source's dead-letter topic, waiting for the broker's acks,
    and remembers where they landed, so a restarted job can tell which it already sent."""

    def __init__(self, blueprint: Blueprint):
        from connectors.kafka import KafkaClient, KafkaConfig  # confluent_kafka, loaded by the job only

        kafka = blueprint.kafka
        self.topic = kafka.dead_letter_topic
        self.view, self.source_topic = blueprint.view, kafka.topic
        self.client = KafkaClient(KafkaConfig(bootstrap_servers=kafka.bootstrap_servers, timeout_seconds=60))
        # Per dead-letter partition, the offset after the last letter this writer saw acknowledged.
        self.positions: dict[int, int] = {}

    def send(self, records: list[str]) -> None:
        def delivered(partition: int, offset: int) -> None:
            self.positions[partition] = max(self.positions.get(partition, 0), offset + 1)

        self.client.produce(self.topic, records, delivered=delivered)

    def sent_since(self, positions: dict[int, int]) -> set[tuple[int, int]]:
        """(source partition, offset) of this view's letters in the dead-letter topic at or after
        ``positions`` (every partition from its start where none is given): the letters a job sent
        after its last commit, before it stopped."""
        if self.topic not in self.client.list_topics():
            return set()
        try:
            messages = self.client.read_topic(self.topic, start=positions)
        except BackendUnavailableError:
            if self.topic not in self.client.list_topics():
                return set()
            raise
        sent = set()
        for m in messages:
            self.positions[m.partition] = max(self.positions.get(m.partition, 0), m.offset + 1)
            try:
                letter = json.loads(m.value)
            except ValueError:
                continue
            if isinstance(letter, dict) and letter.get("view") == self.view \
                    and letter.get("topic") == self.source_topic:
                sent.add((letter.get("partition"), letter.get("offset")))
        return sent
