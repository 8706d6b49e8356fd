"""The Parquet offline store: a view's history as date-partitioned Parquet files with atomic commits.

Layout under ``<root>/<project>/``::

    <view>/_manifest.json                       the live state of the view (the only thing readers trust)
    <view>/date=YYYY-MM-DD/part-<uuid>.parquet  data files, partitioned by UTC event date
    _locks/<view>.lock                          per-view writer lock (fcntl.flock), never deleted

The manifest lists the live files (relative path, date partition, row count, min/max event time),
the committed half-open intervals, the view's schema and timestamp column, and a commit version that
grows by one with every commit. A write puts its new rows in fresh, uniquely named files (fsynced, not
yet referenced), then, holding the view's lock, re-reads the manifest, rewrites what it must, and
replaces the manifest atomically (temp file + ``os.replace``). Readers only open files the manifest
lists, so a writer killed at any point leaves nothing partial visible; what it wrote is an orphan that
``vacuum()`` removes once older than a grace period. Files superseded by a commit are deleted right
after it.

The same two steps are public for writers that produce data files elsewhere (Spark executors, see
``featurestore.engines.spark_writes``): ``stage(view, table, ts_col)`` writes a table's rows as data
files that no manifest references yet, from any process that has the store's config, repo path and
project, and returns a small JSON-safe description of each file; ``commit_staged(view, staged, start,
end, ts_col)``, run once, commits them with exactly the replacement semantics of ``write``. Staged
files that are never committed are orphans like any other and ``vacuum()`` removes them.

Only long-stable pyarrow APIs are used (the streaming job runs this module with pyarrow 16).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from featurestore.errors import ConflictError, FeatureViewNotFound, InvalidInputError
from featurestore.ports.offline_store import CAP_COMPACT, CAP_FILES, CAP_STAGED_WRITE, OfflineStore
from featurestore.timestamps import TS, column_us

UTC = timezone.utc
MANIFEST = "_manifest.json"
FORMAT_VERSION = 1
ROW_GROUP_SIZE = 128 * 1024
COMPRESSION = "zstd"
DEFAULT_VACUUM_GRACE = timedelta(hours=1)
APPENDS_DIR = "_appends"


_VIEW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_PART_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_DATA_FILE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/part-[0-9a-f]{32}\.parquet$")


DICTIONARY_SAMPLE = 10_000


def _dictionary_columns(rows: pa.Table) -> list[str]:
    """Columns worth Parquet's dictionary encoding: at most half of an evenly spread sample of their
    values distinct. The writer would try a dictionary for every column and give up on the
    high-cardinality ones (measures, ids) only after hashing a dictionary page of them: for a
    million rows of random floats that was ~60% of the write's CPU, for nothing."""
    n = rows.num_rows
    if n <= DICTIONARY_SAMPLE:
        return rows.column_names
    picks = pa.array(np.linspace(0, n - 1, DICTIONARY_SAMPLE, dtype=np.int64))
    chosen = []
    for name, col in zip(rows.column_names, rows.columns, strict=True):
        try:
            distinct = pc.count_distinct(col.take(picks)).as_py()
        except pa.ArrowNotImplementedError:  # nested types: leave it to the writer
            distinct = 0
        if distinct <= DICTIONARY_SAMPLE // 2:
            chosen.append(name)
    return chosen


class ParquetOfflineStoreConfig(BaseModel):
    """``offline_store: {type: parquet, path: data/offline}``; a relative path resolves against the repo."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["parquet"] = "parquet"
    path: str = "data/offline"


# -- small helpers ---------------------------------------------------------------------------------
def _utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInputError(f"expected a datetime, got {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.isoformat()


def _parse(value: str) -> datetime:
    return _utc(datetime.fromisoformat(value))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _partition_inside(day: date, start: datetime, end: datetime) -> bool:
    """Whether the whole UTC day ``day`` lies inside [start, end)."""
    lo = _midnight(day)
    try:
        hi = lo + timedelta(days=1)
    except OverflowError:  # the last representable day: only "inside" if end is unbounded
        return start <= lo and end == datetime.max.replace(tzinfo=UTC)
    return start <= lo and hi <= end


def merge_intervals(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Sort half-open intervals and merge those that overlap or touch."""
    out: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted(i for i in intervals if i[0] < i[1]):
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _schema_to_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def _schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _normalise_ts_array(arr: pa.ChunkedArray | pa.Array, name: str) -> pa.ChunkedArray | pa.Array:
    """Any timestamp as timestamp[us, UTC] (``featurestore.timestamps``: naive = UTC, ns floored)."""
    return column_us(arr)


def _normalise_table(table: pa.Table) -> pa.Table:
    """Timestamp columns to timestamp[us, UTC]; schema metadata dropped."""
    names = table.column_names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInputError(f"column {dupes[0]!r} appears more than once in the table")
    columns = []
    for name, col in zip(names, table.columns, strict=True):
        columns.append(_normalise_ts_array(col, name) if pa.types.is_timestamp(col.type) else col)
    return pa.Table.from_arrays(columns, names=names)


