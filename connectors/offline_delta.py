"""The offline store as Delta Lake tables (``deltalake``, delta-rs), on local disk or object storage.

Layout: one Delta table per view at ``<path>/<project>/<view>`` (Parquet files and ``_delta_log``), and
one per view for appended rows (stream jobs, pushes) at ``<path>/<project>/_appends/<view>``. Any
engine that reads Delta reads them; every commit is atomic and old versions stay readable until
``vacuum`` removes their files, so an export can name the table version it read.

- ``write`` replaces ``[start, end)`` in one commit: files wholly inside the interval are removed,
  files across an edge are rewritten with their rows outside it, the new rows are added; a rerun
  replaces rather than duplicates, readers see the table before or after.
- Coverage (which intervals were materialized) is recorded in the registry by materialization, not
  here (see ``featurestore.coverage``).
- ``commit_append(..., stream=, offsets=, progress=)`` commits the rows with one Delta application
  transaction per Kafka partition (``<stream>#<partition>`` -> the partition's last offset) and the
  stream's progress as commit metadata, in the same commit: a restarted job reads both back and skips
  what the commit covered. Two commits that claim the same offsets cannot both land.
- Appends are two-phase (``stage_append``/``commit_append``): Parquet data files are written into the
  table's directory first and their add actions committed later; files of a write that never commits
  are unreferenced, and ``vacuum`` removes them.
- Other Delta writers (the Spark engine through delta-spark) commit to the same tables
  (``CAP_DELTA``, ``table_uri``); an interval replace of any writer claims ``REPLACE_TXN`` (see the
  port), so two replaces never both commit against the same snapshot. Time statistics may be
  truncated to milliseconds (delta-spark writes them so): file pruning allows for that.

Paths are local directories or ``s3://bucket/prefix`` URIs; ``storage_options`` (endpoint, region,
keys) go to delta-rs, with ``${VAR}`` replaced from the environment when used, so secrets need not be
in the repo or the registry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from connectors import delta_repair
from connectors.delta_damage import DamageReport
from connectors.object_store import expand, filesystem, is_remote
from featurestore.errors import (
    ConflictError,
    DamagedStateError,
    FeatureViewNotFound,
    InvalidInputError,
    NotFoundError,
)
from featurestore.ports.offline_store import (
    CAP_COMPACT,
    CAP_DELTA,
    CAP_FILES,
    CAP_REPAIR,
    CAP_VERSIONS,
    REPLACE_TXN,
    OfflineStore,
    TableRepair,
)
from featurestore.timestamps import TS, column_us

APPENDS_DIR = "_appends"
QUARANTINE_DIR = "_quarantine"  # rows a check with on_fail="drop" kept out of the stores, per view
QUALITY_DIR = "_quality"  # per view, a row per materialization or stream commit: checks and statistics
DRIFT_DIR = "_drift"  # per view, the statistics of each `featurestore drift` run (the server exports the latest)
_AREAS = (APPENDS_DIR, QUARANTINE_DIR, QUALITY_DIR, DRIFT_DIR)
DAMAGED_DIR = "_damaged"  # where ``repair`` moves what it could not use, per view and time
PROGRESS_KEY = "featurestore.progress"  # commit metadata: {stream: progress} of a stream commit
_VIEW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
# Data file names: this store's (part-<uuid>.zstd.parquet) and Spark's (part-00000-<uuid>-c000.snappy.parquet).
_DATA_FILE = re.compile(r"^part-(\d{5}-)?[0-9a-f\-]{36}(-c\d{3})?\.[a-z0-9]+\.parquet$")
# Writers may truncate time statistics to milliseconds: a file's true maximum is below its max + 1 ms.
_STAT_SLACK = timedelta(milliseconds=1)
DEFAULT_VACUUM_GRACE = timedelta(days=7)
ROW_GROUP_SIZE = 128 * 1024
COMPRESSION = "zstd"
DICTIONARY_SAMPLE = 10_000
_COMMIT_RETRIES = 20


class DeltaOfflineStoreConfig(BaseModel):
    """``offline_store: {type: parquet, path: data/offline}`` (``type: delta`` names the same store:
    Delta tables of Parquet files); a relative path resolves against the repo,
    ``s3://bucket/prefix`` is object storage (``storage_options`` for delta-rs, ``${VAR}`` expanded)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["parquet", "delta"] = "parquet"
    path: str = "data/offline"
    storage_options: dict[str, str] = Field(default_factory=dict)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _outside(ts: Any, start: datetime, end: datetime) -> Any:
    """Per row, whether its time lies outside [start, end)."""
    return pc.or_(pc.less(ts, pa.scalar(start, TS)), pc.greater_equal(ts, pa.scalar(end, TS)))


