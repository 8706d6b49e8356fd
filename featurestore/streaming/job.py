"""The stream job: one feature view's Kafka events through Flink into the online and offline stores.

Runs in ``.venv-flink`` (PyFlink 2.2), started by ``featurestore stream start`` with a blueprint file
(``featurestore.streaming.blueprint``)::

    .venv-flink/bin/python -m featurestore.streaming.job <state_dir>/blueprint.json [--restore <checkpoint>]

One Flink SQL pipeline (parallelism 1, so every step sees events in offset order)::

    Kafka topic (raw bytes + partition, offset, record time)
      -> fs_parse (Python, a batch at a time): JSON -> the blueprint's typed columns as a JSON array, or
         ``E`` and the message's dead letter
      -> Flink SQL: typed columns out of the array, then the view's filter and transforms compiled from
         the IR by ``transforms.compile_flink`` with errors as values (a failing operation, e.g. an
         integer overflow, gives null and its message in ``__fs_error`` instead of failing the job,
         which would restart into the same event forever); the filter's outcome is a column, so no
         message is dropped before the sink
      -> fs_sink (Python, a batch at a time, ``featurestore.streaming.sink``): judges lateness against
         each partition's own watermark, sends dead letters (malformed, failed, late), writes the
         events online (monotonic; aggregation views fold them into each entity's state first) and
         appends them offline in one commit that records the offsets and watermarks it completes

The Python functions are vectorized (pandas UDFs): each call takes a batch of rows, so the cost per
event is a few Python operations, not a trip between the JVM and Python per operator. Flink's own
watermarks are not used: lateness is decided in the sink (``featurestore.streaming.progress`` says why).

Exactly once, end to end: Flink checkpoints hold the Kafka offsets. A Python function call finishes
before its batch's bundle does, and a bundle finishes before a checkpoint barrier passes, so every
message a checkpoint covers has been committed by the sink. After a crash the job restarts from the
last checkpoint (``--restore``, or in-process by the restart strategy) and replays later messages; the
sink skips those its last commit covers and decides the rest again exactly as before.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from featurestore.store import FeatureStore
from featurestore.streaming import events as ev
from featurestore.streaming import jars
from featurestore.streaming.blueprint import CHECK_PREFIX, KAFKA_TS, SINK_META, Blueprint, events_view_sql
from featurestore.streaming.config import stream_engine_config
from featurestore.streaming.sink import EventSink
from transforms.compile_flink import quote_string


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


def build(blueprint: Blueprint, state_dir: str, restore: str | None, connector_jar: str) -> Any:
    """The job's TableEnvironment and its INSERT statement (not yet executed)."""
    t_env = _table_environment(blueprint, state_dir, restore, connector_jar)
    _register_functions(t_env, blueprint, state_dir)
    return t_env, _pipeline_sql(t_env, blueprint)


