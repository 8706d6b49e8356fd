"""Spark writes done by the executors: the offline store and the online store.

No feature row passes through the driver; only a few small rows per task (or a commit's metrics)
come back.

- ``write_offline``: the executors write the rows as Parquet files of the view's Delta table and
  delta-spark commits them once, replacing ``[start, end)`` (``engines.spark_delta``): the same
  interval-replace semantics and the same atomic commit as ``OfflineStore.write``, on any offline store
  that declares ``CAP_DELTA``. A failed task or job leaves only files no commit lists, which the
  store's ``vacuum()`` removes.
- ``write_online``: tasks open the online store from its config section, upsert their batches through
  ``OnlineStore.write`` (event-time monotonic, so retried tasks and reruns are harmless), close it and
  return one ``(written, skipped)`` row; the driver sums them (``DataFrame.mapInArrow``).

Where the executors run matters: the offline store's path must mean the same place to the executors
as to the driver (a shared filesystem mounted at the same path on every node, or local mode; object
storage needs Hadoop's S3 connector and its settings in the session's ``conf``). The SQLite online store is a local file: it works in local mode, where the
executors share the driver's filesystem; on a cluster use the Redis online store. The executors must
be able to import ``featurestore`` and ``connectors`` (the package installed on every node).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow as pa
from pydantic import BaseModel

from featurestore import values
from featurestore.config import backend_config
from featurestore.engines.spark_delta import replace_interval
from featurestore.errors import InvalidInputError
from featurestore.ports.engine import CREATED_TS, EVENT_TS
from featurestore.ports.offline_store import CAP_DELTA, OfflineStore
from featurestore.ports.online_store import WriteResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# Rows per OnlineStore.write call inside a task.
DEFAULT_ONLINE_BATCH_ROWS = 50_000


def _offline_store(store_config: BaseModel | dict[str, Any], repo: str, project: str) -> OfflineStore:
    """The offline store of a config or its config section (``{"type": "parquet", ...}``; the type
    defaults to parquet); one whose views are not Delta tables fails here, before any task."""
    if isinstance(store_config, BaseModel):
        section = store_config.model_dump()
    elif isinstance(store_config, dict):
        section = {"type": "parquet", **store_config}
    else:
        raise InvalidInputError(f"expected an offline store config or its config section, got {store_config!r}")
    cls, config = backend_config("offline_store", section)
    if CAP_DELTA not in cls.capabilities:
        raise InvalidInputError(f"write_offline writes Delta tables through delta-spark; offline store "
                                f"{section['type']!r} does not keep its views as Delta tables")
    return cls(config, Path(repo), project)


def _conformed(df: "DataFrame", target: pa.Schema | None, view: str) -> "DataFrame":
    """``df`` with ``target``'s columns in its order and types (Spark casts; ANSI mode refuses a value
    that does not fit); a missing or extra column is an error naming it."""
    if target is None:
        return df
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_type

    missing = [n for n in target.names if n not in df.columns]
    extra = [c for c in df.columns if c not in target.names]
    if missing or extra:
        raise InvalidInputError(f"view {view!r}: columns differ from the stored schema "
                                f"(missing {missing}, unexpected {extra})")
    return df.select(*[F.col(f"`{f.name}`").cast(from_arrow_type(f.type)).alias(f.name) for f in target])


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _chunks(batches: Iterator[pa.RecordBatch], max_rows: int) -> Iterator[pa.Table]:
    """Arrow batches regrouped into tables of about ``max_rows`` (empty batches dropped)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        rows += batch.num_rows
        if rows >= max_rows:
            yield pa.Table.from_batches(pending)
            pending, rows = [], 0
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


def write_offline(df: "DataFrame", store_config: BaseModel | dict[str, Any],
                  repo_path: str | Path, project: str, view: str, start: datetime, end: datetime,
                  ts_col: str = EVENT_TS, *, schema: pa.Schema | None = None) -> int:
    """Replace ``view``'s offline rows in [start, end) by ``df``'s rows, written by the executors and
    committed once by delta-spark.

    Same contract as ``OfflineStore.write(view, <df as a table>, start, end, ts_col)``: every row
    of ``df`` must have a non-null ``ts_col`` inside [start, end) (else InvalidInputError, and nothing
    is committed); rows of other times are kept; a rerun replaces rather than duplicates; an empty
    ``df`` still commits (and fixes a new view's schema). ``schema`` (optional) is the Arrow schema to
    store: the columns are cast to its types (e.g. the view's declared int32 keys, which Spark may
    carry as another type); by default the view's stored schema when it has data, else Spark's own
    types. Returns the number of rows written. The session must have delta-spark
    (``SparkEngineConfig.delta``, on by default).

    >>> write_offline(df, {"type": "parquet", "path": "data/offline"}, repo, "demo", "driver_stats",
    ...               start, end)  # doctest: +SKIP
    """
    store = _offline_store(store_config, str(Path(repo_path).resolve()), project)
    if ts_col not in df.columns:
        raise InvalidInputError(f"timestamp column {ts_col!r} is not in the DataFrame ({', '.join(df.columns)})")
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise InvalidInputError(f"write_offline needs start < end, got {start} .. {end}")
    if "Delta" not in df.sparkSession.conf.get("spark.sql.extensions", ""):
        raise InvalidInputError("write_offline needs delta-spark in the Spark session "
                                "(spark_session(SparkEngineConfig(delta=True)))")
    frame = _conformed(df, schema if schema is not None else store.schema(view), view)
    return replace_interval(frame, store.table_uri(view), ts_col, start, end, view)


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
            for table in _chunks(batches, batch_rows):
                # Batch rows: NaN means missing, stored as null (featurestore.values).
                result = store.write(view, keys, values.without_nan(table), event_ts_column=event_ts_column,
                                     created_ts_column=created, ttl=ttl)
                written += result.written
                skipped += result.skipped_stale
        finally:
            store.close()
        yield pa.RecordBatch.from_arrays([pa.array([written], pa.int64()), pa.array([skipped], pa.int64())],
                                         names=["written", "skipped"])

    rows = df.mapInArrow(write_partition, "written long, skipped long").collect()
    return WriteResult(written=sum(r[0] for r in rows), skipped_stale=sum(r[1] for r in rows))
