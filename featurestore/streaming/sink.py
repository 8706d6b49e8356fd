"""What the stream job does with each batch of messages, in plain Python (testable without Flink).

The job's SQL hands the sink every message it read, in offset order per partition: the view's output
columns (as text), then ``blueprint.SINK_META`` (partition, offset, Kafka record time, the dead letter of a
message the parser rejected, whether the view's filter keeps the event, why a transform failed), then
one column per row check of the view (whether the event fails it). For
each message not handled before (``progress.PartitionProgress``) the sink decides, in this order:

1. rejected by the parser (malformed): dead letter;
2. the view's filter or transforms failed on it: dead letter (``transform: <message>``);
3. the filter drops it: nothing (it still moves its partition's watermark);
4. it fails one of the view's drop or fail checks (``featurestore.checks``; a stream cannot stop, so
   ``fail`` acts as ``drop``): dead letter (``check <name> failed``, the first such check); failures of
   warn checks are only counted;
5. late (behind its partition's watermark by more than the allowed lateness): dead letter;
6. otherwise it is applied to both stores.

Then, in this order: the dead letters are produced (and acknowledged), the events are written online
(monotonic, and folded into aggregation states that remember the offsets they hold), and the offline
rows (written meanwhile as files no reader sees yet) are appended in one commit that also records the
batch's offsets and the partitions' progress. That
commit is the batch's end. After it, off the batch's path, the batch's quality record (its statistics,
``featurestore.quality_stats``) is appended to the view's quality table: at most once, as a record
lost to a crash there is not worth a replay. After a crash the job resumes from its last Flink checkpoint (never past
the commit), skips what the commit covers and decides the rest again, the same way. Dead letters a job
sent after its last commit are found in the dead-letter topic when it starts and not sent again; online
writes of those events are idempotent. So every message lands once: applied, or dead-lettered.

A batch whose events met the view's row checks appends one quality record (``featurestore.quality_runs``,
kind ``stream``) after its commit: what each check counted (run checks such as ``row_count`` are judged by
materialization runs only; a batch of a stream is no run).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from featurestore import quality_runs
from featurestore.checks import stream_outcomes
from featurestore.ports.engine import EVENT_TS
from featurestore.quality_runs import QualityRun
from featurestore.quality_stats import RunStatistics
from featurestore.streaming import events as ev
from featurestore.streaming.blueprint import Blueprint
from featurestore.streaming.progress import PartitionProgress
from featurestore.streaming.writers import DeadLetters, OfflineRows, online_writer, row_dead_letter
from featurestore.timestamps import from_us, to_us

log = logging.getLogger(__name__)


def _time_us(text: str) -> int:
    """Flink SQL's text of a TIMESTAMP(6) (``YYYY-MM-DD HH:MM:SS[.ffffff]``, UTC) -> epoch microseconds."""
    try:
        return to_us(datetime.fromisoformat(text))
    except ValueError:
        return to_us(ev.parse_time(text, "time"))


# Values reach the sink as text (pandas would turn a null integer into NaN, and NaN into null); times
# become epoch microseconds, which Arrow and the aggregation states take as they are.
_CONVERT = {"Int64": int, "Int32": int, "Float64": float, "Float32": float, "String": str,
            "Bool": lambda v: v.upper() == "TRUE", "Timestamp": _time_us}


@dataclass
class BatchOutcome:
    """What one batch did, for the job's counters."""

    replayed: int = 0
    malformed: int = 0
    failed: int = 0
    filtered: int = 0
    late: int = 0
    admitted: int = 0
    online_written: int = 0
    online_skipped_stale: int = 0
    offline_rows: int = 0
    letters_resent_skipped: int = 0
    checked: int = 0  # events the view's row checks judged (those its filter keeps)
    check_dropped: int = 0  # dead-lettered by a drop or fail check
    check_warned: int = 0  # failing only warn checks: written all the same
    check_failures: dict[str, int] = field(default_factory=dict)  # per check, the events failing it