def _storage_schema(table: pa.Table) -> pa.Schema:
    """The schema a view is fixed to: nullable fields, no metadata."""
    return pa.schema([pa.field(f.name, f.type, nullable=True) for f in table.schema])


# -- manifest ---------------------------------------------------------------------------------------
@dataclass
class _File:
    path: str  # relative to the view directory
    day: date
    rows: int
    min_ts: datetime | None
    max_ts: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "date": self.day.isoformat(), "rows": self.rows,
                "min": _iso(self.min_ts) if self.min_ts else None,
                "max": _iso(self.max_ts) if self.max_ts else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "_File":
        return cls(d["path"], date.fromisoformat(d["date"]), int(d["rows"]),
                   _parse(d["min"]) if d.get("min") else None, _parse(d["max"]) if d.get("max") else None)


@dataclass
class _Manifest:
    view: str
    generation: str
    version: int
    timestamp_column: str
    schema: pa.Schema
    files: list[_File] = field(default_factory=list)
    intervals: list[tuple[datetime, datetime]] = field(default_factory=list)
    # Per stream (e.g. a Kafka topic), per partition: the last offset whose rows are committed here.
    streams: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per stream: what its writer commits with its offsets (JSON-safe; a stream job keeps its
    # per-partition watermarks and dead-letter positions here), replaced by each commit that has it.
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "view": self.view,
            "generation": self.generation,
            "version": self.version,
            "timestamp_column": self.timestamp_column,
            "columns": [[f.name, str(f.type)] for f in self.schema],  # for humans; "schema" is the truth
            "schema": _schema_to_text(self.schema),
            "files": [f.to_json() for f in self.files],
            "intervals": [[_iso(lo), _iso(hi)] for lo, hi in self.intervals],
            "streams": self.streams,
            "progress": self.progress,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "_Manifest":
        if d.get("format") != FORMAT_VERSION:
            raise InvalidInputError(f"offline store manifest of view {d.get('view')!r} has unknown "
                                    f"format {d.get('format')!r}")
        return cls(
            view=d["view"], generation=d["generation"], version=int(d["version"]),
            timestamp_column=d["timestamp_column"], schema=_schema_from_text(d["schema"]),
            files=[_File.from_json(f) for f in d["files"]],
            intervals=[(_parse(lo), _parse(hi)) for lo, hi in d["intervals"]],
            streams={k: {p: int(o) for p, o in v.items()} for k, v in d.get("streams", {}).items()},
            progress=dict(d.get("progress", {})),
        )


@dataclass
class _Prepared:
    """A write's rows, validated and cut by date; files for whole-day partitions already on disk."""

    schema: pa.Schema
    written: list[_File]
    deferred: dict[date, pa.Table]  # rows of partially covered days, written under the lock


@dataclass(frozen=True)
class StagedAppend:
    """Rows of an append written as data files that no manifest lists yet (``stage_append``)."""

    view: str
    timestamp_column: str
    prepared: _Prepared

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.prepared.written)


