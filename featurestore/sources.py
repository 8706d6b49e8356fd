"""Source definitions: where a feature view's rows come from.

These are declarations only; reading them is the job of ``connectors/`` (one module per backend).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from featurestore.errors import DefinitionError


def _check_source_name(kind: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"{kind} needs a non-empty string name, got {name!r}", obj=str(name))


@dataclass(frozen=True)
class DataSource:
    """Base of every batch source: rows with an event timestamp (and optionally a created one)."""

    kind: ClassVar[str] = ""
    name: str
    timestamp_field: str = "event_timestamp"
    created_timestamp_field: str | None = None
    field_mapping: dict[str, str] = field(default_factory=dict, hash=False)
    description: str = ""

    def __post_init__(self) -> None:
        _check_source_name(type(self).__name__, self.name)
        if not self.timestamp_field:
            raise DefinitionError(f"{type(self).__name__} {self.name!r} needs a timestamp_field",
                                  obj=self.name, field="timestamp_field")

    def to_spec(self) -> dict[str, Any]:
        spec = {"kind": self.kind, "name": self.name, "timestamp_field": self.timestamp_field,
                "created_timestamp_field": self.created_timestamp_field,
                "field_mapping": dict(self.field_mapping), "description": self.description}
        spec.update(self._extra_spec())
        return spec

    def _extra_spec(self) -> dict[str, Any]:
        return {}


_FILE_FORMATS = ("parquet", "csv")


@dataclass(frozen=True)
class FileSource(DataSource):
    """Parquet or CSV data: a file, a directory (read recursively) or a glob.

    Relative paths resolve against the repo directory. ``file_format`` is inferred from the extension
    when not given (a directory or an extension-less glob defaults to Parquet).

    >>> FileSource(name="stats", path="data/stats.parquet", timestamp_field="ts").file_format
    'parquet'
    """

    kind: ClassVar[str] = "file"
    path: str = ""
    file_format: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path:
            raise DefinitionError(f"FileSource {self.name!r} needs a path", obj=self.name, field="path")
        fmt = self.file_format
        if fmt is None:
            lower = self.path.lower()
            fmt = "csv" if lower.endswith((".csv", ".csv.gz")) else "parquet"
        if fmt not in _FILE_FORMATS:
            raise DefinitionError(f"FileSource {self.name!r}: file_format must be one of {_FILE_FORMATS}",
                                  obj=self.name, field="file_format")
        object.__setattr__(self, "file_format", fmt)

    def _extra_spec(self) -> dict[str, Any]:
        return {"path": self.path, "file_format": self.file_format}


@dataclass(frozen=True)
class SqlSource(DataSource):
    """A table or a query in any database SQLAlchemy reaches.

    Give ``table`` (optionally schema-qualified, ``"schema.table"``) or ``query``, not both. ``url`` is
    a SQLAlchemy URL; ``${VAR}`` in it is replaced from the environment when the source is read, so
    passwords need not live in the repo or the registry.
    """

    kind: ClassVar[str] = "sql"
    url: str = ""
    table: str | None = None
    query: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.url:
            raise DefinitionError(f"SqlSource {self.name!r} needs a SQLAlchemy url", obj=self.name,
                                  field="url")
        if (self.table is None) == (self.query is None):
            raise DefinitionError(f"SqlSource {self.name!r} takes exactly one of table= or query=",
                                  obj=self.name, field="table")

    def _extra_spec(self) -> dict[str, Any]:
        return {"url": self.url, "table": self.table, "query": self.query}


@dataclass(frozen=True)
class PushSource(DataSource):
    """Rows pushed by clients (``POST /push`` or ``store.push``) straight to the stores.

    ``batch_source`` holds the same rows' history for exports and backfills; the push source takes its
    timestamp fields from it unless given.
    """

    kind: ClassVar[str] = "push"
    batch_source: DataSource | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.batch_source, DataSource) or isinstance(self.batch_source, PushSource):
            raise DefinitionError(f"PushSource {self.name!r} needs a batch_source (FileSource, SqlSource)",
                                  obj=self.name, field="batch_source")
        if self.timestamp_field == "event_timestamp":
            object.__setattr__(self, "timestamp_field", self.batch_source.timestamp_field)
        if self.created_timestamp_field is None:
            object.__setattr__(self, "created_timestamp_field", self.batch_source.created_timestamp_field)
        super().__post_init__()

    def _extra_spec(self) -> dict[str, Any]:
        return {"batch_source": self.batch_source.to_spec() if self.batch_source else None}


def batch_source_of(source: DataSource) -> DataSource:
    """The source batch reads (exports, materialization) use: a push source's history."""
    if isinstance(source, PushSource):
        return source.batch_source  # type: ignore[return-value]
    return source


_SOURCE_KINDS: dict[str, type[DataSource]] = {"file": FileSource, "sql": SqlSource, "push": PushSource}


def register_source_kind(cls: type[DataSource]) -> type[DataSource]:
    """Make a source class known to ``source_from_spec`` (used by plugins and later source kinds)."""
    _SOURCE_KINDS[cls.kind] = cls
    return cls


def source_from_spec(spec: dict[str, Any] | None) -> DataSource | None:
    if spec is None:
        return None
    spec = dict(spec)
    kind = spec.pop("kind")
    if isinstance(spec.get("batch_source"), dict):
        spec["batch_source"] = source_from_spec(spec["batch_source"])
    cls = _SOURCE_KINDS.get(kind)
    if cls is None:
        raise DefinitionError(f"unknown source kind {kind!r}", obj=spec.get("name"))
    return cls(**spec)
