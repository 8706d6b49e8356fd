"""Materialization: copy a view's rows for an interval into the offline store and the online store.

Rows are read through the same path exports use (the engine over the view's source), one bounded
time chunk at a time, so memory does not grow with the interval. Each chunk replaces its interval in
the offline store (so reruns do not duplicate) and upserts the online store, whose writes are
event-time monotonic (so reruns and overlapping runs change nothing); the two writes of a chunk run
side by side, while the next chunk is read, and the chunk's statistics are added to the run's
(``featurestore.quality_stats``) beside them. Each view's run ends with its quality record
(``featurestore.quality_runs``).
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Iterator, Sequence

import pyarrow as pa

from featurestore import checks, coverage, quality_runs, timestamps, values
from featurestore.checks import CheckCounts
from featurestore.damage import damage_named
from featurestore.definitions import FeatureView
from featurestore.errors import CheckFailedError, FeatureViewNotFound, InvalidInputError
from featurestore.ports.engine import (
    CAP_CLUSTER_WRITES,
    CHECK_COLUMN,
    CREATED_TS,
    EVENT_TS,
    ClusterMaterialization,
    ViewData,
    ViewJoin,
)
from featurestore.quality_runs import QualityRun
from featurestore.quality_stats import RunStatistics
from featurestore.retrieval import MIN_TIME, source_data, stored_columns

if TYPE_CHECKING:
    from featurestore.store import FeatureStore

UTC = timezone.utc
CHUNK = timedelta(days=1)


@dataclass
class ViewResult:
    view: str
    start: datetime
    end: datetime
    rows: int = 0
    online_written: int = 0
    online_skipped: int = 0
    checks: list[dict] = field(default_factory=list)  # the run's check outcomes (featurestore.checks)
    rows_in: int | None = None  # rows the checks judged (before drops), when the view has checks


@dataclass
class MaterializeResult:
    views: list[ViewResult] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(v.rows for v in self.views)


def as_utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _chunks(lo: datetime, hi: datetime, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Half-open chunks covering [start, end), one per UTC day of the data between lo and hi."""
    day = lo.replace(hour=0, minute=0, second=0, microsecond=0)
    cursor = start
    while cursor < end:
        day = max(day, cursor.replace(hour=0, minute=0, second=0, microsecond=0))
        nxt = day + CHUNK if day + CHUNK > cursor else cursor + CHUNK
        if nxt > hi:
            nxt = end  # nothing after the last row: one chunk to the end of the interval
        nxt = min(nxt, end)
        yield cursor, nxt
        cursor = nxt


def _views(store: "FeatureStore", names: Sequence[str] | None) -> list[FeatureView]:
    views = store.catalog().views
    if names is None:
        return [views[n] for n in sorted(views)]
    missing = [n for n in names if n not in views]
    if missing:
        raise FeatureViewNotFound(f"feature view {missing[0]!r} is not in the registry")
    return [views[n] for n in names]


@contextmanager
def _progress(enabled: bool | None):
    """A rich progress bar on a terminal (or when asked), nothing otherwise."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=False) as bar:
        yield bar


def _state_join(view: FeatureView, data: ViewData) -> ViewJoin:
    """An aggregation view as the engine's ``aggregation_state`` takes it."""
    types = {f.name: f.dtype.to_arrow() for f in view.schema}
    return ViewJoin(name=view.name, keys=tuple((k, k, t) for k, t in stored_columns(view)[0]),
                    features=tuple((a.name, a.name, types[a.name]) for a in view.aggregations),
                    ttl_seconds=view.ttl_seconds, data=data, aggregations=tuple(view.aggregations),
                    event_columns=tuple((c.name, c.dtype) for c in view.event_columns))


def _check_times(view: FeatureView, lo, hi) -> None:
    """The source's event times (their bounds in the interval) lie in the accepted range
    (``featurestore.timestamps``), else an error naming the view, source and column; an engine may
    give a time past year 9999 as text."""
    for t in (lo, hi):
        if t is None:
            continue
        if isinstance(t, datetime):
            try:
                timestamps.check_instant(t, "")
                continue
            except InvalidInputError:
                pass
        source = view.batch_source
        raise InvalidInputError(
            f"feature view {view.name!r}: source {source.name!r} column {source.timestamp_field!r} has "
            f"{t.isoformat() if isinstance(t, datetime) else t}, outside the accepted time range "
            f"{timestamps.INPUT_RANGE}; correct those rows, or materialize an interval without them")