# -- the store --------------------------------------------------------------------------------------
class ParquetOfflineStore(OfflineStore):
    """History of every feature view as Parquet files, with atomic, serialized commits.

    >>> import tempfile, pyarrow as pa
    >>> from datetime import datetime, timezone
    >>> repo = Path(tempfile.mkdtemp())
    >>> store = ParquetOfflineStore(ParquetOfflineStoreConfig(), repo, "demo")
    >>> t0, t1 = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc)
    >>> rows = pa.table({"id": [1, 2], "ts": pa.array([t0, t0], pa.timestamp("us", tz="UTC"))})
    >>> store.write("clicks", rows, t0, t1, "ts")
    >>> store.read("clicks").num_rows, store.covers("clicks", t0, t0)
    (2, True)
    """

    capabilities = frozenset({CAP_FILES, CAP_STAGED_WRITE, CAP_COMPACT})

    def __init__(self, config: ParquetOfflineStoreConfig, repo_path: Path, project: str):
        self.config = config
        raw = Path(os.path.expanduser(config.path))
        base = raw if raw.is_absolute() else Path(repo_path) / raw
        self.root = (base / project).resolve()
        self.project = project
        self._kind = "parquet"

    @property
    def appends(self) -> "ParquetOfflineStore":
        """The rows stream jobs and pushes append, one table per view beside the materialized one
        (under ``_appends/``). Materialization replaces intervals of the materialized table only, so an
        appended event stays part of the view's history whatever is rematerialized; exports read both."""
        store = ParquetOfflineStore.__new__(ParquetOfflineStore)
        store.config, store.project = self.config, self.project
        store.root, store._kind = self.root / APPENDS_DIR, "parquet-appends"
        return store

    def close(self) -> None:
        """Nothing to release (no open handles between calls)."""

    # -- paths and locking -----------------------------------------------------------------------
    def _view_dir(self, view: str) -> Path:
        if not isinstance(view, str) or not _VIEW_NAME.match(view):
            raise InvalidInputError(f"invalid feature view name for the offline store: {view!r}")
        return self.root / view

    @contextlib.contextmanager
    def _lock(self, view: str) -> Iterator[None]:
        lock_dir = self.root / "_locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / f"{view}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _load(self, view: str) -> _Manifest | None:
        path = self._view_dir(view) / MANIFEST
        try:
            with open(path, encoding="utf-8") as f:
                return _Manifest.from_json(json.load(f))
        except FileNotFoundError:
            return None

    def _require(self, view: str) -> _Manifest:
        manifest = self._load(view)
        if manifest is None:
            raise FeatureViewNotFound(f"feature view {view!r} has no data in the offline store "
                                      f"({self.root / view})")
        return manifest

    def _store_manifest(self, view_dir: Path, manifest: _Manifest) -> None:
        view_dir.mkdir(parents=True, exist_ok=True)
        tmp = view_dir / f"{MANIFEST}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest.to_json(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, view_dir / MANIFEST)
        _fsync_path(str(view_dir), directory=True)

    # -- writing data files ----------------------------------------------------------------------
    def _write_file(self, view_dir: Path, day: date, rows: pa.Table, ts_col: str) -> _File:
        part = view_dir / f"date={day.isoformat()}"
        part.mkdir(parents=True, exist_ok=True)
        rel = f"date={day.isoformat()}/part-{uuid.uuid4().hex}.parquet"
        path = view_dir / rel
        pq.write_table(rows, str(path), row_group_size=ROW_GROUP_SIZE, compression=COMPRESSION,
                       use_dictionary=_dictionary_columns(rows))
        _fsync_path(str(path))
        _fsync_path(str(part), directory=True)
        mm = pc.min_max(rows.column(ts_col))
        return _File(rel, day, rows.num_rows, mm["min"].as_py(), mm["max"].as_py())

    @staticmethod
    def _split_by_day(table: pa.Table, ts_col: str) -> Iterator[tuple[date, pa.Table]]:
        """Rows grouped by UTC date of ``ts_col``, sorted by time (one copy at most, only if unsorted)."""
        if table.num_rows == 0:
            return
        ts = table.column(ts_col)
        if table.num_rows > 1 and pc.any(pc.less(ts[1:], ts[:-1])).as_py():
            table = table.take(pc.sort_indices(table, sort_keys=[(ts_col, "ascending")]))
            ts = table.column(ts_col)
        days = pc.cast(ts, pa.date32())
        counts = pc.value_counts(days)  # in order of first appearance = ascending, since sorted
        offset = 0
        for day, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True):
            yield day, table.slice(offset, n)
            offset += n

    def _check_schema(self, view: str, table: pa.Table, manifest: _Manifest | None,
                      ts_col: str) -> tuple[pa.Table, pa.Schema]:
        """The table in the view's stored column order and types (or the schema it fixes)."""
        if manifest is None:
            schema = _storage_schema(table)
            return table.cast(schema), schema
        if manifest.timestamp_column != ts_col:
            raise InvalidInputError(f"view {view!r}: timestamp column is {manifest.timestamp_column!r} in "
                                    f"the offline store, got {ts_col!r}")
        stored = manifest.schema
        have = set(table.column_names)
        for f in stored:
            if f.name not in have:
                raise InvalidInputError(f"view {view!r}: column {f.name!r} ({f.type}) is missing from the "
                                        f"table; the offline store's schema has it")
        for name in table.column_names:
            if stored.get_field_index(name) < 0:
                raise InvalidInputError(f"view {view!r}: column {name!r} is not in the offline store's "
                                        f"schema ({', '.join(stored.names)})")
        table = table.select(stored.names)
        for f, col in zip(stored, table.columns, strict=True):
            if not col.type.equals(f.type):
                raise InvalidInputError(f"view {view!r}: column {f.name!r} has type {col.type}, the "
                                        f"offline store's schema has {f.type}")
        return table.cast(stored), stored

    def _validate_ts(self, table: pa.Table, ts_col: str) -> pa.Table:
        if not isinstance(table, pa.Table):
            raise InvalidInputError(f"expected a pyarrow.Table, got {type(table).__name__}")
        if ts_col not in table.column_names:
            raise InvalidInputError(f"timestamp column {ts_col!r} is not in the table "
                                    f"(columns: {', '.join(table.column_names)})")
        if not pa.types.is_timestamp(table.schema.field(ts_col).type):
            raise InvalidInputError(f"timestamp column {ts_col!r} has type "
                                    f"{table.schema.field(ts_col).type}, expected a timestamp")
        table = _normalise_table(table)
        nulls = table.column(ts_col).null_count
        if nulls:
            raise InvalidInputError(f"timestamp column {ts_col!r} has {nulls} null value(s)")
        return table

    def _prepare(self, view: str, view_dir: Path, table: pa.Table, ts_col: str,
                 whole_day: Any) -> _Prepared:
        """Check the schema against the current manifest and write the files of whole-day partitions.

        ``whole_day(day)`` says whether a day's rows can be written before the lock (no existing rows of
        that day can survive the commit); other days are kept in memory and written under the lock.
        """
        table, schema = self._check_schema(view, table, self._load(view), ts_col)
        written: list[_File] = []
        deferred: dict[date, pa.Table] = {}
        try:
            for day, rows in self._split_by_day(table, ts_col):
                if whole_day(day):
                    written.append(self._write_file(view_dir, day, rows, ts_col))
                else:
                    deferred[day] = rows
        except BaseException:
            self._remove_files(view_dir, [f.path for f in written])
            raise
        return _Prepared(schema, written, deferred)

    @staticmethod
    def _remove_files(view_dir: Path, rel_paths: list[str]) -> None:
        for rel in rel_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(view_dir / rel)

    def _commit(self, view: str, view_dir: Path, prepared: _Prepared, ts_col: str,
                interval: tuple[datetime, datetime] | None,
                stream: tuple[str, dict[int, tuple[int, int]], dict[str, Any] | None] | None = None) -> None:
        """Under the view's lock: rewrite what the interval touches, then replace the manifest."""
        new_files = list(prepared.written)
        superseded: list[str] = []
        try:
            with self._lock(view):
                current = self._load(view)
                if current is not None:
                    # Re-check against the state we commit on (a first write may have raced ours).
                    self._check_schema(view, prepared.schema.empty_table(), current, ts_col)
                    if not current.schema.equals(prepared.schema):
                        raise InvalidInputError(f"view {view!r}: the offline store's schema changed "
                                                f"while writing; retry the write")
                streams, progress = self._advance_streams(view, current, stream)
                live = {f.path for f in current.files} if current else set()
                if any(f.path in live for f in new_files):
                    reused = next(f.path for f in new_files if f.path in live)
                    new_files = [f for f in new_files if f.path not in live]  # never delete live files
                    raise InvalidInputError(f"view {view!r}: data file {reused} is already committed "
                                            f"(was this staged set committed before?)")
                for f in new_files:  # a file vacuumed during a very slow write must not be committed
                    if not (view_dir / f.path).exists():
                        raise InvalidInputError(f"view {view!r}: data file {f.path} vanished before commit "
                                                f"(the view was deleted or vacuumed meanwhile); retry the write")
                files = list(current.files) if current else []
                kept_rows: dict[date, list[pa.Table]] = {}
                if interval is not None:
                    files, kept_rows, superseded = self._cut_interval(view_dir, files, interval,
                                                                      prepared.schema, ts_col)
                for day in sorted(set(prepared.deferred) | set(kept_rows)):
                    parts = kept_rows.get(day, [])
                    if day in prepared.deferred:
                        parts.append(prepared.deferred[day])
                    rows = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
                    if rows.num_rows:
                        if len(parts) > 1:
                            rows = rows.sort_by([(ts_col, "ascending")])
                        new_files.append(self._write_file(view_dir, day, rows, ts_col))
                files.extend(new_files)
                files.sort(key=lambda f: (f.day, f.path))
                intervals = list(current.intervals) if current else []
                if interval is not None:
                    intervals = merge_intervals(intervals + [interval])
                manifest = _Manifest(
                    view=view,
                    generation=current.generation if current else uuid.uuid4().hex,
                    version=(current.version if current else 0) + 1,
                    timestamp_column=ts_col,
                    schema=prepared.schema,
                    files=files,
                    intervals=intervals,
                    streams=streams,
                    progress=progress,
                )
                self._store_manifest(view_dir, manifest)
        except BaseException:
            self._remove_files(view_dir, [f.path for f in new_files])
            raise
        self._remove_files(view_dir, superseded)

    @staticmethod
    def _advance_streams(view: str, current: _Manifest | None,
                         stream: tuple[str, dict[int, tuple[int, int]], dict[str, Any] | None] | None
                         ) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
        """The committed offsets and progress per stream after this commit; offsets that overlap ones
        already committed are a conflict (the same rows would land twice)."""
        streams = {k: dict(v) for k, v in current.streams.items()} if current else {}
        progress = dict(current.progress) if current else {}
        if stream is None:
            return streams, progress
        name, spans, stream_progress = stream
        if stream_progress is not None:
            progress[name] = stream_progress
        done = streams.setdefault(name, {})
        for part, (first, last) in sorted(spans.items()):
            if done.get(str(part), -1) >= first:
                raise ConflictError(f"view {view!r}: offsets {first}..{last} of {name} partition "
                                    f"{part} overlap rows already committed (up to offset "
                                    f"{done[str(part)]}); read stream_offsets() again")
            done[str(part)] = last
        return streams, progress

    @staticmethod
    def _cut_interval(view_dir: Path, files: list[_File], interval: tuple[datetime, datetime],
                      schema: pa.Schema, ts_col: str) -> tuple[list[_File], dict[date, list[pa.Table]], list[str]]:
        """(files untouched by [start, end), per day the rows of partly covered files that lie outside
        it, the paths of files the commit supersedes)."""
        start, end = interval
        survivors: list[_File] = []
        kept_rows: dict[date, list[pa.Table]] = {}
        superseded: list[str] = []
        for f in files:
            if f.rows == 0 or f.max_ts < start or f.min_ts >= end:
                survivors.append(f)  # no row inside the interval
            elif f.min_ts >= start and f.max_ts < end:
                superseded.append(f.path)  # every row inside: dropped
            else:
                data = pq.read_table(str(view_dir / f.path)).cast(schema)
                ts = data.column(ts_col)
                outside = pc.or_(pc.less(ts, pa.scalar(start, TS)), pc.greater_equal(ts, pa.scalar(end, TS)))
                kept_rows.setdefault(f.day, []).append(data.filter(outside))
                superseded.append(f.path)
        return survivors, kept_rows, superseded

    # -- public API: writes ----------------------------------------------------------------------
    def write(self, view: str, table: pa.Table, start: datetime, end: datetime,
              timestamp_column: str) -> None:
        """Replace the view's rows with ``start <= ts < end`` by ``table``'s rows; mark the interval covered.

        Every row of ``table`` must have a (non-null) timestamp inside [start, end). Re-running the same
        interval replaces rather than duplicates; an empty table still records the interval.
        """
        start, end = _utc(start), _utc(end)
        if end <= start:
            raise InvalidInputError(f"write needs start < end, got {start} .. {end}")
        view_dir = self._view_dir(view)
        table = self._validate_ts(table, timestamp_column)
        self._check_inside(table, timestamp_column, start, end)
        prepared = self._prepare(view, view_dir, table, timestamp_column,
                                 lambda day: _partition_inside(day, start, end))
        self._commit(view, view_dir, prepared, timestamp_column, (start, end))

    @staticmethod
    def _check_inside(table: pa.Table, ts_col: str, start: datetime, end: datetime) -> None:
        ts = table.column(ts_col)
        bad = pc.sum(pc.or_(pc.less(ts, pa.scalar(start, TS)),
                            pc.greater_equal(ts, pa.scalar(end, TS)))).as_py() or 0
        if bad:
            raise InvalidInputError(f"timestamp column {ts_col!r}: {bad} row(s) outside the "
                                    f"interval [{start.isoformat()}, {end.isoformat()})")

    # -- public API: two-phase writes (files written elsewhere, committed once) -------------------
    def stage(self, view: str, table: pa.Table, timestamp_column: str, *,
              start: datetime | None = None, end: datetime | None = None) -> list[dict[str, Any]]:
        """Write ``table``'s rows as new data files of ``view`` that no manifest references yet.

        Safe to call from any process (a Spark executor) that has the store's config, repo path and
        project, concurrently with other stagers and with commits. Files are date-partitioned, uniquely
        named and fsynced; they stay invisible to readers until ``commit_staged`` lists them. Returns one
        JSON-safe dict per file (``path`` relative to the view directory, ``date``, ``rows``, ``min``/
        ``max`` event time as ISO text, ``timestamp_column`` and ``schema``, the base64 Arrow schema);
        ``[]`` for an empty table. The columns are checked against the view's stored schema when there is
        one. With ``start``/``end`` given, a row outside [start, end) fails before anything is written.

        >>> import tempfile, pyarrow as pa
        >>> from datetime import datetime, timezone
        >>> store = ParquetOfflineStore(ParquetOfflineStoreConfig(), Path(tempfile.mkdtemp()), "demo")
        >>> t0, t1 = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc)
        >>> rows = pa.table({"id": [1, 2], "ts": pa.array([t0, t0], pa.timestamp("us", tz="UTC"))})
        >>> staged = store.stage("clicks", rows, "ts")          # e.g. on executors
        >>> store.views(), [s["rows"] for s in staged]
        ([], [2])
        >>> store.commit_staged("clicks", staged, t0, t1, "ts")  # once, on the driver
        2
        >>> store.read("clicks").num_rows
        2
        """
        view_dir = self._view_dir(view)
        table = self._validate_ts(table, timestamp_column)
        if start is not None or end is not None:
            lo = _utc(start) if start is not None else datetime.min.replace(tzinfo=UTC)
            hi = _utc(end) if end is not None else datetime.max.replace(tzinfo=UTC)
            self._check_inside(table, timestamp_column, lo, hi)
        if table.num_rows == 0:
            self._check_schema(view, table, self._load(view), timestamp_column)
            return []
        prepared = self._prepare(view, view_dir, table, timestamp_column, lambda day: True)
        schema_text = _schema_to_text(prepared.schema)
        return [{**f.to_json(), "timestamp_column": timestamp_column, "schema": schema_text}
                for f in prepared.written]

    def _staged_file(self, view: str, view_dir: Path, entry: Any, ts_col: str,
                     start: datetime, end: datetime) -> tuple[_File, pa.Schema]:
        """One ``stage`` result, checked against the disk and the interval."""
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise InvalidInputError(f"view {view!r}: not a staged file description: {entry!r}")
        match = _DATA_FILE.match(entry["path"])
        if not match or match.group(1) != entry.get("date"):
            raise InvalidInputError(f"view {view!r}: {entry['path']!r} is not a staged data file path")
        if entry.get("timestamp_column") != ts_col:
            raise InvalidInputError(f"view {view!r}: file {entry['path']} was staged with timestamp column "
                                    f"{entry.get('timestamp_column')!r}, committing with {ts_col!r}")
        try:
            f = _File.from_json(entry)
            schema = _schema_from_text(entry["schema"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"view {view!r}: bad staged file description {entry!r}: {exc}") from None
        try:
            rows_on_disk = pq.ParquetFile(str(view_dir / f.path)).metadata.num_rows
        except FileNotFoundError:
            raise InvalidInputError(f"view {view!r}: staged data file {f.path} does not exist (removed by "
                                    f"vacuum or a failed commit?); stage the rows again") from None
        if rows_on_disk != f.rows:
            raise InvalidInputError(f"view {view!r}: staged data file {f.path} has {rows_on_disk} rows, "
                                    f"its description says {f.rows}")
        if f.rows and (f.min_ts < start or f.max_ts >= end):
            raise InvalidInputError(f"view {view!r}: staged data file {f.path} holds rows from "
                                    f"{f.min_ts.isoformat()} to {f.max_ts.isoformat()}, outside the interval "
                                    f"[{start.isoformat()}, {end.isoformat()})")
        return f, schema

    def commit_staged(self, view: str, staged: list[dict[str, Any]], start: datetime, end: datetime,
                      timestamp_column: str, *, schema: pa.Schema | None = None) -> int:
        """Commit files from ``stage`` as ``write(view, <all their rows>, start, end, ts_col)`` would.

        Under the view's lock, rows of existing files inside [start, end) are replaced and rows outside
        are kept (files straddling an edge are rewritten), the interval is marked covered, and the
        manifest is replaced atomically. Every staged row must lie inside [start, end), else
        InvalidInputError. ``schema`` is needed only when nothing was staged and the view has no data
        yet (it fixes the view's schema, as an empty ``write`` does). Returns the rows committed. On any
        failure the staged files are removed (never a committed one) and nothing becomes visible.
        """
        start, end = _utc(start), _utc(end)
        if end <= start:
            raise InvalidInputError(f"commit_staged needs start < end, got {start} .. {end}")
        view_dir = self._view_dir(view)
        if not isinstance(staged, list):
            raise InvalidInputError(f"staged must be a list of stage() results, got {type(staged).__name__}")
        try:
            files: list[_File] = []
            schemas: list[pa.Schema] = []
            for entry in staged:
                f, file_schema = self._staged_file(view, view_dir, entry, timestamp_column, start, end)
                files.append(f)
                schemas.append(file_schema)
            if len({f.path for f in files}) != len(files):
                raise InvalidInputError(f"view {view!r}: the staged set lists a file more than once")
            if schemas:
                fixed = schemas[0]
                for f, other in zip(files, schemas, strict=True):
                    if not other.equals(fixed):
                        raise InvalidInputError(f"view {view!r}: staged data file {f.path} has schema "
                                                f"({other}), another has ({fixed})")
            else:
                current = self._load(view)
                if current is not None:
                    fixed = current.schema
                elif schema is not None:
                    empty = self._validate_ts(schema.empty_table(), timestamp_column)
                    fixed = _storage_schema(empty)
                else:
                    raise InvalidInputError(f"view {view!r} has no data yet and nothing was staged: pass "
                                            f"schema= to fix its columns")
        except BaseException:
            self.discard_staged(view, staged)
            raise
        self._commit(view, view_dir, _Prepared(fixed, files, {}), timestamp_column, (start, end))
        return sum(f.rows for f in files)

    def discard_staged(self, view: str, staged: list[dict[str, Any]]) -> None:
        """Delete staged files that were not committed (files the manifest lists are never touched)."""
        view_dir = self._view_dir(view)
        paths = [e["path"] for e in staged if isinstance(e, dict) and isinstance(e.get("path"), str)
                 and _DATA_FILE.match(e["path"])]
        if not paths:
            return
        with self._lock(view):
            manifest = self._load(view)
            live = {f.path for f in manifest.files} if manifest else set()
            self._remove_files(view_dir, [p for p in paths if p not in live])

    def append(self, view: str, table: pa.Table, timestamp_column: str, *, stream: str | None = None,
               offsets: dict[int, tuple[int, int]] | None = None,
               progress: dict[str, Any] | None = None) -> None:
        """Add rows without replacing any (streaming, push); coverage is unchanged.

        A stream job passes ``stream`` (its source, e.g. ``kafka:<topic>``) and, per partition, the
        first and last offset it has handled (rows or not): the commit records the last offsets in the
        manifest, in the same atomic step as the rows, and fails with ConflictError if a partition's
        offsets from ``first`` on are already committed. Reading ``stream_offsets`` and dropping rows at
        or below them makes a replayed append write each row exactly once. ``progress`` (JSON-safe) is
        committed in the same step and read back with ``stream_progress``.
        """
        if (stream is None) != (offsets is None):
            raise InvalidInputError("append takes stream= and offsets= together")
        if progress is not None and stream is None:
            raise InvalidInputError("append takes progress= only with stream=")
        table = self._validate_ts(table, timestamp_column)
        if table.num_rows == 0 and self._load(view) is not None and not offsets:
            return
        self.commit_append(self.stage_append(view, table, timestamp_column), stream=stream, offsets=offsets,
                           progress=progress)

    def stage_append(self, view: str, table: pa.Table, timestamp_column: str) -> "StagedAppend":
        """The slow half of ``append``: the rows written as data files (fsynced, not yet visible).
        ``commit_append`` makes them visible; uncommitted ones are orphans ``vacuum`` removes. A stream
        job stages a batch's rows while it writes them online, and commits after."""
        view_dir = self._view_dir(view)
        table = self._validate_ts(table, timestamp_column)
        return StagedAppend(view, timestamp_column,
                            self._prepare(view, view_dir, table, timestamp_column, lambda day: True))

    def commit_append(self, staged: "StagedAppend", *, stream: str | None = None,
                      offsets: dict[int, tuple[int, int]] | None = None,
                      progress: dict[str, Any] | None = None) -> None:
        """The fast half of ``append`` (see ``append`` for ``stream``, ``offsets`` and ``progress``)."""
        if (stream is None) != (offsets is None):
            raise InvalidInputError("append takes stream= and offsets= together")
        self._commit(staged.view, self._view_dir(staged.view), staged.prepared, staged.timestamp_column, None,
                     None if stream is None else (stream, dict(offsets or {}), progress))

    def discard_append(self, staged: "StagedAppend") -> None:
        """Remove the data files of a staged append that will not be committed."""
        self._remove_files(self._view_dir(staged.view), [f.path for f in staged.prepared.written])

    def stream_offsets(self, view: str, stream: str) -> dict[int, int]:
        """Per partition, the last offset of ``stream`` whose rows ``view`` has committed ({} if none)."""
        return self.stream_progress(view, stream)[0]

    def stream_progress(self, view: str, stream: str) -> tuple[dict[int, int], dict[str, Any]]:
        """(committed offsets per partition, the progress committed with them) of ``stream``, read
        from one manifest."""
        manifest = self._load(view)
        if manifest is None:
            return {}, {}
        return ({int(p): o for p, o in manifest.streams.get(stream, {}).items()},
                dict(manifest.progress.get(stream, {})))

    def streams(self, view: str) -> dict[str, dict[str, Any]]:
        """Every stream's committed progress for ``view`` (see ``stream_progress``)."""
        manifest = self._load(view)
        return dict(manifest.progress) if manifest else {}

    def delete_view(self, view: str) -> bool:
        """Remove the view's data; returns whether there was any. Idempotent."""
        view_dir = self._view_dir(view)
        with self._lock(view):
            existed = (view_dir / MANIFEST).exists()
            if existed:
                os.unlink(view_dir / MANIFEST)  # readers see "no view" from here on
                _fsync_path(str(view_dir), directory=True)
            shutil.rmtree(view_dir, ignore_errors=True)
        if self._kind == "parquet":
            existed = self.appends.delete_view(view) or existed
        return existed

    def compact(self, view: str, *, max_small_files: int = 16, small_rows: int = 8 * ROW_GROUP_SIZE) -> int:
        """Merge a date partition's small files (fewer than ``small_rows`` rows each) into one file once
        there are more than ``max_small_files`` of them; returns the number of files merged.

        Streaming appends add one small file per commit; compaction keeps reads from opening thousands
        of them. Rows, coverage and recorded stream offsets are unchanged; the manifest is replaced
        atomically under the view's lock, so readers see either the old files or the merged one.
        """
        view_dir = self._view_dir(view)
        new_files: list[_File] = []
        merged: list[str] = []
        try:
            with self._lock(view):
                manifest = self._load(view)
                if manifest is None:
                    return 0
                small: dict[date, list[_File]] = {}
                for f in manifest.files:
                    if f.rows < small_rows:
                        small.setdefault(f.day, []).append(f)
                for day, files in sorted(small.items()):
                    if len(files) <= max_small_files:
                        continue
                    parts = [pq.read_table(str(view_dir / f.path)).cast(manifest.schema) for f in files]
                    rows = pa.concat_tables(parts).sort_by([(manifest.timestamp_column, "ascending")])
                    new_files.append(self._write_file(view_dir, day, rows, manifest.timestamp_column))
                    merged += [f.path for f in files]
                if not merged:
                    return 0
                gone = set(merged)
                files = sorted([f for f in manifest.files if f.path not in gone] + new_files,
                               key=lambda f: (f.day, f.path))
                self._store_manifest(view_dir, _Manifest(
                    view=view, generation=manifest.generation, version=manifest.version + 1,
                    timestamp_column=manifest.timestamp_column, schema=manifest.schema, files=files,
                    intervals=manifest.intervals, streams=manifest.streams, progress=manifest.progress))
        except BaseException:
            self._remove_files(view_dir, [f.path for f in new_files])
            raise
        self._remove_files(view_dir, merged)
        return len(merged)

    def vacuum(self, view: str | None = None, grace: timedelta = DEFAULT_VACUUM_GRACE) -> list[str]:
        """Delete files no manifest references that are older than ``grace``; returns their paths.

        The grace period protects data files of writes still in flight (written, not yet committed).
        """
        views = [view] if view is not None else self._dirs()
        cutoff = time.time() - grace.total_seconds()
        removed: list[str] = []
        for name in views:
            view_dir = self._view_dir(name)
            with self._lock(name):
                manifest = self._load(name)
                live = {f.path for f in manifest.files} if manifest else set()
                if not view_dir.is_dir():
                    continue
                for entry in sorted(view_dir.iterdir()):
                    if entry.name.startswith(f"{MANIFEST}.tmp-") and entry.stat().st_mtime < cutoff:
                        entry.unlink()
                        removed.append(str(entry))
                    elif entry.is_dir() and _PART_DIR.match(entry.name):
                        for p in sorted(entry.iterdir()):
                            rel = f"{entry.name}/{p.name}"
                            if rel not in live and p.is_file() and p.stat().st_mtime < cutoff:
                                p.unlink()
                                removed.append(str(p))
                        with contextlib.suppress(OSError):
                            entry.rmdir()  # only if now empty
        if self._kind == "parquet":
            removed += self.appends.vacuum(view, grace)
        return removed

    # -- public API: reads -----------------------------------------------------------------------
    def _dirs(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _VIEW_NAME.match(p.name))

    def views(self) -> list[str]:
        """Names of views with committed data, sorted."""
        return [v for v in self._dirs() if (self.root / v / MANIFEST).is_file()]

    def schema(self, view: str) -> pa.Schema | None:
        manifest = self._load(view)
        return manifest.schema if manifest else None

    def timestamp_column(self, view: str) -> str | None:
        manifest = self._load(view)
        return manifest.timestamp_column if manifest else None

    def coverage(self, view: str) -> list[tuple[datetime, datetime]]:
        """Committed half-open intervals [start, end), merged and sorted; [] for an unknown view."""
        manifest = self._load(view)
        return list(manifest.intervals) if manifest else []

    def covers(self, view: str, start: datetime, end: datetime) -> bool:
        """Whether every instant of [start, end] (inclusive) lies inside the committed coverage."""
        start, end = _utc(start), _utc(end)
        intervals = self.coverage(view)
        if not intervals:
            return False
        if end < start:
            return True
        return any(lo <= start and end < hi for lo, hi in intervals)

    def fingerprint(self, view: str) -> str:
        """Changes with every commit (and when the view is deleted and recreated)."""
        manifest = self._load(view)
        if manifest is None:
            return f"{self._kind}:{self.project}/{view}:absent"
        digest = hashlib.sha256("\n".join(f.path for f in manifest.files).encode()).hexdigest()[:16]
        return f"{self._kind}:{self.project}/{view}:{manifest.generation[:12]}:v{manifest.version}:{digest}"

    @staticmethod
    def _live(manifest: _Manifest, start: datetime | None, end: datetime | None) -> list[_File]:
        lo = start.date() if start is not None else None
        hi = end.date() if end is not None else None
        return [f for f in manifest.files
                if (lo is None or f.day >= lo) and (hi is None or f.day <= hi)]

    def files(self, view: str, start: datetime | None = None, end: datetime | None = None) -> list[str]:
        """Absolute paths of live files whose date partition can hold rows in [start, end] (inclusive)."""
        manifest = self._load(view)
        if manifest is None:
            return []
        start = _utc(start) if start is not None else None
        end = _utc(end) if end is not None else None
        view_dir = self._view_dir(view)
        return [str(view_dir / f.path) for f in self._live(manifest, start, end)]

    def read(self, view: str, start: datetime | None = None, end: datetime | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """Rows with start <= ts <= end (inclusive both ends), in the stored schema.

        Raises FeatureViewNotFound for a view that was never written.
        """
        start = _utc(start) if start is not None else None
        end = _utc(end) if end is not None else None
        for attempt in range(5):
            manifest = self._require(view)
            try:
                return self._read(view, manifest, start, end, columns)
            except FileNotFoundError:
                # A commit replaced files between our manifest read and the file reads: start over.
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _read(self, view: str, manifest: _Manifest, start: datetime | None, end: datetime | None,
              columns: list[str] | None) -> pa.Table:
        ts_col = manifest.timestamp_column
        schema = manifest.schema
        wanted = list(schema.names) if columns is None else list(columns)
        for name in wanted:
            if schema.get_field_index(name) < 0:
                raise InvalidInputError(f"view {view!r}: column {name!r} is not in the offline store "
                                        f"(columns: {', '.join(schema.names)})")
        read_cols = wanted if ts_col in wanted else wanted + [ts_col]
        out_schema = pa.schema([schema.field(n) for n in wanted])
        view_dir = self._view_dir(view)
        parts = []
        for f in self._live(manifest, start, end):
            if f.rows == 0 or (start is not None and f.max_ts < start) or (end is not None and f.min_ts > end):
                continue
            data = pq.ParquetFile(str(view_dir / f.path)).read(columns=read_cols)
            if (start is not None and f.min_ts < start) or (end is not None and f.max_ts > end):
                ts = data.column(ts_col)
                mask = None
                if start is not None:
                    mask = pc.greater_equal(ts, pa.scalar(start, TS))
                if end is not None:
                    upper = pc.less_equal(ts, pa.scalar(end, TS))
                    mask = upper if mask is None else pc.and_(mask, upper)
                data = data.filter(mask)
            parts.append(data.select(wanted))
        if not parts:
            return out_schema.empty_table()
        return pa.concat_tables([p.cast(out_schema) for p in parts])
