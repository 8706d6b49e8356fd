"""Spark writes done by the executors: the offline store and the online store.

No feature row passes through the driver. Each task receives its partition as Arrow batches
(``DataFrame.mapInArrow``) and writes them itself; only a few small rows per task come back.

- ``write_offline``: tasks *stage* their rows as data files of the view (invisible, not yet committed)
  through the offline store's ``stage`` and return the files' descriptions; the driver collects those
  descriptions and commits them once with ``commit_staged``: the same interval-replace semantics and
  the same atomic commit as ``OfflineStore.write``. Any offline store that declares
  ``CAP_STAGED_WRITE`` works. A failed or retried task, or a job that dies before the commit, leaves
  only unreferenced files, which the store's ``vacuum()`` removes.
- ``write_online``: tasks open the online store from its config section, upsert their batches through
  ``OnlineStore.write`` (event-time monotonic, so retried tasks and reruns are harmless), close it and
  return one ``(written, skipped)`` row; the driver sums them.

Where the executors run matters: the offline store's path must mean the same place to the executors
as to the driver (object storage such as ``s3://``, a shared filesystem mounted at the same path on
every node, or local mode). The SQLite online store is a local file: it works in local mode, where the
executors share the driver's filesystem; on a cluster use the Redis online store. The executors must
be able to import ``featurestore`` and ``connectors`` (the package installed on every node).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow as pa
from pydantic import BaseModel

from featurestore.config import backend_config
from featurestore.errors import InvalidInputError
from featurestore.ports.engine import CREATED_TS, EVENT_TS
from featurestore.ports.offline_store import CAP_STAGED_WRITE, OfflineStore
from featurestore.ports.online_store import WriteResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# A task stages a file set every time this many bytes of Arrow data have arrived (bounds its memory).
DEFAULT_STAGE_BYTES = 64 * 1024 * 1024
# Rows per OnlineStore.write call inside a task.
DEFAULT_ONLINE_BATCH_ROWS = 50_000

_META = "meta"


def _offline_section(store_config: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """The offline store's config section (``{"type": "parquet", ...}``; the type defaults to parquet),
    checked on the driver: a store the executors cannot stage into fails here, before any task."""
    if isinstance(store_config, BaseModel):
        section = store_config.model_dump()
    elif isinstance(store_config, dict):
        section = {"type": "parquet", **store_config}
    else:
        raise InvalidInputError(f"expected an offline store config or its config section, got {store_config!r}")
    cls, _ = backend_config("offline_store", section)
    if CAP_STAGED_WRITE not in cls.capabilities:
        raise InvalidInputError(f"write_offline needs an offline store with staged writes; "
                                f"{section['type']!r} has none")
    return section


def _offline_store(section: dict[str, Any], repo: str, project: str) -> OfflineStore:
    cls, config = backend_config("offline_store", section)
    return cls(config, Path(repo), project)


def _conform(table: pa.Table, target: pa.Schema | None) -> pa.Table:
    """Cast the columns ``target`` names to its types (safe casts); other columns are left to the store's
    own checks (a missing or extra column is reported there)."""
    if target is None:
        return table
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        i = target.get_field_index(name)
        if i >= 0 and not column.type.equals(target.field(i).type):
            try:
                column = column.cast(target.field(i).type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidInputError(f"column {name!r} ({column.type}) does not convert to "
                                        f"{target.field(i).type}: {exc}") from None
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _chunks(batches: Iterator[pa.RecordBatch], max_bytes: int | None = None,
            max_rows: int | None = None) -> Iterator[pa.Table]:
    """Arrow batches regrouped into tables of about ``max_bytes`` / ``max_rows`` (empty batches dropped)."""
    pending: list[pa.RecordBatch] = []
    size = rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        size += batch.nbytes
        rows += batch.num_rows
        if (max_bytes is not None and size >= max_bytes) or (max_rows is not None and rows >= max_rows):
            yield pa.Table.from_batches(pending)
            pending, size, rows = [], 0, 0
    if pending:
        yield pa.Table.from_batches(pending)


def frame_schema(keys: list[tuple[str, pa.DataType]],
                 features: list[tuple[str, str, pa.DataType]]) -> pa.Schema:
    """The Arrow schema of ``SparkEngine.read_frame(data, keys, features, ...)``'s rows as the local
    engine's ``read_rows`` types them (declared key and feature types, UTC microsecond timestamps):
    pass it as ``write_offline(..., schema=)`` so both engines store identical files.

    >>> frame_schema([("driver_id", pa.int32())], [("trips", "trips", pa.float64())])
    driver_id: int32
    trips: double
    event_timestamp: timestamp[us, tz=UTC]
    created_timestamp: timestamp[us, tz=UTC]
    """
    ts = pa.timestamp("us", tz="UTC")
    return pa.schema([*[(k, t) for k, t in keys], *[(out, t) for _, out, t in features],
                      (EVENT_TS, ts), (CREATED_TS, ts)])


def _meta_batch(records: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([json.dumps(r) for r in records], pa.string())], names=[_META])


def write_offline(df: "DataFrame", store_config: BaseModel | dict[str, Any],
                  repo_path: str | Path, project: str, view: str, start: datetime, end: datetime,
                  ts_col: str = EVENT_TS, *, schema: pa.Schema | None = None,
                  stage_bytes: int = DEFAULT_STAGE_BYTES) -> int:
    """Replace ``view``'s offline rows in [start, end) by ``df``'s rows, written by the executors.

    Same contract as ``OfflineStore.write(view, <df as a table>, start, end, ts_col)``: every row
    of ``df`` must have a non-null ``ts_col`` inside [start, end) (else InvalidInputError, and nothing
    is committed); rows of other times are kept; a rerun replaces rather than duplicates; an empty
    ``df`` still records the interval. ``schema`` (optional) is the Arrow schema to store: each task
    casts the columns it names to its types (e.g. the view's declared int32 keys, which Spark may
    carry as another type); by default the view's stored schema when it has data, else Spark's own
    Arrow types. Returns the number of rows written.

    Each task writes a file every ``stage_bytes`` of rows it holds;
    ``df.repartition(F.to_date(ts_col))`` beforehand gives files that each hold about one date.

    >>> write_offline(df, {"type": "parquet", "path": "data/offline"}, repo, "demo", "driver_stats",
    ...               start, end)  # doctest: +SKIP
    """
    section = _offline_section(store_config)
    repo = str(Path(repo_path).resolve())
    store = _offline_store(section, repo, project)
    if ts_col not in df.columns:
        raise InvalidInputError(f"timestamp column {ts_col!r} is not in the DataFrame ({', '.join(df.columns)})")
    target = schema if schema is not None else store.schema(view)
    start_iso, end_iso = start.isoformat(), end.isoformat()

    def stage_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        task_store = _offline_store(section, repo, project)
        lo, hi = datetime.fromisoformat(start_iso), datetime.fromisoformat(end_iso)
        staged: list[dict[str, Any]] = []
        try:
            for table in _chunks(batches, max_bytes=stage_bytes):
                staged += task_store.stage(view, _conform(table, target), ts_col, start=lo, end=hi)
        except InvalidInputError as exc:
            # Reported to the driver as data (which raises it as InvalidInputError), not as a task failure.
            staged.append({"error": str(exc)})
        yield _meta_batch(staged)

    records = [json.loads(row[0]) for row in df.mapInArrow(stage_partition, f"{_META} string").collect()]
    errors = [r["error"] for r in records if "error" in r]
    staged = [r for r in records if "error" not in r]
    if errors:
        store.discard_staged(view, staged)
        more = f" (and {len(errors) - 1} more failing task(s))" if len(errors) > 1 else ""
        raise InvalidInputError(f"view {view!r}: {errors[0]}{more}")
    empty_schema = None
    if not staged and target is None:
        # Nothing staged and no stored schema: the (row-free) Arrow schema Spark gives the tasks.
        empty_schema = df.limit(0).toArrow().schema
    return store.commit_staged(view, staged, start, end, ts_col, schema=target if target is not None else empty_schema)


def write_online(df: "DataFrame", online_store_section: dict[str, Any], repo_path: str | Path, project: str,
                 view: str, join_keys: list[str], ttl: timedelta | None, *,
                 event_ts_column: str = EVENT_TS, created_ts_column: str | None = CREATED_TS,
                 batch_rows: int = DEFAULT_ONLINE_BATCH_ROWS) -> WriteResult:
    """Upsert ``df``'s rows into the online store from the executors; returns the summed WriteResult.

    ``online_store_section`` is the repo config's ``online_store`` mapping (``{"type": "redis", "url":
    ...}``); each task builds the store from it, writes its partition through ``OnlineStore.write``
    (monotonic per key: an older event never replaces a newer one, so retries and reruns are safe),
    and closes it. ``df`` holds the join key columns, the feature columns, ``event_ts_column`` and
    (if present) ``created_ts_column``; every other column is stored as a feature. The SQLite store is
    a local file, fine in local mode only; a cluster needs Redis.

    >>> write_online(df, {"type": "redis", "url": "redis://127.0.0.1:6379/0"}, repo, "demo",
    ...              "driver_stats", ["driver_id"], timedelta(days=1))  # doctest: +SKIP
    """
    section = dict(online_store_section)
    backend_config("online_store", section)  # a bad section fails here, on the driver, before any task
    repo = str(Path(repo_path).resolve())
    missing = [c for c in [*join_keys, event_ts_column] if c not in df.columns]
    if missing:
        raise InvalidInputError(f"column {missing[0]!r} is not in the DataFrame ({', '.join(df.columns)})")
    created = created_ts_column if created_ts_column and created_ts_column in df.columns else None
    keys = list(join_keys)

    def write_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        cls, config = backend_config("online_store", section)
        store = cls(config, Path(repo), project)
        written = skipped = 0
        try:
            for table in _chunks(batches, max_rows=batch_rows):
                result = store.write(view, keys, table, event_ts_column=event_ts_column,
                                     created_ts_column=created, ttl=ttl)
                written += result.written
                skipped += result.skipped_stale
        finally:
            store.close()
        yield pa.RecordBatch.from_arrays([pa.array([written], pa.int64()), pa.array([skipped], pa.int64())],
                                         names=["written", "skipped"])

    rows = df.mapInArrow(write_partition, "written long, skipped long").collect()
    return WriteResult(written=sum(r[0] for r in rows), skipped_stale=sum(r[1] for r in rows))
