"""Source definitions: where a feature view's rows come from.

These are declarations only; reading them is the job of ``connectors/`` (one module per backend).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
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
    when not given (a directory or an extension-less glob defaults to Parquet). On object storage the
    path is ``s3://bucket/key``, ``s3://bucket/prefix/`` or a glob such as ``s3://bucket/raw/*.parquet``;
    ``storage_options`` (see DeltaSource) say how to reach it.

    >>> FileSource(name="stats", path="data/stats.parquet", timestamp_field="ts").file_format
    'parquet'
    """

    kind: ClassVar[str] = "file"
    path: str = ""
    file_format: str | None = None
    storage_options: dict[str, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path:
            raise DefinitionError(f"FileSource {self.name!r} needs a path", obj=self.name, field="path")
        _check_storage_options(self)
        fmt = self.file_format
        if fmt is None:
            lower = self.path.lower()
            fmt = "csv" if lower.endswith((".csv", ".csv.gz")) else "parquet"
        if fmt not in _FILE_FORMATS:
            raise DefinitionError(f"FileSource {self.name!r}: file_format must be one of {_FILE_FORMATS}",
                                  obj=self.name, field="file_format")
        object.__setattr__(self, "file_format", fmt)

    def _extra_spec(self) -> dict[str, Any]:
        return {"path": self.path, "file_format": self.file_format, **_storage_spec(self)}


def _check_storage_options(source: Any) -> None:
    options = source.storage_options
    if options is not None and not (isinstance(options, dict)
                                    and all(isinstance(k, str) and isinstance(v, str) for k, v in options.items())):
        raise DefinitionError(f"{type(source).__name__} {source.name!r}: storage_options must map strings to "
                              f"strings", obj=source.name, field="storage_options")


def _storage_spec(source: Any) -> dict[str, Any]:
    """``storage_options`` as written (``${VAR}`` unexpanded), only when given, so sources without
    them keep the spec they had."""
    return {"storage_options": dict(source.storage_options)} if source.storage_options else {}


@dataclass(frozen=True)
class DeltaSource(DataSource):
    """A Delta Lake table: a local directory (relative to the repo) or ``s3://bucket/prefix``.

    Reads see the table's current snapshot, or version ``version`` when it is pinned. Tables that need
    more than their Parquet files to be read (deletion vectors, column mapping) are refused.
    ``storage_options`` reach object storage, in delta-rs's names (``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``); write
    ``${VAR}`` for secrets: it is replaced from the environment when the table is read, and the
    registry keeps the placeholder.

    >>> DeltaSource(name="txns", path="s3://lake/txns", timestamp_field="ts",
    ...             storage_options={"AWS_SECRET_ACCESS_KEY": "${LAKE_SECRET}"}).to_spec()["storage_options"]
    {'AWS_SECRET_ACCESS_KEY': '${LAKE_SECRET}'}
    """

    kind: ClassVar[str] = "delta"
    path: str = ""
    version: int | None = None
    storage_options: dict[str, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path:
            raise DefinitionError(f"DeltaSource {self.name!r} needs a path", obj=self.name, field="path")
        if self.version is not None and (isinstance(self.version, bool) or not isinstance(self.version, int)
                                         or self.version < 0):
            raise DefinitionError(f"DeltaSource {self.name!r}: version must be a table version >= 0, got "
                                  f"{self.version!r}", obj=self.name, field="version")
        _check_storage_options(self)

    def _extra_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"path": self.path, **_storage_spec(self)}
        if self.version is not None:
            spec["version"] = self.version
        return spec


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
class StreamSource(DataSource):
    """Base of sources whose events arrive one by one (Kafka, push). ``batch_source`` (required) holds
    the same events' history for exports and backfills, fixes their columns and types, and gives the
    timestamp fields unless they are set here.

    Events reach a stream job (``featurestore stream start <view>``) through the Kafka topic
    ``topic`` on ``bootstrap_servers``. Each message is a JSON object whose fields are the source's
    columns, with the event time in ``timestamp_field`` (ISO 8601 text, a time without zone being UTC,
    or epoch milliseconds). A message that cannot be read (bad JSON, a missing column or event time, a
    value of the wrong type) goes to ``dead_letter_topic`` (default ``<topic>.dead-letter``) with the
    reason. ``watermark_delay`` is how far out of order events may arrive; an event older than the
    watermark by more than ``allowed_lateness`` is late: counted, sent to the dead-letter topic with
    reason ``late``, and applied to neither store (so both keep agreeing).
    """

    batch_source: DataSource | None = None
    bootstrap_servers: str | None = None
    topic: str | None = None
    format: str = "json"
    dead_letter_topic: str | None = None
    group_id: str | None = None
    watermark_delay: timedelta = timedelta(seconds=5)
    allowed_lateness: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        kind, name = type(self).__name__, self.name
        if not isinstance(self.batch_source, DataSource) or isinstance(self.batch_source, StreamSource):
            raise DefinitionError(f"{kind} {name!r} needs a batch_source (FileSource, SqlSource, DeltaSource): the "
                                  f"events' history, which also fixes their columns and types",
                                  obj=name, field="batch_source")
        if self.timestamp_field == "event_timestamp":
            object.__setattr__(self, "timestamp_field", self.batch_source.timestamp_field)
        if self.created_timestamp_field is None:
            object.__setattr__(self, "created_timestamp_field", self.batch_source.created_timestamp_field)
        if self.topic is not None or self.bootstrap_servers is not None:
            self._check_kafka()
        super().__post_init__()

    def _check_kafka(self) -> None:
        kind, name = type(self).__name__, self.name
        if not isinstance(self.bootstrap_servers, str) or not self.bootstrap_servers.strip():
            raise DefinitionError(f"{kind} {name!r} needs bootstrap_servers (host:port[,host:port]) with "
                                  f"its topic", obj=name, field="bootstrap_servers")
        if not isinstance(self.topic, str) or not _TOPIC.match(self.topic):
            raise DefinitionError(f"{kind} {name!r}: topic {self.topic!r} is not a Kafka topic name",
                                  obj=name, field="topic")
        if self.format not in _STREAM_FORMATS:
            raise DefinitionError(f"{kind} {name!r}: format must be one of {_STREAM_FORMATS}, "
                                  f"got {self.format!r}", obj=name, field="format")
        for knob in ("watermark_delay", "allowed_lateness"):
            value = getattr(self, knob)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = timedelta(seconds=value)
                object.__setattr__(self, knob, value)
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise DefinitionError(f"{kind} {name!r}: {knob} must be a timedelta >= 0, got {value!r}",
                                      obj=name, field=knob)
        if self.dead_letter_topic is None:
            object.__setattr__(self, "dead_letter_topic", f"{self.topic}.dead-letter")
        elif not _TOPIC.match(str(self.dead_letter_topic)) or self.dead_letter_topic == self.topic:
            raise DefinitionError(f"{kind} {name!r}: dead_letter_topic {self.dead_letter_topic!r} must be "
                                  f"another valid topic name", obj=name, field="dead_letter_topic")

    @property
    def streams(self) -> bool:
        """True when the events go through a Kafka topic to a stream job."""
        return self.topic is not None

    def _extra_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"batch_source": self.batch_source.to_spec() if self.batch_source else None}
        if self.streams:
            spec.update({"bootstrap_servers": self.bootstrap_servers, "topic": self.topic, "format": self.format,
                         "dead_letter_topic": self.dead_letter_topic, "group_id": self.group_id,
                         "watermark_delay": self.watermark_delay.total_seconds(),
                         "allowed_lateness": self.allowed_lateness.total_seconds()})
        return spec