class EventSink:
    """The job's last step for one view (see the module docs)."""

    def __init__(self, blueprint: Blueprint, store: Any, *, dead_letters: DeadLetters | None = None):
        self.blueprint = blueprint
        self.store = store
        self.names = blueprint.output_columns
        self.converters = [_CONVERT[blueprint.output_types[n].name] for n in self.names]
        self.times = {n for n in self.names if blueprint.output_types[n].name == "Timestamp"}
        self.store = store
        self.offline = OfflineRows(blueprint, store)
        self.statistics = store.config.quality.statistics
        self.online = online_writer(blueprint, store) if blueprint.online else None
        self.dead = dead_letters or DeadLetters(blueprint)
        offsets, committed = self.offline.committed()
        kafka = blueprint.kafka
        self.progress = PartitionProgress.from_committed(
            offsets, committed, kafka.watermark_delay_ms * 1000, kafka.allowed_lateness_ms * 1000)
        self.dead.positions = {int(p): int(o) for p, o in (committed.get("dead_letters") or {}).items()}
        self.already_sent = self.dead.sent_since(dict(self.dead.positions))
        # One thread for the offline files: staging a batch's rows, compacting after a commit.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline")

    def _row(self, cols: list[list[Any]], i: int) -> dict[str, Any]:
        row = {}
        for j, name in enumerate(self.names):
            v = cols[j][i]
            row[name] = None if v is None else self.converters[j](v)
        return row

    def _letter(self, reason: str, row: dict[str, Any], partition: int, offset: int) -> str:
        shown = {k: (from_us(v) if k in self.times and v is not None else v) for k, v in row.items()}
        return row_dead_letter(self.blueprint.view, self.blueprint.kafka.topic, reason, shown, partition, offset)

    def handle(self, cols: list[list[Any]]) -> BatchOutcome:
        """One batch: ``cols`` are the SQL's columns (output columns, then ``blueprint.SINK_META``) as lists;
        the Kafka record times as epoch milliseconds."""
        started = datetime.now(timezone.utc)
        n_out = len(self.names)
        partitions, offsets, kafka_times, bad, keep, errors = cols[n_out:n_out + 6]
        checks = self.blueprint.checks
        fails = cols[n_out + 6:n_out + 6 + len(checks)]
        out = BatchOutcome(check_failures=dict.fromkeys((name for name, _ in checks), 0))
        letters: list[tuple[int, int, str]] = []
        items: list[tuple[dict[str, Any], int, int, int | None]] = []
        spans: dict[int, tuple[int, int]] = {}
        progress = self.progress
        late_ms = self.blueprint.kafka.allowed_lateness_ms
        for i in range(len(partitions)):
            p, o = int(partitions[i]), int(offsets[i])
            if progress.handled(p, o):
                out.replayed += 1
                continue
            spans[p] = (spans[p][0] if p in spans else o, o)
            if bad[i] is not None:
                progress.advance(p, o, None)
                letters.append((p, o, bad[i]))
                out.malformed += 1
                continue
            row = self._row(cols, i)
            event_us = row[EVENT_TS]
            late = progress.is_late(p, event_us)
            progress.advance(p, o, event_us)
            if errors[i] is not None:
                letters.append((p, o, self._letter(f"transform: {errors[i]}", row, p, o)))
                out.failed += 1
            elif not keep[i]:
                out.filtered += 1
            elif checks and (failing := self._judge(out, fails, i)):
                letters.append((p, o, self._letter(f"check {failing} failed", row, p, o)))
                out.check_dropped += 1
            elif late:
                letters.append((p, o, self._letter(
                    f"late: event time {from_us(event_us).isoformat()} is more than the allowed lateness "
                    f"({late_ms} ms) behind the watermark of partition {p}", row, p, o)))
                out.late += 1
            else:
                items.append((row, p, o, kafka_times[i]))
        if not spans:
            return out
        # The offline rows are written (not yet visible) while the letters and online writes go out.
        staged = self.pool.submit(self._stage, [row for row, _, _, _ in items])
        try:
            fresh = [text for p, o, text in letters if (p, o) not in self.already_sent]
            out.letters_resent_skipped = len(letters) - len(fresh)
            if fresh:
                self.dead.send(fresh)
            if items and self.online is not None:
                out.online_written, out.online_skipped_stale = self.online.write(items)
        except BaseException:
            self.pool.submit(lambda: self.offline.discard(staged.result()[0]))
            raise
        committed = {**progress.to_json(), "dead_letters": {str(p): o for p, o in self.dead.positions.items()}}
        files, table = staged.result()
        out.offline_rows = self.offline.commit(files, spans, committed)
        out.admitted = len(items)
        handled = out.malformed + out.failed + out.filtered + out.check_dropped + out.late + out.admitted
        outcomes = stream_outcomes(self.blueprint.checks, out.checked, out.check_failures) if out.checked else []
        # Off this call's path, before the next batch's staging: the quality record, then compaction.
        self.pool.submit(self._record, table, started, handled, out.offline_rows, outcomes)
        if items:
            self.pool.submit(self.offline.compact)  # before the next batch's staging, off this call's path
        return out

    def _judge(self, out: BatchOutcome, fails: list[list[Any]], i: int) -> str | None:
        """Counts event ``i``'s check failures; the first drop or fail check it fails (its dead letter's
        reason), None when it is to be written."""
        out.checked += 1
        first = None
        warned = False
        for (name, on_fail), column in zip(self.blueprint.checks, fails):
            if column[i]:
                out.check_failures[name] += 1
                if on_fail == "warn":
                    warned = True
                elif first is None:
                    first = name
        if first is None and warned:
            out.check_warned += 1
        return first

    def _stage(self, rows: list[dict[str, Any]]) -> tuple[Any, pa.Table]:
        table = self.offline.table(rows)
        return self.offline.stage(table), table

    def _record(self, table: pa.Table, started: datetime, rows_in: int, rows_written: int,
                checks: list[dict]) -> None:
        """The committed batch's quality record: its check outcomes and statistics (after the commit: a
        crash before it is recorded loses the record, never repeats it; a failure is logged)."""
        view = self.blueprint.view
        try:
            statistics = None
            if self.statistics:
                statistics = RunStatistics([(f.name, f.dtype.to_arrow()) for f in self.blueprint.stored], EVENT_TS)
                statistics.add(table)
            ended = datetime.now(timezone.utc)
            quality_runs.record(self.store, view, QualityRun(
                "stream", started, ended, rows_in=rows_in, rows_written=rows_written, checks=checks,
                stats=None if statistics is None else statistics.result(ended)))
            self.store.offline_store.quality.compact(view)
        except Exception:
            log.exception("view %r: the quality record of a committed batch was not written", view)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
