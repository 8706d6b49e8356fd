"""What a stream job runs (its blueprint), decided in the main environment and handed to the job as
JSON.

``build_blueprint(store, view)`` reads the view from the registry and its KafkaSource, and fixes:

- the event columns a message must carry (the view's keys, event time, created time, the columns its
  filter and transforms read, the stored columns no transform produces), with their types, taken from
  the source's history (``batch_source``) exactly as batch reads type them;
- the Flink SQL around the job's Python functions: the typed columns out of the parser's output
  (``events_view_sql``; a message the parser rejected carries its dead letter in ``__fs_bad``), and
  the view's filter and transforms (compiled from the same IR as the batch engines, by
  ``transforms.compile_flink``, with errors as values: a row the transforms fail on, e.g. an integer
  overflow, carries the message in ``__fs_error`` and the job dead-letters it). No row is dropped in
  SQL: the filter's outcome is the column ``__fs_keep``, so the sink sees every message in offset
  order, which is what its per-partition watermarks and exactly-once progress are made of;
- the stores' rows: key columns, stored columns (features, or the events an aggregation reads),
  aggregations, TTL.

The job (``featurestore.streaming.job``) needs nothing else from the registry, so a running job is not
affected by later applies; ``stream start`` after an apply runs the new definition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

import pyarrow as pa

from featurestore import types as fstypes
from featurestore.definitions import FeatureView, Field
from featurestore.errors import DefinitionError, InvalidInputError
from featurestore.online_aggregate import state_types
from featurestore.ports.engine import CREATED_TS, EVENT_TS
from featurestore.retrieval import key_columns, stored_columns
from featurestore.sources import StreamSource
from featurestore.validate import source_schema
from transforms import compile_flink as cf
from transforms.aggregation import Aggregation
from transforms.checks import failed
from transforms.type_rules import infer_type, output_name

# Columns the job adds to every event: where it came from (exactly-once offline appends and the
# dead-letter report) and the Kafka record time (the created time of an aggregation's online row).
PARTITION, OFFSET, KAFKA_TS = "__fs_partition", "__fs_offset", "__fs_kafka_ts"
META_COLUMNS = (PARTITION, OFFSET, KAFKA_TS)
# The dead letter of a message the parser rejected (null for events), whether the view's filter keeps
# the event, and why the view's filter or transforms failed on it (null when they did not).
BAD, KEEP, ERROR = "__fs_bad", "__fs_keep", "__fs_error"
# What the job's SQL hands the sink after the view's columns, in this order.
SINK_META = (*META_COLUMNS, BAD, KEEP, ERROR)

# After SINK_META, one Bool column per row check of the view: whether the event fails it (false or
# null fails, ``transforms.checks``), evaluated on the rows after the filter and transforms.
CHECK_PREFIX = "__fs_fail_"

BLUEPRINT_VERSION = 5
# Bytes columns are not streamed yet: Flink SQL has no exact way to carry them out of JSON.
_SCALARS = ("Int32", "Int64", "Float32", "Float64", "String", "Bool", "Timestamp")


@dataclass(frozen=True)
class KafkaSettings:
    """Where the job reads and dead-letters, and its lateness rule (milliseconds)."""

    bootstrap_servers: str
    topic: str
    dead_letter_topic: str
    group_id: str
    watermark_delay_ms: int
    allowed_lateness_ms: int


@dataclass(frozen=True)
class EventColumn:
    """A column a message must carry: its name in the job, its JSON field, its type, and whether it
    must be non-null (join keys and the event time)."""

    name: str
    json: str
    dtype: fstypes.DataType
    required: bool


@dataclass(frozen=True)
class Blueprint:
    """Everything a stream job needs (see the module docs); JSON with ``to_json``/``from_json``."""

    version: int
    project: str
    repo_path: str
    view: str
    kafka: KafkaSettings
    columns: tuple[EventColumn, ...]
    timestamp_column: str
    created_column: str | None
    select: str  # the Flink SQL whose rows the sink takes: output columns, then SINK_META
    keys: tuple[str, ...]
    key_types: Mapping[str, fstypes.DataType]
    stored: tuple[Field, ...]  # the stored columns: features, or the events the aggregations read
    output_columns: tuple[str, ...]
    output_types: Mapping[str, fstypes.DataType]
    aggregations: tuple[Aggregation, ...]
    aggregation_types: Mapping[str, fstypes.DataType]  # each aggregation's output type
    ttl_seconds: float | None
    online: bool
    stream_engine: Mapping[str, Any]  # the repo config's stream_engine section
    # The view's row checks as (name, on_fail), in the order of their columns after SINK_META.
    checks: tuple[tuple[str, str], ...] = ()

    def state_types(self) -> dict[str, pa.DataType]:
        """The online state columns of an aggregation view (``online_aggregate.state_types``)."""
        return state_types(self.aggregations, {f.name: f.dtype.to_arrow() for f in self.stored},
                           {n: t.to_arrow() for n, t in self.aggregation_types.items()})

    def to_json(self) -> str:
        return json.dumps({
            "version": self.version, "project": self.project, "repo_path": self.repo_path, "view": self.view,
            "kafka": vars(self.kafka),
            "columns": [{"name": c.name, "json": c.json, "dtype": c.dtype.to_spec(), "required": c.required}
                        for c in self.columns],
            "timestamp_column": self.timestamp_column, "created_column": self.created_column,
            "select": self.select, "keys": list(self.keys),
            "key_types": {k: t.to_spec() for k, t in self.key_types.items()},
            "stored": [f.to_spec() for f in self.stored], "output_columns": list(self.output_columns),
            "output_types": {k: t.to_spec() for k, t in self.output_types.items()},
            "aggregations": [a.to_spec() for a in self.aggregations],
            "aggregation_types": {k: t.to_spec() for k, t in self.aggregation_types.items()},
            "ttl_seconds": self.ttl_seconds, "online": self.online, "stream_engine": dict(self.stream_engine),
            "checks": [list(c) for c in self.checks],
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Blueprint":
        d = json.loads(text)
        if d.get("version") != BLUEPRINT_VERSION:
            raise InvalidInputError(f"stream job blueprint version {d.get('version')!r}, expected "
                                    f"{BLUEPRINT_VERSION}: start the job again (`featurestore stream start`)")
        types = fstypes.from_spec
        return cls(
            version=d["version"], project=d["project"], repo_path=d["repo_path"], view=d["view"],
            kafka=KafkaSettings(**d["kafka"]),
            columns=tuple(EventColumn(c["name"], c["json"], types(c["dtype"]), c["required"]) for c in d["columns"]),
            timestamp_column=d["timestamp_column"], created_column=d["created_column"], select=d["select"],
            keys=tuple(d["keys"]), key_types={k: types(t) for k, t in d["key_types"].items()},
            stored=tuple(Field.from_spec(f) for f in d["stored"]), output_columns=tuple(d["output_columns"]),
            output_types={k: types(t) for k, t in d["output_types"].items()},
            aggregations=tuple(Aggregation.from_spec(a) for a in d["aggregations"]),
            aggregation_types={k: types(t) for k, t in d["aggregation_types"].items()},
            ttl_seconds=d["ttl_seconds"], online=d["online"], stream_engine=d["stream_engine"],
            checks=tuple((name, on_fail) for name, on_fail in d["checks"]))


def build_blueprint(store: Any, view_name: str, view: FeatureView | None = None) -> Blueprint:
    """The blueprint of ``view_name``'s stream job (see the module docs); ``view`` is the view's
    definition when the caller already holds it."""
    if view is None:
        view = store.catalog().view(view_name)
    source = view.source
    if not isinstance(source, StreamSource) or not source.streams:
        hint = (" (a PushSource streams when it has bootstrap_servers= and topic=)"
                if isinstance(source, StreamSource) else "")
        raise InvalidInputError(f"feature view {view_name!r} reads {source.kind} source {source.name!r}; a "
                                f"stream job runs views whose source is a KafkaSource or a streaming "
                                f"PushSource{hint}")
    mapping = dict(source.field_mapping)
    ts_col = mapping.get(source.timestamp_field, source.timestamp_field)
    created_col = (mapping.get(source.created_timestamp_field, source.created_timestamp_field)
                   if source.created_timestamp_field else None)
    keys = [k for k, _ in key_columns(view)]
    _, stored = stored_columns(view)
    columns = _event_columns(store, view, keys, ts_col, created_col)
    schema = {c.name: c.dtype for c in columns}
    out_types = schema | {name: fstypes.from_arrow(t) for name, t in stored}
    outputs = [*keys, *[n for n, _ in stored]]
    project = store.config.project
    return Blueprint(
        version=BLUEPRINT_VERSION,
        project=project,
        repo_path=str(store.repo_path),
        view=view_name,
        kafka=KafkaSettings(bootstrap_servers=source.bootstrap_servers, topic=source.topic,
                            dead_letter_topic=source.dead_letter_topic,
                            group_id=source.group_id or f"featurestore.{project}.{view_name}",
                            watermark_delay_ms=int(source.watermark_delay.total_seconds() * 1000),
                            allowed_lateness_ms=int(source.allowed_lateness.total_seconds() * 1000)),
        columns=tuple(columns),
        timestamp_column=ts_col,
        created_column=created_col,
        select=_job_select(view, columns, outputs, out_types, ts_col, created_col),
        keys=tuple(keys),
        key_types={k: schema[k] for k in keys},
        stored=tuple(Field(n, fstypes.from_arrow(t)) for n, t in stored),
        output_columns=(*outputs, EVENT_TS, CREATED_TS),
        output_types={n: out_types[n] for n in outputs} | {EVENT_TS: fstypes.Timestamp, CREATED_TS: fstypes.Timestamp},
        aggregations=tuple(view.aggregations),
        aggregation_types={f.name: f.dtype for f in view.schema if f.name in {a.name for a in view.aggregations}},
        ttl_seconds=view.ttl_seconds,
        online=view.online,
        stream_engine=dict(store.config.stream_engine),
        checks=tuple((c.name, c.on_fail) for c in view.row_checks),
    )


def _event_columns(store: Any, view: FeatureView, keys: list[str], ts_col: str,
                   created_col: str | None) -> list[EventColumn]:
    """The columns a message must carry: keys, times, what the filter and transforms read and the
    stored columns no transform produces, typed by the source's history."""
    source = view.source
    produced = {output_name(e) for e in view.transform}
    types: dict[str, fstypes.DataType] = {}
    for f in source_schema(source, store.repo_path):
        try:
            types[f.name] = fstypes.from_arrow(f.type)
        except DefinitionError:
            continue
    needed: dict[str, None] = dict.fromkeys(keys + [ts_col] + ([created_col] if created_col else []))
    for e in [*view.transform, *([view.filter] if view.filter is not None else [])]:
        needed.update(dict.fromkeys(e.columns()))
    for check in view.row_checks:
        needed.update(dict.fromkeys(c for c in check.expr.columns() if c not in produced))
    needed.update(dict.fromkeys(f.name for f in view.stored_fields if f.name not in produced))
    inverse = {v: k for k, v in source.field_mapping.items()}
    columns = []
    for name in needed:
        dtype = types.get(name)
        if dtype is None:
            raise DefinitionError(f"feature view {view.name!r}: column {name!r} is not a column of source "
                                  f"{source.name!r}'s history ({source.batch_source.name!r}) with a supported "
                                  f"type", obj=view.name)
        if dtype.name not in _SCALARS:
            raise DefinitionError(f"feature view {view.name!r}: column {name!r} has type {dtype}; stream jobs "
                                  f"take scalar columns only for now", obj=view.name)
        if name in (ts_col, created_col) and dtype.name != "Timestamp":
            raise DefinitionError(f"feature view {view.name!r}: time column {name!r} has type {dtype} in the "
                                  f"source's history; it must be a timestamp", obj=view.name)
        columns.append(EventColumn(name, inverse.get(name, name), dtype, name in keys or name == ts_col))
    return columns