@dataclass(frozen=True)
class PushSource(StreamSource):
    """Rows pushed by clients (``POST /push`` or ``store.push``).

    Without a topic, pushes go straight to the stores (validated, event-time monotonic). With
    ``bootstrap_servers`` and ``topic`` (see StreamSource), a push is validated, written to the topic
    and applied by the view's stream job, the same path as a KafkaSource: that is how views with
    aggregations take pushes (one job per view folds each entity's events in order).

    >>> history = FileSource(name="clicks_history", path="data/clicks.parquet", timestamp_field="ts")
    >>> PushSource(name="clicks_push", batch_source=history).timestamp_field
    'ts'
    """

    kind: ClassVar[str] = "push"


_STREAM_FORMATS = ("json",)


@dataclass(frozen=True)
class KafkaSource(StreamSource):
    """Events on a Kafka topic, run by the product's stream job (``featurestore stream start <view>``);
    see StreamSource for the message format, dead letters, watermark and lateness.

    >>> from datetime import timedelta
    >>> history = FileSource(name="clicks_history", path="data/clicks.parquet", timestamp_field="ts")
    >>> clicks = KafkaSource(name="clicks", bootstrap_servers="127.0.0.1:9092", topic="clicks",
    ...                      format="json", timestamp_field="ts", batch_source=history)
    >>> clicks.dead_letter_topic, clicks.allowed_lateness
    ('clicks.dead-letter', datetime.timedelta(0))
    """

    kind: ClassVar[str] = "kafka"

    def __post_init__(self) -> None:
        if self.topic is None and self.bootstrap_servers is None:
            raise DefinitionError(f"KafkaSource {self.name!r} needs bootstrap_servers and topic",
                                  obj=self.name, field="topic")
        super().__post_init__()


_TOPIC = re.compile(r"^[A-Za-z0-9._\-]{1,249}$")


def batch_source_of(source: DataSource) -> DataSource:
    """The source batch reads (exports, materialization) use: a push or Kafka source's history."""
    if isinstance(source, StreamSource):
        return source.batch_source  # type: ignore[return-value]
    return source


_SOURCE_KINDS: dict[str, type[DataSource]] = {"file": FileSource, "sql": SqlSource, "delta": DeltaSource,
                                               "push": PushSource, "kafka": KafkaSource}


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
