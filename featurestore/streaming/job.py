"""The stream job: one feature view's Kafka events through Flink into the online and offline stores.

Runs in ``.venv-flink`` (PyFlink 2.2), started by ``featurestore stream start`` with a plan file
(``featurestore.streaming.plan``)::

    .venv-flink/bin/python -m featurestore.streaming.job <state_dir>/plan.json [--restore <checkpoint>]

The dataflow (parallelism 1; every step in event order)::

    Kafka topic (raw bytes + partition, offset, record time)
      -> parse (Python): JSON -> typed event, or the dead-letter topic with the reason
      -> Flink SQL: event time + watermark (``watermark_delay``), the view's filter and transforms
         compiled from the IR by ``transforms.compile_flink``
      -> admit (Python): an event behind the watermark by more than ``allowed_lateness`` is late:
         counted (metric ``late_events``) and sent to the dead-letter topic, applied to neither store
      -> online: plain views write each event's row; aggregation views fold it into the entity's keyed
         state (``featurestore.streaming.state``) and write the entity's new state row. Writes are
         batched (``online_flush_ms``) by an async operator and go through ``OnlineStore.write``, the
         event-time monotonic path materialization uses.
      -> offline: rows are buffered in checkpointed state and appended to the Parquet store every
         ``offline_flush_seconds`` in one atomic commit that also records the last Kafka offset per
         partition; rows at or below the recorded offsets are dropped, so a replay writes nothing twice.

Exactly once, end to end: Flink checkpoints hold the Kafka offsets and all state. An async operator
finishes its in-flight writes before a checkpoint completes, so every event a checkpoint covers has
reached the online store; after a crash the job restarts from the last checkpoint (``--restore``, or
in-process by the restart strategy) and replays later events, whose online writes are idempotent
(monotonic) and whose offline rows are deduplicated by offset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from featurestore.streaming import events as ev
from featurestore.streaming.plan import (
    KAFKA_TS,
    META_COLUMNS,
    OFFSET,
    PARTITION,
    ROWTIME,
    computed_columns,
    events_table_schema,
    watermark_expression,
)

_MIN_WATERMARK = -(2**63)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


class StatusFile:
    """Counters of one operator, written as JSON about once a second (``stream status`` reads them)."""

    def __init__(self, state_dir: str, name: str):
        self.path = Path(state_dir) / "status" / f"{name}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.counts: dict[str, Any] = {}
        self._dirty = False
        self._lock = threading.Lock()
        threading.Thread(target=self._loop, name=f"status-{name}", daemon=True).start()

    def bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + n
            self._dirty = True

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self.counts[key] = value
            self._dirty = True

    def _loop(self) -> None:
        while True:
            time.sleep(1.0)
            self.write()

    def write(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            text = json.dumps({**self.counts, "updated": time.time()})
            self._dirty = False
        tmp = self.path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
        tmp.write_text(text)
        os.replace(tmp, self.path)


def _open_store(plan: dict[str, Any]):
    from featurestore.store import FeatureStore

    return FeatureStore(plan["repo_path"])


def build(plan: dict[str, Any], state_dir: str, restore: str | None, connector_jar: str) -> Any:
    """The job's StreamExecutionEnvironment, with the whole dataflow added (not yet executed)."""
    from pyflink.common import Configuration, Row, Time, Types
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream import OutputTag, StreamExecutionEnvironment
    from pyflink.datastream.async_data_stream import AsyncDataStream
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink
    from pyflink.datastream.functions import AsyncFunction, KeyedProcessFunction, ProcessFunction
    from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor
    from pyflink.table import Schema, StreamTableEnvironment

    from featurestore.streaming.config import stream_engine_config

    cfg = stream_engine_config(plan.get("stream_engine"))
    kafka = plan["kafka"]
    view = plan["view"]
    conf = Configuration()
    conf.set_string("pipeline.name", f"featurestore {plan['project']}.{view}")
    conf.set_string("pipeline.jars", f"file://{connector_jar}")
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("table.local-time-zone", "UTC")
    conf.set_string("python.fn-execution.bundle.time", str(cfg.bundle_time_ms))
    conf.set_string("execution.checkpointing.interval", f"{int(cfg.checkpoint_interval_seconds * 1000)} ms")
    conf.set_string("execution.checkpointing.mode", "EXACTLY_ONCE")
    conf.set_string("execution.checkpointing.dir", Path(state_dir, "checkpoints").resolve().as_uri())
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    conf.set_string("execution.checkpointing.num-retained", "2")
    conf.set_string("state.backend.type", "hashmap")
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", str(2**31 - 1))
    conf.set_string("restart-strategy.fixed-delay.delay", f"{int(cfg.restart_delay_seconds * 1000)} ms")
    if restore:
        conf.set_string("execution.state-recovery.path", Path(restore).resolve().as_uri())
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(cfg.parallelism)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.local-time-zone", "UTC")

    def q(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    t_env.execute_sql(
        "CREATE TEMPORARY TABLE `fs_kafka` (`value` BYTES, `partition` INT METADATA VIRTUAL, "
        "`offset` BIGINT METADATA VIRTUAL, `record_time` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL) "
        f"WITH ('connector' = 'kafka', 'topic' = {q(kafka['topic'])}, "
        f"'properties.bootstrap.servers' = {q(kafka['bootstrap_servers'])}, "
        f"'properties.group.id' = {q(kafka['group_id'])}, 'scan.startup.mode' = 'group-offsets', "
        "'properties.auto.offset.reset' = 'earliest', 'properties.commit.offsets.on.checkpoint' = 'true', "
        "'scan.topic-partition-discovery.interval' = '10 s', 'format' = 'raw')")
    raw = t_env.to_data_stream(t_env.sql_query(
        "SELECT `value`, `partition`, `offset`, CAST(`record_time` AS TIMESTAMP(3)) FROM `fs_kafka`"))

    columns = plan["columns"]
    dead_tag = OutputTag("dead-letter", Types.STRING())
    flink_types = {"BIGINT": Types.LONG(), "INT": Types.INT(), "DOUBLE": Types.DOUBLE(), "FLOAT": Types.FLOAT(),
                   "STRING": Types.STRING(), "BOOLEAN": Types.BOOLEAN(),
                   "BYTES": Types.PRIMITIVE_ARRAY(Types.BYTE())}
    table_schema = events_table_schema(plan)
    row_type = Types.ROW_NAMED([n for n, _ in table_schema], [flink_types[t] for _, t in table_schema])

    class Parse(ProcessFunction):
        """Kafka record -> typed event row, or a dead letter naming the reason."""

        def open(self, runtime_context):
            self.status = StatusFile(state_dir, "parse")
            self.dead = runtime_context.get_metrics_group().counter("dead_letters")

        def process_element(self, value, ctx):
            raw_value, partition, offset, record_time = value[0], value[1], value[2], value[3]
            record_ms = None if record_time is None else (record_time - _NAIVE_EPOCH) // _MS
            try:
                values = ev.parse(raw_value, columns)
            except ev.EventError as exc:
                self.dead.inc()
                self.status.bump("dead_letters")
                yield dead_tag, ev.dead_letter(str(exc), raw_value, view=view, topic=kafka["topic"],
                                               partition=partition, offset=offset)
                return
            self.status.bump("events")
            yield Row(*values, partition, offset, record_ms)

        def close(self):
            self.status.write()

    parsed = raw.process(Parse(), output_type=row_type)
    builder = Schema.new_builder()
    for name, sql_type in table_schema:
        builder.column(name, sql_type)
    for name, expr in computed_columns(plan):
        builder.column_by_expression(name, expr)
    builder.watermark(ROWTIME, watermark_expression(plan))
    t_env.create_temporary_view("events", t_env.from_data_stream(parsed, builder.build()))
    transformed = t_env.to_data_stream(t_env.sql_query(plan["select"]))

    out_names = plan["output_columns"]
    out_times = set(plan["output_timestamps"])
    n_out = len(out_names)
    lateness_ms = kafka["allowed_lateness_ms"]

    class Admit(ProcessFunction):
        """Drops (and reports) events too far behind the watermark; the rest become Python dicts."""

        def open(self, runtime_context):
            self.status = StatusFile(state_dir, "admit")
            self.late = runtime_context.get_metrics_group().counter("late_events")

        def process_element(self, value, ctx):
            event_ms = ctx.timestamp()
            watermark = ctx.timer_service().current_watermark()
            row = {}
            for i, name in enumerate(out_names):
                v = value[i]
                row[name] = ev.parse_time(v, name) if name in out_times and v is not None else v
            meta = {m: value[n_out + j] for j, m in enumerate(META_COLUMNS)}
            if watermark > _MIN_WATERMARK and event_ms < watermark - lateness_ms:
                self.late.inc()
                self.status.bump("late_events")
                reason = (f"late: event time {row['event_timestamp'].isoformat()} is more than the allowed "
                          f"lateness ({lateness_ms} ms) behind the watermark "
                          f"{(_NAIVE_EPOCH + watermark * _MS).isoformat()}")
                yield dead_tag, json.dumps({"reason": reason, "view": view, "topic": kafka["topic"],
                                            "partition": meta[PARTITION], "offset": meta[OFFSET],
                                            "row": {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                                                    for k, v in row.items() if not isinstance(v, bytes)}})
                return
            self.status.bump("admitted")
            self.status.set("watermark_ms", watermark)
            yield row, meta

        def close(self):
            self.status.write()

    admitted = transformed.process(Admit(), output_type=Types.PICKLED_BYTE_ARRAY())
    keys = plan["keys"]

    def key_of(item):
        row = item[0]
        return json.dumps([row[k] for k in keys])

    # -- online --------------------------------------------------------------------------------
    if plan["online"]:
        if plan["aggregations"]:
            from featurestore.streaming.state import AggregationState, to_us

            class Aggregate(KeyedProcessFunction):
                """Folds each event into its entity's state and emits the entity's new online row."""

                def open(self, runtime_context):
                    self.agg = AggregationState(plan["aggregations"])
                    self.state = runtime_context.get_state(ValueStateDescriptor("entity", Types.PICKLED_BYTE_ARRAY()))

                def process_element(self, item, ctx):
                    row, meta = item
                    st = self.state.value() or self.agg.new()
                    created = row.get("created_timestamp")
                    self.agg.add(st, to_us(row["event_timestamp"]), None if created is None else to_us(created),
                                 row, meta[KAFKA_TS])
                    self.state.update(st)
                    yield {**{k: row[k] for k in keys}, **self.agg.row(st)}

            online_rows = admitted.key_by(key_of, key_type=Types.STRING()).process(
                Aggregate(), output_type=Types.PICKLED_BYTE_ARRAY())
        else:
            online_rows = admitted.map(lambda item: item[0], output_type=Types.PICKLED_BYTE_ARRAY())

        flush_s = cfg.online_flush_ms / 1000

        class OnlineWriter(AsyncFunction):
            """Batches rows for ``online_flush_ms`` and writes each batch with one ``OnlineStore.write``.
            An element completes when its batch is stored; Flink waits for in-flight elements before a
            checkpoint, so a checkpoint never covers an unwritten row."""

            def open(self, runtime_context):
                from featurestore.streaming.writers import OnlineRows

                self.store = _open_store(plan)
                self.rows = OnlineRows(plan, self.store)
                self.status = StatusFile(state_dir, "online")
                self.pending: list = []
                self.lock = threading.Lock()
                self.scheduled = False

            async def async_invoke(self, value):
                loop = asyncio.get_running_loop()
                fut = loop.create_future()
                self.pending.append((value, fut))
                if not self.scheduled:
                    self.scheduled = True
                    loop.create_task(self._flush_later(loop))
                await fut
                return []

            async def _flush_later(self, loop):
                await asyncio.sleep(flush_s)
                batch, self.pending, self.scheduled = self.pending, [], False
                try:
                    written, skipped = await loop.run_in_executor(None, self._write, [r for r, _ in batch])
                except BaseException as exc:  # the job fails and restarts from its last checkpoint
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    return
                self.status.bump("online_written", written)
                self.status.bump("online_skipped_stale", skipped)
                self.status.set("online_last_write", time.time())
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)

            def _write(self, rows):
                with self.lock:
                    return self.rows.write(rows)

            def close(self):
                self.status.write()
                self.store.close()

        AsyncDataStream.unordered_wait(online_rows, OnlineWriter(), Time.seconds(120), 100_000,
                                       Types.PICKLED_BYTE_ARRAY())

    # -- offline -------------------------------------------------------------------------------
    flush_ms = int(cfg.offline_flush_seconds * 1000)

    class OfflineAppender(KeyedProcessFunction):
        """Buffers rows in checkpointed list state; a processing-time timer appends them in one commit."""

        def open(self, runtime_context):
            from featurestore.streaming.writers import OfflineRows

            self.store = _open_store(plan)
            self.rows = OfflineRows(plan, self.store)
            self.buffer = runtime_context.get_list_state(ListStateDescriptor("rows", Types.PICKLED_BYTE_ARRAY()))
            self.armed = runtime_context.get_state(ValueStateDescriptor("armed", Types.BOOLEAN()))
            self.status = StatusFile(state_dir, "offline")

        def process_element(self, item, ctx):
            row, meta = item
            self.buffer.add((row, meta[PARTITION], meta[OFFSET]))
            if not self.armed.value():
                self.armed.update(True)
                ctx.timer_service().register_processing_time_timer(ctx.timer_service().current_processing_time()
                                                                   + flush_ms)

        def on_timer(self, timestamp, ctx):
            items = list(self.buffer.get() or [])
            if items:
                written = self.rows.append(items)
                self.status.bump("offline_rows", written)
                self.status.bump("offline_commits")
                self.status.set("offline_last_commit", time.time())
            self.buffer.clear()
            self.armed.clear()
            return iter(())

        def close(self):
            self.status.write()
            self.store.close()

    admitted.key_by(lambda item: 0, key_type=Types.INT()).process(OfflineAppender(),
                                                                   output_type=Types.PICKLED_BYTE_ARRAY())

    # -- dead letters --------------------------------------------------------------------------
    sink = (KafkaSink.builder()
            .set_bootstrap_servers(kafka["bootstrap_servers"])
            .set_record_serializer(KafkaRecordSerializationSchema.builder()
                                   .set_topic(kafka["dead_letter_topic"])
                                   .set_value_serialization_schema(SimpleStringSchema())
                                   .build())
            .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
            .build())
    parsed.get_side_output(dead_tag).union(admitted.get_side_output(dead_tag)).sink_to(sink)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featurestore.streaming.job")
    parser.add_argument("plan", help="plan.json written by `featurestore stream start`")
    parser.add_argument("--restore", help="checkpoint directory to resume from")
    args = parser.parse_args(argv)
    plan_path = Path(args.plan).resolve()
    plan = json.loads(plan_path.read_text())
    from featurestore.streaming import jars

    env = build(plan, str(plan_path.parent), args.restore, str(jars.connector_jar(fetch_missing=False)))
    env.execute(f"featurestore {plan['project']}.{plan['view']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