def _job_select(view: FeatureView, columns: list[EventColumn], outputs: list[str],
                out_types: dict[str, fstypes.DataType], ts_col: str, created_col: str | None) -> str:
    """The Flink SQL over the typed events: the view's filter and transforms (errors as values), then
    the output columns as text and ``SINK_META``."""
    transform, flt = list(view.transform), view.filter
    schema = {c.name: c.dtype for c in columns}
    unsupported = [e for e in transform + ([flt] if flt is not None else []) if not cf.supports(e, schema)]
    if unsupported:
        raise DefinitionError(f"feature view {view.name!r}: the stream engine cannot run {unsupported[0]!r} "
                              f"(see transforms.compile_flink.UNSUPPORTED)", obj=view.name)
    produced = {output_name(e) for e in transform}
    passthrough = [c.name for c in columns if c.name not in produced] + [*META_COLUMNS, BAD]
    inner = cf.compile_view("events", transform, flt, passthrough, schema, error_column=ERROR,
                            filter_column=KEEP)

    def text(name: str, as_name: str) -> str:
        q = cf.quote_ident(name)
        if out_types[name].name == "Timestamp":
            return f"CAST({q} AS STRING) AS {cf.quote_ident(as_name)}"
        return f"{q} AS {cf.quote_ident(as_name)}"

    items = [text(n, n) for n in outputs]
    items.append(text(ts_col, EVENT_TS))
    items.append(text(created_col, CREATED_TS) if created_col else f"CAST(NULL AS STRING) AS {CREATED_TS}")
    items += [cf.quote_ident(m) for m in SINK_META]
    rows = schema | {output_name(e): infer_type(e, schema) for e in transform}
    for i, check in enumerate(view.row_checks):
        if not cf.supports(check.expr, rows):
            raise DefinitionError(f"feature view {view.name!r}: the stream engine cannot run check {check.name!r} "
                                  f"(see transforms.compile_flink.UNSUPPORTED)", obj=view.name)
        # errors as values: a check whose expression fails on a row (an overflow) is null there, so fails
        fails, _ = cf.to_sql_with_error(failed(check.expr), rows)
        items.append(f"{fails} AS {cf.quote_ident(f'{CHECK_PREFIX}{i}')}")
    return f"SELECT {', '.join(items)} FROM ({inner})"


def events_view_sql(blueprint: Blueprint) -> str:
    """The parsed events as typed columns (from fs_parse's JSON array), with the meta columns; a
    message fs_parse rejected (its output is ``E`` and the dead letter) has null columns and the letter
    in ``__fs_bad``."""
    items = []
    for i, c in enumerate(blueprint.columns):
        path = cf.quote_string(f"$[{i}]")
        # JSON_VALUE gives a value's JSON text (numbers exactly as written, which fs_parse wrote from
        # checked Python values), cast to the column's type.
        expr = f"CAST(JSON_VALUE(`p`, {path}) AS {cf.flink_type(c.dtype)})"
        items.append(f"{expr} AS {cf.quote_ident(c.name)}")
    items += [f"`partition` AS `{PARTITION}`", f"`offset` AS `{OFFSET}`", f"`record_time` AS `{KAFKA_TS}`",
              f"CASE WHEN `p` LIKE 'E%' THEN SUBSTRING(`p` FROM 2) END AS `{BAD}`"]
    return f"SELECT {', '.join(items)} FROM `fs_parsed`"