def _table_environment(blueprint: Blueprint, state_dir: str, restore: str | None, connector_jar: str) -> Any:
    """A streaming TableEnvironment set up for the job: checkpoints, restarts, Python bundles."""
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    cfg = stream_engine_config(blueprint.stream_engine)
    conf = Configuration()
    settings = {
        "pipeline.name": f"featurestore {blueprint.project}.{blueprint.view}",
        "pipeline.jars": f"file://{connector_jar}",
        "parallelism.default": str(cfg.parallelism),
        "table.local-time-zone": "UTC",
        "python.fn-execution.bundle.time": str(cfg.bundle_time_ms),
        "python.execution-mode": cfg.execution_mode,
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
    return TableEnvironment.create(EnvironmentSettings.new_instance().in_streaming_mode()
                                   .with_configuration(conf).build())


def _register_functions(t_env: Any, blueprint: Blueprint, state_dir: str) -> None:
    """The job's two vectorized Python functions: ``fs_parse`` and ``fs_sink``."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    t_env.create_temporary_function("fs_parse", udf(_parse_function(blueprint, state_dir),
                                                    result_type=DataTypes.STRING(), func_type="pandas"))
    t_env.create_temporary_function("fs_sink", udf(_sink_function(blueprint, state_dir),
                                                   result_type=DataTypes.BIGINT(), func_type="pandas"))


def _parse_function(blueprint: Blueprint, state_dir: str) -> Any:
    """``fs_parse``: Kafka records -> the blueprint's typed columns as JSON arrays."""
    import pandas as pd
    from pyflink.table.udf import ScalarFunction

    columns, topic, view = blueprint.columns, blueprint.kafka.topic, blueprint.view

    class Parse(ScalarFunction):
        """A batch of Kafka records -> typed JSON arrays; a bad one becomes ``E`` and its dead letter,
        which the sink sends (the one place that knows what was sent before a restart)."""

        def open(self, function_context):
            self.status = StatusFile(state_dir, "parse")

        def is_deterministic(self):  # never folded or run twice by the planner
            return False

        def eval(self, values, partitions, offsets):
            out = []
            for raw, partition, offset in zip(values, partitions, offsets):
                try:
                    out.append(ev.dumps_values(ev.parse(raw, columns)))
                except ev.EventError as exc:
                    out.append("E" + ev.dead_letter(str(exc), raw, view=view, topic=topic,
                                                    partition=int(partition), offset=int(offset)))
            self.status.bump("events", len(out))
            return pd.Series(out, dtype=object)

        def close(self):
            self.status.write()

    return Parse()


def _sink_function(blueprint: Blueprint, state_dir: str) -> Any:
    """``fs_sink``: the SQL's rows -> ``EventSink.handle``, with the job's counters."""
    import pandas as pd
    from pyflink.table.udf import ScalarFunction

    kafka_ts_index = len(blueprint.output_columns) + SINK_META.index(KAFKA_TS)

    class Sink(ScalarFunction):
        """A batch of messages -> dead letters, online writes, one offline commit (``streaming.sink``)."""

        def open(self, function_context):
            self.store = FeatureStore(blueprint.repo_path)
            self.sink = EventSink(blueprint, self.store)
            metrics = function_context.get_metric_group()
            self.metrics = {name: metrics.counter(name) for name in ("dead_letters", "late_events",
                                                                     "transform_errors", "check_dropped")}
            self.status = StatusFile(state_dir, "sink")

        def is_deterministic(self):  # it writes the stores
            return False

        def eval(self, *series):
            n = next(len(s) for s in series if isinstance(s, pd.Series))
            # A constant argument (e.g. the null created time of a source without one) is a scalar.
            cols = [s.tolist() if isinstance(s, pd.Series) else [s] * n for s in series]
            cols[kafka_ts_index] = _epoch_ms(series[kafka_ts_index])
            out = self.sink.handle(cols)
            for name, value in (("dead_letters", out.malformed), ("late_events", out.late),
                                ("transform_errors", out.failed), ("check_dropped", out.check_dropped)):
                if value:
                    self.metrics[name].inc(value)
                    self.status.bump(name, value)
            for name in ("replayed", "filtered", "online_written", "online_skipped_stale", "offline_rows",
                         "admitted", "letters_resent_skipped", "check_warned"):
                if getattr(out, name):
                    self.status.bump(name, getattr(out, name))
            for check, n in out.check_failures.items():
                if n:
                    self.status.bump(f"check_failed:{check}", n)
            if out.admitted or out.malformed or out.late or out.failed or out.filtered or out.check_dropped:
                self.status.bump("sink_batches")
                self.status.set("last_write", time.time())
            return pd.Series([1] * n, dtype="int64")

        def close(self):
            self.sink.close()
            self.status.write()
            self.store.close()

    return Sink()


def _pipeline_sql(t_env: Any, blueprint: Blueprint) -> str:
    """Declares the Kafka source and the views over it; returns the INSERT that runs the pipeline."""
    kafka = blueprint.kafka
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE `fs_kafka` (`value` BYTES, `partition` INT METADATA VIRTUAL, "
        "`offset` BIGINT METADATA VIRTUAL, `record_time` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL) "
        f"WITH ('connector' = 'kafka', 'topic' = {quote_string(kafka.topic)}, "
        f"'properties.bootstrap.servers' = {quote_string(kafka.bootstrap_servers)}, "
        f"'properties.group.id' = {quote_string(kafka.group_id)}, 'scan.startup.mode' = 'group-offsets', "
        "'properties.auto.offset.reset' = 'earliest', 'properties.commit.offsets.on.checkpoint' = 'true', "
        "'scan.topic-partition-discovery.interval' = '10 s', 'format' = 'raw')")
    t_env.execute_sql("CREATE TEMPORARY TABLE `fs_done` (`ok` BIGINT) WITH ('connector' = 'blackhole')")
    t_env.create_temporary_view("fs_parsed", t_env.sql_query(
        "SELECT fs_parse(`value`, `partition`, `offset`) AS `p`, `partition`, `offset`, `record_time` "
        "FROM `fs_kafka`"))
    t_env.create_temporary_view("events", t_env.sql_query(events_view_sql(blueprint)))
    checks = [f"`{CHECK_PREFIX}{i}`" for i in range(len(blueprint.checks))]
    args = ", ".join([f"CAST(`{c}` AS STRING)" for c in blueprint.output_columns] + [f"`{c}`" for c in SINK_META]
                     + checks)
    insert = f"INSERT INTO `fs_done` SELECT fs_sink({args}) FROM ({blueprint.select})"
    return insert


def _epoch_ms(times: Any) -> list[int | None]:
    """Kafka record times as pandas hands them over -> epoch milliseconds (vectorized)."""
    import pandas as pd

    ts = pd.to_datetime(times, utc=True)
    missing = ts.isna().to_numpy()
    ms = (ts.array.asi8 // 1_000_000).tolist()
    return [None if m else v for v, m in zip(ms, missing)] if missing.any() else ms


def _copy(source: Any, target: Any) -> None:
    """Copy as bytes arrive (not 64 KiB at a time) until the source closes."""
    for chunk in iter(lambda: source.read1(65536), b""):
        target.write(chunk)
        target.flush()


def _leave_traces() -> None:
    """Make a death visible in job.log: the Python stacks on a fatal signal or SIGTERM (which otherwise
    end the process without a word), and the JVM's standard error, which PyFlink pipes to nobody (a
    JVM that writes more than a pipe holds would also block)."""
    faulthandler.enable()
    faulthandler.register(signal.SIGTERM, chain=True)
    from pyflink import java_gateway

    launch = java_gateway.launch_gateway_server_process

    def launch_and_drain(*args: Any, **kwargs: Any) -> Any:
        proc = launch(*args, **kwargs)
        threading.Thread(target=_copy, args=(proc.stderr, sys.stderr.buffer), name="jvm-stderr",
                         daemon=True).start()
        return proc

    java_gateway.launch_gateway_server_process = launch_and_drain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featurestore.streaming.job")
    parser.add_argument("blueprint", help="blueprint.json written by `featurestore stream start`")
    parser.add_argument("--restore", help="checkpoint directory to resume from")
    args = parser.parse_args(argv)
    _leave_traces()
    path = Path(args.blueprint).resolve()
    blueprint = Blueprint.from_json(path.read_text())
    t_env, insert = build(blueprint, str(path.parent), args.restore, str(jars.connector_jar(fetch_missing=False)))
    result = t_env.execute_sql(insert)
    if not blueprint.stream_engine.get("jobmanager"):
        result.wait()  # the local mini-cluster lives as long as this process; a cluster job is detached
    return 0


if __name__ == "__main__":
    sys.exit(main())
