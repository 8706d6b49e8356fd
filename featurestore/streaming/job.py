"""The stream job: one feature view's Kafka events through Flink into the online and offline stores.

Runs in ``.venv-flink`` (PyFlink 2.2), started by ``featurestore stream start`` with a plan file
(``featurestore.streaming.plan``)::

    .venv-flink/bin/python -m featurestore.streaming.job <state_dir>/plan.json [--restore <checkpoint>]

One Flink SQL pipeline (parallelism 1, so every step sees events in offset order)::

    Kafka topic (raw bytes + partition, offset, record time); event time (``__fs_rowtime``) read from
    the raw JSON by SQL, watermark = event time - ``watermark_delay``
      -> fs_parse (Python, a batch at a time): JSON -> the plan's typed columns as a JSON array, or the
         message goes to the dead-letter topic with the reason
      -> Flink SQL: typed columns out of the array, then the view's filter and transforms compiled from
         the IR by ``transforms.compile_flink`` with errors as values (a failing operation, e.g. an
         integer overflow, gives null and its message in ``__fs_error`` instead of failing the job,
         which would restart into the same event forever), and whether the event is late (behind the
         watermark by more than ``allowed_lateness``, from ``CURRENT_WATERMARK``)
      -> fs_sink (Python, a batch at a time): events the transforms failed on (metric and counter
         ``transform_errors``, reason ``transform: <message>``) and late events (``late_events``) are
         sent to the dead-letter topic, applied to neither store; the rest are appended to the offline
         store (one atomic commit that also records the last Kafka offset per partition, so a replay
         appends nothing twice) and written online through ``OnlineStore.write``, the event-time
         monotonic path of materialization (aggregation views fold them into each entity's state
         first, ``featurestore.streaming.writers.OnlineAggregator``)

The Python functions are vectorized (pandas UDFs): each call takes a batch of rows, so the cost per
event is a few Python operations, not a trip between the JVM and Python per operator.

Exactly once, end to end: Flink checkpoints hold the Kafka offsets. A Python function call finishes
before its batch's bundle does, and a bundle finishes before a checkpoint barrier passes, so every
event a checkpoint covers has been written to both stores (and dead letters produced, acknowledged).
After a crash the job restarts from the last checkpoint (``--restore``, or in-process by the restart
strategy) and replays later events: offline rows at or below the recorded offsets are dropped,
aggregation states record the last offset they folded, and online writes are monotonic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from featurestore.streaming import events as ev
from featurestore.streaming.plan import (
    ERROR,
    META_COLUMNS,
    ROWTIME,
    events_view_sql,
    interval_sql,
    rowtime_expression,
)


class StatusFile:
    """Counters of one function, written as JSON about once a second (``stream status`` reads them)."""

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


def build(plan: dict[str, Any], state_dir: str, restore: str | None, connector_jar: str) -> Any:
    """The job's TableEnvironment and its INSERT statement (not yet executed)."""
    import pandas as pd
    from pyflink.common import Configuration
    from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment
    from pyflink.table.udf import ScalarFunction, udf

    from featurestore.streaming.config import stream_engine_config
    from transforms.compile_flink import quote_string

    cfg = stream_engine_config(plan.get("stream_engine"))
    kafka = plan["kafka"]
    view = plan["view"]
    conf = Configuration()
    settings = {
        "pipeline.name": f"featurestore {plan['project']}.{view}",
        "pipeline.jars": f"file://{connector_jar}",
        "parallelism.default": str(cfg.parallelism),
        "table.local-time-zone": "UTC",
        "python.fn-execution.bundle.time": str(cfg.bundle_time_ms),
        "python.execution-mode": cfg.execution_mode,
        "pipeline.auto-watermark-interval": "100 ms",
        "execution.checkpointing.interval": f"{int(cfg.checkpoint_interval_seconds * 1000)} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": Path(state_dir, "checkpoints").resolve().as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "2",
        "state.backend.type": "hashmap",
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": str(2**31 - 1),
        "restart-strategy.fixed-delay.delay": f"{int(cfg.restart_delay_seconds * 1000)} ms",
    }
    if not cfg.jobmanager:  # on a cluster the TaskManagers' own Python setting applies (or -pyexec)
        settings["python.executable"] = sys.executable
        settings["python.client.executable"] = sys.executable
    if restore:
        settings["execution.state-recovery.path"] = Path(restore).resolve().as_uri()
    for key, value in settings.items():
        conf.set_string(key, value)
    t_env = TableEnvironment.create(EnvironmentSettings.new_instance().in_streaming_mode()
                                    .with_configuration(conf).build())

    columns = plan["columns"]

    class Parse(ScalarFunction):
        """A batch of Kafka records -> typed JSON arrays; bad ones are dead-lettered (marked ``E``)."""

        def open(self, function_context):
            from featurestore.streaming.writers import DeadLetters

            self.status = StatusFile(state_dir, "parse")
            self.dead_metric = function_context.get_metric_group().counter("dead_letters")
            self.dead = DeadLetters(plan)

        def is_deterministic(self):  # it produces dead letters: never folded or run twice by the planner
            return False

        def eval(self, values, partitions, offsets):
            out, letters = [], []
            for raw, partition, offset in zip(values, partitions, offsets):
                try:
                    out.append(ev.dumps_values(ev.parse(raw, columns)))
                except ev.EventError as exc:
                    out.append("E")
                    letters.append(ev.dead_letter(str(exc), raw, view=view, topic=kafka["topic"],
                                                  partition=int(partition), offset=int(offset)))
            if letters:
                self.dead.send(letters)
                self.dead_metric.inc(len(letters))
                self.status.bump("dead_letters", len(letters))
            self.status.bump("events", len(out))
            return pd.Series(out, dtype=object)

        def close(self):
            self.status.write()

    out_names = plan["output_columns"]
    out_types = plan["output_types"]
    n_out = len(out_names)
    # Values reach fs_sink as text (pandas would turn a null integer into NaN, and NaN into null).
    convert = {"Int64": int, "Int32": int, "Float64": float, "Float32": float, "String": str,
               "Bool": lambda v: v.upper() == "TRUE", "Timestamp": None}

    class Sink(ScalarFunction):
        """A batch of transformed events -> failed and late ones dead-lettered; the rest to both stores."""

        def open(self, function_context):
            from featurestore.store import FeatureStore
            from featurestore.streaming.writers import (
                DeadLetters,
                OfflineRows,
                online_writer,
                row_dead_letter,
            )

            self.store = FeatureStore(plan["repo_path"])
            self.offline = OfflineRows(plan, self.store)
            self.online = online_writer(plan, self.store) if plan["online"] else None
            self.dead = DeadLetters(plan)
            self.letter = row_dead_letter
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline")
            metrics = function_context.get_metric_group()
            self.late_metric = metrics.counter("late_events")
            self.error_metric = metrics.counter("transform_errors")
            self.status = StatusFile(state_dir, "sink")

        def is_deterministic(self):  # it writes the stores
            return False

        def eval(self, *series):
            n = next(len(s) for s in series if isinstance(s, pd.Series))
            # A constant argument (e.g. the null created time of a source without one) is a scalar.
            cols = [s.tolist() if isinstance(s, pd.Series) else [s] * n for s in series]
            errors, late_flags = cols[-2], cols[-1]
            rows, items, letters = [], [], []
            n_failed = n_late = 0
            for i in range(n):
                row = {}
                for j, name in enumerate(out_names):
                    v = cols[j][i]
                    if v is not None:
                        to = convert[out_types[name]]
                        v = ev.parse_time(v, name) if to is None else to(v)
                    row[name] = v
                partition, offset = int(cols[n_out][i]), int(cols[n_out + 1][i])
                if errors[i] is not None:  # the filter or a transform failed on this event
                    letters.append(self.letter(plan, f"transform: {errors[i]}", row, partition, offset))
                    n_failed += 1
                    continue
                if late_flags[i]:
                    letters.append(self.letter(
                        plan, f"late: event time {row['event_timestamp'].isoformat()} is more than the allowed "
                              f"lateness ({kafka['allowed_lateness_ms']} ms) behind the watermark",
                        row, partition, offset))
                    n_late += 1
                    continue
                kafka_ts = cols[n_out + 2][i]
                rows.append(row)
                items.append((row, partition, offset, None if kafka_ts is None else _epoch_ms(kafka_ts)))
            if letters:
                self.dead.send(letters)
                if n_late:
                    self.late_metric.inc(n_late)
                    self.status.bump("late_events", n_late)
                if n_failed:
                    self.error_metric.inc(n_failed)
                    self.status.bump("transform_errors", n_failed)
            if items:
                # The offline commit (Parquet file, fsyncs) and the online write overlap; both finish
                # before this call returns, so before the checkpoint that covers these events.
                offline = self.pool.submit(self.offline.append, [(r, p, o) for r, p, o, _ in items])
                try:
                    if self.online is not None:
                        stored, skipped = self.online.write(items)
                        self.status.bump("online_written", stored)
                        self.status.bump("online_skipped_stale", skipped)
                finally:
                    written = offline.result()
                self.status.bump("offline_rows", written)
                self.status.bump("admitted", len(items))
                self.status.bump("sink_batches")
                self.status.set("last_write", time.time())
            return pd.Series([1] * n, dtype="int64")

        def close(self):
            self.pool.shutdown()
            self.status.write()
            self.store.close()

    t_env.create_temporary_function("fs_parse", udf(Parse(), result_type=DataTypes.STRING(), func_type="pandas"))
    # BIGINT, not BOOLEAN: Calcite rewrites a boolean call over a CASE argument (the error column is
    # one) into a CASE over two calls (ReduceExpressionsRule.pushPredicateIntoCase), and the Python
    # operator then runs the sink twice per event.
    t_env.create_temporary_function("fs_sink", udf(Sink(), result_type=DataTypes.BIGINT(), func_type="pandas"))
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE `fs_kafka` (`value` BYTES, `partition` INT METADATA VIRTUAL, "
        "`offset` BIGINT METADATA VIRTUAL, `record_time` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL, "
        f"`{ROWTIME}` AS {rowtime_expression(plan['timestamp_json'])}, "
        f"WATERMARK FOR `{ROWTIME}` AS `{ROWTIME}` - {interval_sql(kafka['watermark_delay_ms'])}) "
        f"WITH ('connector' = 'kafka', 'topic' = {quote_string(kafka['topic'])}, "
        f"'properties.bootstrap.servers' = {quote_string(kafka['bootstrap_servers'])}, "
        f"'properties.group.id' = {quote_string(kafka['group_id'])}, 'scan.startup.mode' = 'group-offsets', "
        "'properties.auto.offset.reset' = 'earliest', 'properties.commit.offsets.on.checkpoint' = 'true', "
        "'scan.topic-partition-discovery.interval' = '10 s', 'format' = 'raw')")
    t_env.execute_sql("CREATE TEMPORARY TABLE `fs_done` (`ok` BIGINT) WITH ('connector' = 'blackhole')")
    t_env.create_temporary_view("fs_parsed", t_env.sql_query(
        f"SELECT fs_parse(`value`, `partition`, `offset`) AS `p`, `partition`, `offset`, `record_time`, "
        f"`{ROWTIME}` FROM `fs_kafka`"))
    t_env.create_temporary_view("events", t_env.sql_query(events_view_sql(plan)))
    args = ", ".join([f"CAST(`{c}` AS STRING)" for c in out_names] + [f"`{c}`" for c in (*META_COLUMNS, ERROR)])
    late = (f"COALESCE(`{ROWTIME}` < CURRENT_WATERMARK(`{ROWTIME}`) - {interval_sql(kafka['allowed_lateness_ms'])}, "
            "FALSE)")
    insert = f"INSERT INTO `fs_done` SELECT fs_sink({args}, {late}) FROM ({plan['select']})"
    return t_env, insert


def _epoch_ms(value: Any) -> int:
    """A Kafka record time as pandas hands it over (Timestamp or datetime) -> epoch milliseconds."""
    from datetime import timezone

    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featurestore.streaming.job")
    parser.add_argument("plan", help="plan.json written by `featurestore stream start`")
    parser.add_argument("--restore", help="checkpoint directory to resume from")
    args = parser.parse_args(argv)
    plan_path = Path(args.plan).resolve()
    plan = json.loads(plan_path.read_text())
    from featurestore.streaming import jars

    t_env, insert = build(plan, str(plan_path.parent), args.restore, str(jars.connector_jar(fetch_missing=False)))
    result = t_env.execute_sql(insert)
    if not (plan.get("stream_engine") or {}).get("jobmanager"):
        result.wait()  # the local mini-cluster lives as long as this process; a cluster job is detached
    return 0


if __name__ == "__main__":
    sys.exit(main())