def _check_inside(table: pa.Table, ts_col: str, start: datetime, end: datetime) -> None:
    outside = pc.sum(_outside(table.column(ts_col), start, end)).as_py()
    if outside:
        raise InvalidInputError(f"timestamp column {ts_col!r}: {outside} row(s) outside the "
                                f"interval [{start.isoformat()}, {end.isoformat()})")


def _iso_z(value: datetime) -> str:
    """UTC time as ISO 8601 text with a four-digit year and ``Z`` (what Delta stats and predicates take)."""
    return _utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"




@dataclass(frozen=True)
class StagedAppend:
    """Rows of an append written as data files that no commit lists yet (``stage_append``)."""

    view: str
    schema: pa.Schema
    actions: tuple[Any, ...]

    @property
    def rows(self) -> int:
        return sum(json.loads(a.stats)["numRecords"] for a in self.actions)


class DeltaOfflineStore(OfflineStore):
    """Every view's history as a Delta table (see the module docs).

    >>> import tempfile, pyarrow as pa
    >>> from datetime import datetime, timezone
    >>> store = DeltaOfflineStore(DeltaOfflineStoreConfig(), Path(tempfile.mkdtemp()), "demo")
    >>> t0, t1 = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc)
    >>> rows = pa.table({"id": [1, 2], "ts": pa.array([t0, t0], pa.timestamp("us", tz="UTC"))})
    >>> store.write("clicks", rows, t0, t1, "ts")
    >>> store.read("clicks").num_rows
    2
    """

    capabilities = frozenset({CAP_FILES, CAP_DELTA, CAP_COMPACT, CAP_VERSIONS, CAP_REPAIR})

    def __init__(self, config: DeltaOfflineStoreConfig, repo_path: Path, project: str):
        self.config = config
        self.project = project
        base = config.path if is_remote(config.path) else str(
            (Path(repo_path) / os.path.expanduser(config.path)).resolve())
        self.root = f"{base.rstrip('/')}/{project}"
        self._tables: dict[str, Any] = {}
        # Per view: the streams' metadata this process committed last, and the table version it was
        # committed at; a stream has one writer (its job), so the newest entry is the one it wrote.
        self._streams: dict[str, dict[str, dict[str, Any]]] = {}

    @property
    def appends(self) -> "DeltaOfflineStore":
        return self._area(APPENDS_DIR)

    @property
    def quarantine(self) -> "DeltaOfflineStore":
        return self._area(QUARANTINE_DIR)

    @property
    def quality(self) -> "DeltaOfflineStore":
        return self._area(QUALITY_DIR)

    @property
    def drift(self) -> "DeltaOfflineStore":
        return self._area(DRIFT_DIR)

    def _area(self, folder: str) -> "DeltaOfflineStore":
        """The store of the tables in ``folder`` beside the materialized ones (same settings)."""
        areas = self.__dict__.setdefault("_areas", {})
        cached = areas.get(folder)
        if cached is None:
            cached = areas[folder] = DeltaOfflineStore.__new__(DeltaOfflineStore)
            cached.config, cached.project, cached.root = self.config, self.project, f"{self.root}/{folder}"
            cached._tables, cached._streams = {}, {}
        return cached

    # -- tables ----------------------------------------------------------------------------------
    def _options(self) -> dict[str, str]:
        return expand(self.config.storage_options, "offline store")

    def table_uri(self, view: str) -> str:
        """Where the view's Delta table is (a local path or an object storage URI)."""
        return self._uri(view)

    def _uri(self, view: str) -> str:
        if not isinstance(view, str) or not _VIEW_NAME.match(view):
            raise InvalidInputError(f"invalid feature view name for the offline store: {view!r}")
        return f"{self.root}/{view}"

    def _table(self, view: str, version: int | None = None):
        """The view's table at ``version`` (default: the latest commit), or None when there is none.
        Latest-version handles are kept and brought up to date by reading only the newer log entries."""
        uri, options = self._uri(view), self._options()
        if view not in self._tables and not is_remote(uri) and not os.path.isdir(os.path.join(uri, "_delta_log")):
            return None  # no table: nothing to load (deltalake's library stays unloaded until one exists)
        if version is not None:
            cached = self._tables.get(view)
            if cached is not None and cached.version() == version:
                return cached
            latest = self._table(view)
            if latest is None or latest.version() == version:
                return latest
            from deltalake import DeltaTable

            try:
                return DeltaTable(uri, version=version, storage_options=options)
            except Exception as exc:  # deltalake names no narrower error for a version it cannot load
                raise NotFoundError(f"view {view!r}: version {version} of the Delta table {uri} cannot be "
                                    f"loaded (the table is at version {latest.version()}): {exc}") from exc
        cached = self._tables.get(view)
        if cached is not None:
            try:
                cached.update_incremental()
                return cached
            except Exception:  # the table was deleted or replaced underneath: open it afresh
                self._tables.pop(view, None)
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        try:
            table = DeltaTable(uri, storage_options=options)
        except Exception as exc:  # deltalake names no narrower error for a log it cannot read
            raise self._unreadable(view, exc) from None
        self._tables[view] = table
        return table

    # -- damage ------------------------------------------------------------------------------------
    @property
    def _damage(self) -> DamageReport:
        return DamageReport(self.root, self.root.endswith(f"/{APPENDS_DIR}"))

    def _unreadable(self, view: str, exc: Exception) -> Exception:
        fs, base = filesystem(self._uri(view), self._options())
        return self._damage.unreadable(view, self._uri(view), fs, base, exc)

    def damaged_file(self, view: str, name: str, reason: str) -> DamagedStateError:
        """The error for a data file of the view's table that is missing or cannot be read."""
        return self._damage.damaged_file(view, self._uri(view), name, reason)

    def _file_error(self, view: str, names: list[str], exc: Exception) -> Exception:
        fs, base = filesystem(self._uri(view), self._options())
        return self._damage.file_error(view, self._uri(view), fs, base, names, exc)

    def repair(self, view: str) -> TableRepair:
        """Make the view's table readable (see ``connectors.delta_repair``); damaged files are moved
        to ``<store>/_damaged/<view>/<time>``. Run it with no stream job or materialization writing."""
        uri = self._uri(view)
        self._tables.pop(view, None)
        self._streams.pop(view, None)
        fs, base = filesystem(uri, self._options())
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        _, aside = filesystem(f"{self.root}/{DAMAGED_DIR}/{view}/{stamp}", self._options())
        try:
            return delta_repair.repair(view, uri, fs, base, aside, self._options(), PROGRESS_KEY,
                                       self._damage.display)
        finally:
            self._tables.pop(view, None)

    # -- writes ----------------------------------------------------------------------------------
    def _prepare(self, view: str, table: pa.Table, ts_col: str, handle: Any = None) -> pa.Table:
        """Times as UTC microseconds (nulls refused), and the schema the view's table already has."""
        if ts_col not in table.column_names:
            raise InvalidInputError(f"view {view!r}: timestamp column {ts_col!r} is missing")
        ts = table.column(ts_col)
        if not pa.types.is_timestamp(ts.type):
            raise InvalidInputError(f"view {view!r}: column {ts_col!r} must hold timestamps, not {ts.type}")
        if ts.null_count:
            raise InvalidInputError(f"view {view!r}: timestamp column {ts_col!r} has {ts.null_count} null values")
        for i, f in enumerate(table.schema):
            if pa.types.is_timestamp(f.type):
                table = table.set_column(i, f.name, column_us(table.column(i)))
        handle = handle if handle is not None else self._table(view)
        if handle is not None:
            table = _conform(view, table, pa.schema(handle.schema().to_arrow()))
        return table

    def write(self, view: str, table: pa.Table, start: datetime, end: datetime, timestamp_column: str) -> None:
        """Replace the view's rows with ``start <= ts < end`` by ``table``'s rows, in one commit."""
        start, end = _utc(start), _utc(end)
        if end <= start:
            raise InvalidInputError(f"write needs start < end, got {start} .. {end}")
        handle = self._table(view)
        table = self._prepare(view, table, timestamp_column, handle)
        _check_inside(table, timestamp_column, start, end)
        adds = self._write_files(view, table, timestamp_column)
        try:
            self._replace(view, table.schema, adds, start, end, timestamp_column, handle)
        except BaseException:
            self._remove_data_files(view, [a.path for a in adds])
            raise

    def append(self, view: str, table: pa.Table, timestamp_column: str, *, stream: str | None = None,
               offsets: dict[int, tuple[int, int]] | None = None, progress: dict[str, Any] | None = None) -> None:
        """Add rows without replacing any; with ``stream``, record ``offsets`` and ``progress``."""
        self.commit_append(self.stage_append(view, table, timestamp_column), stream=stream, offsets=offsets,
                           progress=progress)

    def stage_append(self, view: str, table: pa.Table, timestamp_column: str) -> StagedAppend:
        """The rows written as data files of the view's table that no commit lists yet."""
        table = self._prepare(view, table, timestamp_column)
        return StagedAppend(view, table.schema, tuple(self._write_files(view, table, timestamp_column)))

    def commit_append(self, staged: StagedAppend, *, stream: str | None = None,
                      offsets: dict[int, tuple[int, int]] | None = None,
                      progress: dict[str, Any] | None = None) -> None:
        """Publish a staged append; with ``stream``, its offsets (one application transaction per
        partition) and ``progress`` land in the same commit. Offsets at or below ones already
        committed are a ConflictError (the rows would land twice)."""
        from deltalake import CommitProperties, Transaction

        view = staged.view
        committed = self._table(view)
        txns, metadata = [], {}
        if stream is not None:
            for part, (first, last) in sorted((offsets or {}).items()):
                done = committed.transaction_version(_app_id(stream, part)) if committed is not None else None
                if done is not None and done >= first:
                    raise ConflictError(f"view {view!r}: offsets {first}..{last} of {stream} partition {part} "
                                        f"overlap rows already committed (up to offset {done})")
                txns.append(Transaction(_app_id(stream, part), last))
            streams = self._stream_entries(view, committed)
            known = streams.get(stream, {})
            streams[stream] = {"progress": progress if progress is not None else known.get("progress", {}),
                               "partitions": sorted(set(known.get("partitions", [])) | set(offsets or {}))}
            metadata[PROGRESS_KEY] = json.dumps(streams)
        props = CommitProperties(custom_metadata=metadata or None, app_transactions=txns or None,
                                 max_commit_retries=_COMMIT_RETRIES)
        self._commit_actions(view, staged.schema, list(staged.actions), "append", props, committed)
        if stream is not None:
            self._streams[view] = streams

    def discard_append(self, staged: StagedAppend) -> None:
        self._remove_data_files(staged.view, [a.path for a in staged.actions])

    def _commit_actions(self, view: str, schema: pa.Schema, actions: list, mode: str, props: Any,
                        table: Any = None) -> None:
        from deltalake import Schema
        from deltalake.transaction import create_table_with_add_actions

        table = table if table is not None else self._table(view)
        try:
            if table is None:
                if not is_remote(self._uri(view)):
                    Path(self._uri(view)).mkdir(parents=True, exist_ok=True)
                create_table_with_add_actions(self._uri(view), Schema.from_arrow(schema),
                                              [a for a in actions if hasattr(a, "stats")],
                                              mode="append", storage_options=self._options(),
                                              commit_properties=props)
            else:
                table.create_write_transaction(actions, mode, schema, commit_properties=props)
        except Exception as exc:
            raise _translated(view, exc) from exc

    def _write_files(self, view: str, table: pa.Table, ts_col: str) -> list:
        """``table`` as one Parquet file in the view's table directory, and its add action."""
        from deltalake.transaction import AddAction

        if table.num_rows == 0:
            return []
        name = f"part-{uuid.uuid4()}.{COMPRESSION}.parquet"
        uri = f"{self._uri(view)}/{name}"
        fs, path = filesystem(uri, self._options())
        if not is_remote(uri):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, filesystem=fs, compression=COMPRESSION, row_group_size=ROW_GROUP_SIZE,
                       use_dictionary=_dictionary_columns(table))
        size = fs.get_file_info(path).size
        ts = table.column(ts_col)
        stats = {"numRecords": table.num_rows,
                 "minValues": {ts_col: _stat_time(pc.min(ts).as_py())},
                 "maxValues": {ts_col: _stat_time(pc.max(ts).as_py())},
                 "nullCount": {ts_col: 0}}
        now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
        return [AddAction(name, size, {}, now_ms, True, json.dumps(stats))]

    def _remove_data_files(self, view: str, names: list[str]) -> None:
        fs, base = filesystem(self._uri(view), self._options())
        for name in names:
            try:
                fs.delete_file(f"{base}/{name}")
            except FileNotFoundError:
                pass

    def _replace(self, view: str, schema: pa.Schema, adds: list, start: datetime, end: datetime,
                 ts_col: str, handle: Any = None) -> None:
        """One commit that adds ``adds`` and replaces the rows of [start, end): files wholly inside are
        removed, files across an edge are rewritten with their rows outside. Every replace commit
        claims the view's replace transaction id, so two replaces never both commit against the same
        snapshot: the loser recomputes its removals on the new snapshot and tries again."""
        from deltalake import CommitProperties, Transaction
        from deltalake.transaction import RemoveAction

        for attempt in range(_COMMIT_RETRIES):
            table = handle if attempt == 0 and handle is not None else self._table(view)
            removes: list = []
            rewritten: list = []
            if table is not None:
                fs, base = filesystem(self._uri(view), self._options())
                now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
                for f in pa.table(table.get_add_actions(flatten=True)).to_pylist():
                    lo, hi = f.get(f"min.{ts_col}"), f.get(f"max.{ts_col}")
                    hi = None if hi is None else hi + _STAT_SLACK  # exclusive bound on the true maximum
                    if lo is not None and hi is not None and (hi <= start or lo >= end):
                        continue  # no row inside the interval
                    removes.append(RemoveAction(f["path"], True, now_ms, size=f["size_bytes"]))
                    if lo is None or hi is None or lo < start or hi > end:  # rows outside stay, in a new file
                        try:
                            rows = pq.read_table(f"{base}/{f['path']}", filesystem=fs)
                        except FileNotFoundError:
                            raise self.damaged_file(view, f["path"], "is missing") from None
                        except (OSError, pa.ArrowInvalid) as exc:
                            raise self.damaged_file(view, f["path"], f"cannot be read ({exc})") from None
                        keep = _outside(rows.column(ts_col), start, end)
                        rewritten += self._write_files(view, rows.filter(keep).cast(schema), ts_col)
            claim = Transaction(REPLACE_TXN, 0 if table is None else table.version() + 1)
            props = CommitProperties(app_transactions=[claim], max_commit_retries=_COMMIT_RETRIES)
            try:
                self._commit_actions(view, schema, adds + rewritten + removes, "append", props, table)
                return
            except ConflictError:
                self._remove_data_files(view, [a.path for a in rewritten])
        raise ConflictError(f"view {view!r}: {_COMMIT_RETRIES} concurrent commits won over this replace")

    # -- stream progress ---------------------------------------------------------------------------
    def stream_progress(self, view: str, stream: str) -> tuple[dict[int, int], dict[str, Any]]:
        """(last committed offset per partition, the progress committed with them) of ``stream``."""
        table = self._table(view)
        if table is None:
            return {}, {}
        entry = self._stream_entries(view, table).get(stream, {})
        offsets = {}
        for part in entry.get("partitions", []):
            done = table.transaction_version(_app_id(stream, int(part)))
            if done is not None:
                offsets[int(part)] = done
        return offsets, entry.get("progress", {})

    def streams(self, view: str) -> dict[str, dict[str, Any]]:
        """Every stream's latest committed progress for ``view``."""
        table = self._table(view)
        if table is None:
            return {}
        return {stream: entry.get("progress", {})
                for stream, entry in self._stream_entries(view, table).items()}

    def _stream_entries(self, view: str, table) -> dict[str, dict[str, Any]]:
        """Per stream, its progress and partitions: what this process last committed, else read from
        the table's newest commit that records them."""
        if view not in self._streams:
            self._streams[view] = _stream_metadata(table) if table is not None else {}
        return {k: dict(v) for k, v in self._streams[view].items()}

    # -- reads -------------------------------------------------------------------------------------
    def read(self, view: str, start: datetime | None = None, end: datetime | None = None,
             columns: list[str] | None = None, version: int | None = None) -> pa.Table:
        """Rows with start <= ts <= end (inclusive both ends), in the stored schema; ``version`` reads
        an older commit of the table."""
        import pyarrow.dataset as pds

        table = self._table(view, version)
        if table is None:
            raise FeatureViewNotFound(f"view {view!r} has no offline data")
        ts_col = self._timestamp_column(table)
        schema = pa.schema(table.schema().to_arrow())
        cond = None
        if start is not None:
            cond = pds.field(ts_col) >= pa.scalar(_utc(start), TS)
        if end is not None:
            upper = pds.field(ts_col) <= pa.scalar(_utc(end), TS)
            cond = upper if cond is None else cond & upper
        names = self._live_files(table, start, end)
        if version is not None:
            self._require_files(view, version, names)
        fs, base = filesystem(self._uri(view), self._options())
        paths = [f"{base}/{name}" for name in names]
        # pyarrow reads the files itself (deltalake's own dataset hands Arrow a Python filesystem)
        try:
            return pds.dataset(paths, format="parquet", filesystem=fs, schema=schema).to_table(columns=columns,
                                                                                             filter=cond)
        except (OSError, pa.ArrowInvalid) as exc:
            raise self._file_error(view, names, exc) from None

    @property
    def storage_options(self) -> dict[str, str]:
        return dict(self.config.storage_options)

    def files(self, view: str, start: datetime | None = None, end: datetime | None = None,
              version: int | None = None) -> list[str]:
        """Data files (URIs) whose rows' times can fall in [start, end] (inclusive), in the latest
        commit or in ``version``."""
        table = self._table(view, version)
        if table is None:
            return []
        names = self._live_files(table, start, end)
        if version is not None:
            self._require_files(view, version, names)
        return [f"{self._uri(view)}/{name}" for name in names]

    def _require_files(self, view: str, version: int, names: list[str]) -> None:
        """An old version is readable only while vacuum has left its files."""
        from pyarrow import fs as pafs

        fs, base = filesystem(self._uri(view), self._options())
        infos = fs.get_file_info([f"{base}/{name}" for name in names])
        missing = [name for name, info in zip(names, infos) if info.type == pafs.FileType.NotFound]
        if missing and self.version(view) == version:  # the latest version: its files must be there
            raise self.damaged_file(view, missing[0], f"is missing ({len(missing)} of its {len(names)} data "
                                                      f"files are)")
        if missing:
            raise NotFoundError(f"view {view!r}: version {version} of the Delta table {self._uri(view)} can no "
                                f"longer be read: vacuum removed {len(missing)} of its {len(names)} data files "
                                f"(e.g. {missing[0]})")

    def _live_files(self, table, start: datetime | None, end: datetime | None) -> list[str]:
        """Names of the data files of ``table`` (one version) whose time statistics meet [start, end]."""
        ts_col = self._timestamp_column(table)
        out = []
        for f in pa.table(table.get_add_actions(flatten=True)).to_pylist():
            lo, hi = f.get(f"min.{ts_col}"), f.get(f"max.{ts_col}")
            if start is not None and hi is not None and hi + _STAT_SLACK <= _utc(start):
                continue
            if end is not None and lo is not None and lo > _utc(end):
                continue
            out.append(f["path"])
        return sorted(out)

    def _timestamp_column(self, table) -> str:
        """``event_timestamp`` (what every writer of the product stores), else the first time column."""
        schema = pa.schema(table.schema().to_arrow())
        if "event_timestamp" in schema.names:
            return "event_timestamp"
        return next(f.name for f in schema if pa.types.is_timestamp(f.type))

    def schema(self, view: str) -> pa.Schema | None:
        table = self._table(view)
        return None if table is None else pa.schema(table.schema().to_arrow())

    def version(self, view: str) -> int | None:
        """The view's current table version (None: no table)."""
        table = self._table(view)
        return None if table is None else table.version()

    def fingerprint(self, view: str, version: int | None = None) -> str:
        """The table's identity and version (the latest, or ``version``): changes with every commit,
        and differs for a table deleted and made again."""
        table = self._table(view, version)
        if table is None:
            return "delta:none"
        return f"delta:{table.metadata().id}:{table.version()}"

    def views(self) -> list[str]:
        fs, base = filesystem(self.root, self._options())
        from pyarrow import fs as pafs

        try:
            infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        except FileNotFoundError:
            return []
        names = [Path(i.path).name for i in infos if i.type == pafs.FileType.Directory]
        return sorted(n for n in names if _VIEW_NAME.match(n) and self._table(n) is not None)

    def delete_view(self, view: str) -> bool:
        """Remove the view's table and, from the main store, its appended rows too; returns whether
        there was any. Idempotent."""
        existed = False
        in_area = self.root.rsplit("/", 1)[-1] in _AREAS
        stores = [self] if in_area else [self, self.appends, self.quarantine, self.quality, self.drift]
        for store in stores:
            uri = store._uri(view)
            exists = store._table(view) is not None
            store._tables.pop(view, None)
            store._streams.pop(view, None)
            if not exists:
                continue
            existed = True
            fs, path = filesystem(uri, store._options())
            if is_remote(uri):  # object by object: no directory objects to remove on S3
                from pyarrow import fs as pafs

                for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
                    if info.type == pafs.FileType.File:
                        fs.delete_file(info.path)
            else:
                shutil.rmtree(path, ignore_errors=True)
        return existed

    # -- upkeep ------------------------------------------------------------------------------------
    def compact(self, view: str, *, max_small_files: int = 16) -> int:
        """Merge the view's small files once there are more than ``max_small_files``; returns how many
        files were merged (0 when there was nothing to do)."""
        from deltalake import CommitProperties

        table = self._table(view)
        if table is None or len(table.file_uris()) <= max_small_files:
            return 0
        # Carries the streams' progress forward, so it stays near the head of the log (readers look
        # back to the newest commit that has it: delta-spark's commits do not).
        streams = self._stream_entries(view, table)
        props = CommitProperties(custom_metadata={PROGRESS_KEY: json.dumps(streams)} if streams else None,
                                 max_commit_retries=_COMMIT_RETRIES)
        try:
            metrics = table.optimize.compact(commit_properties=props)
        except Exception as exc:  # deltalake names no narrower error for a data file it cannot read
            names = [uri.rsplit("/", 1)[-1] for uri in table.file_uris()]
            raise self._file_error(view, names, exc) from None
        return int(metrics.get("numFilesRemoved", 0))

    def vacuum(self, view: str | None = None, grace: timedelta = DEFAULT_VACUUM_GRACE) -> list[str]:
        """Delete files no table version younger than ``grace`` needs, and staged files older than
        ``grace`` that no commit lists (also of views that never committed); returns their paths."""
        from pyarrow import fs as pafs

        removed: list[str] = []
        fs, base = filesystem(self.root, self._options())
        if view is not None:
            names = [view]
        else:
            infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
            names = sorted(Path(i.path).name for i in infos
                           if i.type == pafs.FileType.Directory and _VIEW_NAME.match(Path(i.path).name))
        cutoff = datetime.now(timezone.utc) - grace
        for name in names:
            table = self._table(name)
            if table is not None:
                removed += table.vacuum(retention_hours=int(grace.total_seconds() // 3600), dry_run=False,
                                        enforce_retention_duration=False, full=True)
                continue
            for info in fs.get_file_info(pafs.FileSelector(f"{base}/{name}", allow_not_found=True)):
                if info.type == pafs.FileType.File and _DATA_FILE.match(Path(info.path).name) \
                        and (info.mtime is None or info.mtime <= cutoff):
                    fs.delete_file(info.path)
                    removed.append(info.path)
        return removed


def _dictionary_columns(rows: pa.Table) -> list[str]:
    """Columns worth Parquet's dictionary encoding: at most half of an evenly spread sample of their
    values distinct. The writer would otherwise try a dictionary for every column and give up on the
    high-cardinality ones (measures, ids) only after hashing a dictionary page of each."""
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


def _app_id(stream: str, partition: int) -> str:
    return f"{stream}#{partition}"


def _stream_metadata(table) -> dict[str, dict[str, Any]]:
    """Per stream, the progress and the partitions with committed offsets, from the newest commit that
    records them (each stream commit and each compaction carries all of them forward)."""
    for limit in (64, None):
        for commit in table.history(limit):  # newest first
            text = commit.get(PROGRESS_KEY)
            if text:
                return json.loads(text)
    return {}


def _stat_time(value: datetime) -> str:
    return _iso_z(value)




def _conform(view: str, table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in the stored column order and types; a missing or extra column, or a type that does
    not convert safely, is an error naming the column."""
    names = set(table.column_names)
    missing = [f.name for f in schema if f.name not in names]
    extra = [n for n in table.column_names if schema.get_field_index(n) < 0]
    if missing or extra:
        raise InvalidInputError(f"view {view!r}: columns differ from the stored schema "
                                f"(missing {missing}, unexpected {extra})")
    columns = []
    for f in schema:
        col = table.column(f.name)
        if not col.type.equals(f.type):
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidInputError(f"view {view!r}: column {f.name!r} is {col.type}, stored as {f.type} "
                                        f"({exc})") from None
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def _translated(view: str, exc: Exception) -> Exception:
    """delta-rs errors as the product's: a commit another writer won is a conflict, the rest bad input."""
    name = type(exc).__name__
    text = str(exc)
    if "Conflict" in name or "concurrent" in text.lower() or "conflict" in text.lower() \
            or "already exists" in text.lower():
        return ConflictError(f"view {view!r}: a concurrent commit conflicted with this one: {text}")
    if "Schema" in name or "schema" in text.lower():
        return InvalidInputError(f"view {view!r}: the rows do not match the stored schema: {text}")
    return exc
