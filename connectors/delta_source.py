"""Delta Lake sources: a DeltaSource's table at its current (or pinned) version, as Parquet files.

``deltalake`` (delta-rs) reads the transaction log: the table's schema, its version and the data files
of that snapshot. The rows themselves are the engine's to scan: local files by path, or a pyarrow
dataset over the files when they are on object storage or carry partition values in the log (the
dataset fills those columns in). Tables whose rows need more than their files (deletion vectors,
column mapping, ...) are refused by name rather than read wrong.
"""

from __future__ import annotations

import operator
import os
from datetime import datetime, timedelta, timezone
from functools import reduce
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from connectors.object_store import expand, filesystem, is_remote
from featurestore.errors import BackendUnavailableError, InvalidInputError, NotFoundError
from featurestore.ports.engine import ViewData
from featurestore.ports.source_reader import CAP_VERSIONS, SourceReader
from featurestore.sources import DeltaSource

# Reader features that change nothing about reading the snapshot's Parquet files as they are.
_READABLE_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"})
# Delta statistics keep times to the millisecond, so a file's true bounds may lie this far outside them.
_STATS_GRAIN = timedelta(milliseconds=1)


def _owner(source: DeltaSource) -> str:
    return f"DeltaSource {source.name!r}"


def table_uri(source: DeltaSource, repo_path: Path) -> str:
    """The table's location: an s3:// URI as written, or an absolute local path."""
    if is_remote(source.path):
        return source.path.rstrip("/")
    raw = os.path.expanduser(source.path)
    return str(Path(raw if os.path.isabs(raw) else repo_path / raw).resolve())


def open_table(source: DeltaSource, repo_path: Path, version: int | None = None) -> DeltaTable:
    """The table at ``version`` (default: the source's pin, else the latest), checked to be readable
    by file listing."""
    uri, options = table_uri(source, repo_path), expand(source.storage_options, _owner(source))
    version = source.version if version is None else version
    try:
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            raise NotFoundError(f"{_owner(source)}: no Delta table at {source.path!r} (resolved to {uri})")
        table = DeltaTable(uri, version=version, storage_options=options)
    except TableNotFoundError:
        raise NotFoundError(f"{_owner(source)}: no Delta table at {source.path!r} (resolved to {uri})") from None
    except (OSError, DeltaError) as exc:
        text = str(exc)
        if "NoSuchBucket" in text or "NO_SUCH_BUCKET" in text:
            bucket = uri.split("://", 1)[1].split("/")[0]
            raise NotFoundError(f"{_owner(source)}: bucket {bucket!r} does not exist ({uri})") from None
        if version is not None and "version" in text.lower():
            raise NotFoundError(f"{_owner(source)}: the table at {uri} has no version {version}: {text}") from None
        if isinstance(exc, OSError):
            raise BackendUnavailableError(f"{_owner(source)}: cannot reach the Delta table at {uri}: {text}") from exc
        raise InvalidInputError(f"{_owner(source)}: cannot read the Delta table at {uri}: {text}") from exc
    _check_readable(source, table)
    return table


def _check_readable(source: DeltaSource, table: DeltaTable) -> None:
    protocol = table.protocol()
    unsupported = sorted(set(protocol.reader_features or ()) - _READABLE_FEATURES)
    mapping = table.metadata().configuration.get("delta.columnMapping.mode", "none")
    if mapping != "none" and "columnMapping" not in unsupported:
        unsupported.append("columnMapping")
    if unsupported:
        raise InvalidInputError(f"{_owner(source)}: the Delta table at {table.table_uri} uses "
                                f"{', '.join(unsupported)}, which reading its Parquet files cannot honour")


def _partition_value(field: pa.Field, text: Any) -> pds.Expression:
    if text is None:
        return pds.field(field.name).is_null()
    return pds.field(field.name) == pa.scalar(text).cast(field.type)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def snapshot_data(source: DeltaSource, repo_path: Path, table: DeltaTable, start: datetime | None,
                  end: datetime | None) -> ViewData:
    """The rows of ``table`` (one snapshot) as engine input: its data files, less those whose
    timestamp statistics lie wholly outside [start, end]."""
    schema = pa.schema(table.schema().to_arrow())
    partitions = table.metadata().partition_columns
    ts = source.timestamp_field
    uri = table_uri(source, repo_path)
    fs, base = filesystem(uri, expand(source.storage_options, _owner(source)))
    paths, parts = [], []
    for add in pa.table(table.get_add_actions(flatten=True)).to_pylist():
        lo, hi = add.get(f"min.{ts}"), add.get(f"max.{ts}")
        if start is not None and isinstance(hi, datetime) and _utc(hi) + _STATS_GRAIN < _utc(start):
            continue
        if end is not None and isinstance(lo, datetime) and _utc(lo) - _STATS_GRAIN > _utc(end):
            continue
        paths.append(f"{base}/{add['path']}")
        parts.append(reduce(operator.and_, [_partition_value(schema.field(p), add.get(f"partition.{p}"))
                                            for p in partitions], pds.scalar(True)))
    if not paths:
        return ViewData(source.timestamp_field, source.created_timestamp_field, table=schema.empty_table())
    if is_remote(uri) or partitions:
        dataset = pds.FileSystemDataset.from_paths(paths, schema=schema, format=pds.ParquetFileFormat(),
                                                   filesystem=fs, partitions=parts)
        return ViewData(source.timestamp_field, source.created_timestamp_field, dataset=dataset,
                        storage_options=tuple(sorted((source.storage_options or {}).items())))
    return ViewData(source.timestamp_field, source.created_timestamp_field, files=tuple(paths))


class DeltaSourceReader(SourceReader):
    """DeltaSource rows: the data files of the table's snapshot, which the engines scan."""

    capabilities = frozenset({CAP_VERSIONS})

    def schema(self, source: DeltaSource) -> pa.Schema:
        return pa.schema(open_table(source, self.repo_path).schema().to_arrow())

    def fingerprint(self, source: DeltaSource) -> str:
        """``delta:<table uri>:<version>``: a commit makes a new version, so it changes with the rows."""
        return f"delta:{table_uri(source, self.repo_path)}:{self.version(source)}"

    def version(self, source: DeltaSource) -> int:
        return open_table(source, self.repo_path).version()

    def read(self, source: DeltaSource, columns: list[str] | None, start: datetime | None,
             end: datetime | None) -> ViewData:
        return snapshot_data(source, self.repo_path, open_table(source, self.repo_path), start, end)

    def read_version(self, source: DeltaSource, version: int, columns: list[str] | None,
                     start: datetime | None, end: datetime | None) -> ViewData:
        return snapshot_data(source, self.repo_path, open_table(source, self.repo_path, version), start, end)