def materialize_view(store: "FeatureStore", view: FeatureView, start: datetime, end: datetime, *,
                     online: bool, progress=None) -> ViewResult:
    """Copy one view's rows of [start, end) to the stores and record the run's quality; a damaged file
    it meets (of the source or the offline table) is named with what repairs it."""
    started = datetime.now(UTC)
    # A cluster engine's executors see the rows, this process does not: its runs have no statistics.
    statistics = RunStatistics(stored_columns(view)[1], EVENT_TS) \
        if store.config.quality.statistics and CAP_CLUSTER_WRITES not in store.engine.capabilities else None
    with damage_named(store, [view]):
        result = _materialize_view(store, view, start, end, online=online, progress=progress,
                                   statistics=statistics)
    ended = datetime.now(UTC)
    quality_runs.record(store, view.name, QualityRun(
        "materialize", started, ended, rows_in=result.rows if result.rows_in is None else result.rows_in,
        rows_written=result.rows, checks=result.checks,
        stats=None if statistics is None else statistics.result(ended)))
    return result


def _materialize_view(store: "FeatureStore", view: FeatureView, start: datetime, end: datetime, *,
                      online: bool, progress=None, statistics: RunStatistics | None = None) -> ViewResult:
    started = datetime.now(UTC)
    keys, stored = stored_columns(view)
    features = [(c, c, t) for c, t in stored]
    data, _, _ = source_data(store, view, [k for k, _ in keys] + [c for c, _ in stored], start, end)
    counts, outcomes = _judge(store, view, data, start, end, started) if view.checks else (None, [])
    result = _write_rows(store, view, data, keys, features, start, end, online=online, progress=progress,
                         statistics=statistics)
    if counts is not None:
        result.checks = outcomes
        result.rows_in = counts.rows
        if any(o["on_fail"] == "drop" and o["rows_failed"] for o in outcomes) or \
                view.name in store.offline_store.quarantine.views():
            _quarantine(store, view, data, keys, features, start, end, started)
    return result


def _judge(store: "FeatureStore", view: FeatureView, data: ViewData, start: datetime, end: datetime,
           started: datetime) -> tuple[CheckCounts, list[dict]]:
    """The view's checks over the run's rows (one pass of the engine, before anything is written);
    a failing ``fail`` check stops the run here, recorded, with CheckFailedError."""
    unchecked = replace(data, checks=(), appended=())  # appended rows were checked where they came in
    counts = store.engine.check_counts(unchecked, [(c.name, c.expr) for c in view.row_checks], start, end)
    results = checks.outcomes(view.checks, counts, min(end, started))
    message = checks.failures(view.name, results)
    if message is not None:
        quality_runs.record(store, view.name, QualityRun(kind="materialize", started=started,
                                                         ended=datetime.now(UTC), rows_in=counts.rows,
                                                         rows_written=0, checks=results))
        raise CheckFailedError(f"{message}: nothing was written for {start.isoformat()} .. {end.isoformat()}",
                               view=view.name, checks=results)
    return counts, results


def _quarantine(store: "FeatureStore", view: FeatureView, data: ViewData, keys, features, start: datetime,
                end: datetime, started: datetime) -> None:
    """The rows the view's drop checks kept out of [start, end), each with the first check it failed,
    in the view's quarantine table (replacing the interval's, so a rerun does not repeat them)."""
    rows = store.engine.read_rows(replace(data, quarantined=True, appended=()), keys,
                                  [*features, (CHECK_COLUMN, "check", pa.string())], start, end)
    rows = rows.append_column("quarantined_at", pa.array([started] * rows.num_rows, pa.timestamp("us", tz="UTC")))
    store.offline_store.quarantine.write(view.name, rows, start, end, EVENT_TS)


def _write_rows(store: "FeatureStore", view: FeatureView, data: ViewData, keys, features, start: datetime,
                end: datetime, *, online: bool, progress=None, statistics: RunStatistics | None = None) -> ViewResult:
    """The rows of [start, end) written to the offline store and (``online``) the online store."""
    result = ViewResult(view.name, start, end)
    lo, hi = store.engine.time_bounds(data, start, end)
    _check_times(view, lo, hi)
    chunks = list(_chunks(lo, hi, start, end)) if lo is not None else [(start, end)]
    task = progress.add_task(view.name, total=len(chunks)) if progress else None
    ttl = None if view.ttl_seconds is None else timedelta(seconds=view.ttl_seconds)
    aggregated = view.aggregated
    write_online = online and view.online
    if CAP_CLUSTER_WRITES in store.engine.capabilities:  # its executors do the writes
        return _materialize_on_cluster(store, view, data, keys, features, start, end, ttl, write_online, result)
    # Per chunk, the offline write (Parquet encoding, in Arrow's C++ without the GIL) runs on a helper
    # thread while this one writes the online store (mostly waiting on the backend): the two are
    # independent. Meanwhile the other helper reads the next chunk, so the online store is not left
    # idle between chunks; memory stays bounded at two chunks (and the last one's statistics). A third
    # helper adds each chunk's statistics (numpy and Arrow, mostly without the GIL too) while the
    # loop goes on.
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="materialize") as helpers:
        def read(i: int):
            return helpers.submit(store.engine.read_rows, data, keys, features, *chunks[i]) if i < len(chunks) else None

        upcoming, counted = read(0), None
        if write_online and not aggregated:
            store.online_store  # noqa: B018 - load the backend (imports, connection) while the first chunk is read
        for i, (chunk_start, chunk_end) in enumerate(chunks):
            rows = upcoming.result()
            offline = helpers.submit(store.offline_store.write, view.name, rows, chunk_start, chunk_end, EVENT_TS)
            if statistics is not None:  # after the previous chunk's (usually long done): one at a time
                if counted is not None:
                    counted.result()
                counted = helpers.submit(statistics.add, rows)
            upcoming = read(i + 1)
            try:
                if write_online and rows.num_rows and not aggregated:
                    # A batch source's NaN means missing: stored online as null (featurestore.values).
                    written = store.online_store.write(view.name, [k for k, _ in keys], values.without_nan(rows),
                                                       event_ts_column=EVENT_TS, created_ts_column=CREATED_TS,
                                                       ttl=ttl)
                    result.online_written += written.written
                    result.online_skipped += written.skipped_stale
            finally:
                offline.result()  # its error first, if both failed: the offline store is the record
            result.rows += rows.num_rows
            if progress:
                progress.advance(task)
        if counted is not None:
            counted.result()
    if write_online and aggregated and lo is not None:
        states = store.engine.aggregation_state(_state_join(view, data), start, end)
        for batch in states.to_batches(max_chunksize=100_000):
            written = store.online_store.write(view.name, [k for k, _ in keys], pa.Table.from_batches([batch]),
                                               event_ts_column=EVENT_TS, created_ts_column=CREATED_TS, ttl=ttl)
            result.online_written += written.written
            result.online_skipped += written.skipped_stale
    return result


def _materialize_on_cluster(store: "FeatureStore", view: FeatureView, data: ViewData, keys, features,
                            start: datetime, end: datetime, ttl: timedelta | None, online: bool,
                            result: ViewResult) -> ViewResult:
    """The whole interval in one job of the engine's cluster (``Engine.materialize``)."""
    job = ClusterMaterialization(
        view=view.name, data=data, keys=tuple(keys), features=tuple(features), start=start, end=end, ttl=ttl,
        repo_path=str(store.repo_path), project=store.config.project,
        offline_store=dict(store.config.offline_store),
        online_store=dict(store.config.online_store) if online else None,
        aggregation=_state_join(view, data) if view.aggregated else None)
    result.rows, written = store.engine.materialize(job)
    if written is not None:
        result.online_written, result.online_skipped = written.written, written.skipped_stale
    return result


def materialize(store: "FeatureStore", start_date, end_date, feature_views: Sequence[str] | None, *,
                online: bool = True, progress: bool | None = None) -> MaterializeResult:
    start = as_utc(start_date) or MIN_TIME
    end = as_utc(end_date)
    if end is None or end <= start:
        raise InvalidInputError(f"materialize needs start < end, got {start_date} .. {end_date}")
    out = MaterializeResult()
    with _progress(progress) as bar:
        for view in _views(store, feature_views):
            out.views.append(materialize_view(store, view, start, end, online=online, progress=bar))
            coverage.record(store, view.name, start, end)
    return out


def materialize_incremental(store: "FeatureStore", end_date, feature_views: Sequence[str] | None, *,
                            online: bool = True, progress: bool | None = None) -> MaterializeResult:
    end = as_utc(end_date)
    out = MaterializeResult()
    with _progress(progress) as bar:
        for view in _views(store, feature_views):
            start = coverage.watermark(store, view.name)
            if start is None:
                ttl = view.ttl_seconds
                start = MIN_TIME if ttl is None else end - timedelta(seconds=ttl)
            if start >= end:
                continue
            out.views.append(materialize_view(store, view, start, end, online=online, progress=bar))
            coverage.record(store, view.name, start, end)
    return out
