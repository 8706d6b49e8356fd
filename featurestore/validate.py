"""Checks a set of definitions against each other and against their sources, before anything is stored.

Every problem is reported with the object and the field it concerns; all problems are collected so a
user fixes them in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from featurestore import plugins
from featurestore import types as fstypes
from featurestore.definitions import ALL_FEATURES, Entity, FeatureService, FeatureView, Field
from featurestore.errors import DefinitionError, FeatureStoreError, InvalidInputError
from featurestore.ports.engine import CREATED_TS, EVENT_TS
from featurestore.secrets import literal_secrets
from featurestore.sources import DataSource, batch_source_of
from transforms import infer_type, output_name
from transforms.compile_duckdb import DuckDBCompiler
from transforms.compile_spark import SparkCompiler

RESERVED_COLUMNS = {EVENT_TS, CREATED_TS}


@dataclass
class Problems:
    items: list[DefinitionError] = field(default_factory=list)

    def add(self, message: str, *, obj: str, field_name: str | None = None) -> None:
        self.items.append(DefinitionError(message, obj=obj, field=field_name))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            raise self.items[0]
        first = self.items[0]
        message = f"{len(self.items)} problems in the definitions:\n" + "\n".join(
            f"  - {p}" for p in self.items)
        raise DefinitionError(message, obj=first.obj, field=first.field)


def check_secrets(source: DataSource, problems: Problems) -> None:
    """A secret written out in a source's definition would be stored in the registry and served by
    ``GET /registry``: each must be a ``${VAR}`` placeholder, replaced from the environment when read."""
    for field_name, what in literal_secrets(source.to_spec()):
        example = (" (postgresql://user:${DB_PASSWORD}@host/db)" if field_name.endswith("url") else "")
        problems.add(f"{type(source).__name__} {source.name!r}: {what} is written out, and would be stored in the "
                     f"registry: write ${{VAR}} in its place{example} and set VAR in the environment of every "
                     f"process that reads the source", obj=source.name, field_name=field_name)


def source_schema(source: DataSource, repo_path: Path) -> pa.Schema:
    """The columns a source provides, after its field mapping is applied."""
    source = batch_source_of(source)
    try:
        reader = plugins.source_reader(source, repo_path)
    except InvalidInputError:
        raise DefinitionError(f"source {source.name!r}: unsupported kind {source.kind!r}", obj=source.name) from None
    schema = reader.schema(source)
    if source.field_mapping:
        schema = pa.schema([f.with_name(source.field_mapping.get(f.name, f.name)) for f in schema])
    return schema


def _compatible_types(declared: fstypes.DataType, actual: fstypes.DataType) -> bool:
    if actual.family == declared.family:
        return True
    # Integers widen into floats; a CSV can give a timestamp as text that the engine parses.
    return (declared.family == "float" and actual.family == "integer") or (
        declared.family == "timestamp" and actual.family == "string")


def check_unique(kind: str, objects: list, problems: Problems, origin) -> list:
    """Objects of one kind keyed by name; two different definitions under one name is an error."""
    seen: dict[str, object] = {}
    for obj in objects:
        other = seen.get(obj.name)
        if other is None:
            seen[obj.name] = obj
        elif other.to_spec() != obj.to_spec():
            problems.add(f"duplicate {kind} name {obj.name!r} (defined in {origin(other)} and {origin(obj)})",
                         obj=obj.name, field_name="name")
    return list(seen.values())


def resolve_view(view: FeatureView, entities: dict[str, Entity], repo_path: Path,
                 problems: Problems) -> FeatureView | None:
    """Checks a view against its entities and source; returns it with key types and schema resolved."""
    before = len(problems.items)
    keys: list[str] = []
    for name in view.entity_names:
        if name not in entities:
            problems.add(f"FeatureView {view.name!r} references unknown entity {name!r}", obj=view.name,
                         field_name="entities")
        else:
            keys.extend(entities[name].join_keys)
    for f in view.schema:
        if f.name in RESERVED_COLUMNS:
            problems.add(f"FeatureView {view.name!r}: field name {f.name!r} is reserved", obj=view.name,
                         field_name=f.name)
    try:
        schema = source_schema(view.source, repo_path)
    except FeatureStoreError as exc:
        problems.add(f"FeatureView {view.name!r}: source {view.source.name!r}: {exc}", obj=view.name,
                     field_name="source")
        return None
    found = {f.name: f.type for f in schema}
    src = view.source
    for label, column in (("timestamp_field", src.timestamp_field),
                          ("created_timestamp_field", src.created_timestamp_field)):
        if column is not None and column not in found:
            problems.add(f"FeatureView {view.name!r}: source {src.name!r} has no {label} column {column!r}",
                         obj=view.name, field_name=column)
    columns = view_columns(view, found, problems)
    if columns is None:
        return None
    _check_checks(view, columns, problems)
    declared = {f.name: f for f in view.schema}
    key_fields = []
    for key in keys:
        if key not in columns:
            problems.add(f"FeatureView {view.name!r}: join key {key!r} is not a column of source "
                         f"{src.name!r}", obj=view.name, field_name=key)
            continue
        key_fields.append(Field(name=key, dtype=declared[key].dtype if key in declared else columns[key]))
    event_fields: list[Field] = []
    if view.aggregations:
        schema_fields, event_fields = _aggregation_fields(view, columns, problems)
    else:
        schema_fields = _plain_fields(view, keys, columns, found, problems)
    _check_drift_features(view, schema_fields, event_fields, key_fields, problems)
    if len(problems.items) > before:
        return None
    return FeatureView(
        name=view.name, entities=view.entities, schema=schema_fields, source=view.source, ttl=view.ttl,
        online=view.online, description=view.description, tags=view.tags, owner=view.owner,
        drift_thresholds=view.drift_thresholds,
        entity_columns=key_fields, transform=view.transform, filter=view.filter,
        aggregations=view.aggregations, event_columns=event_fields, checks=view.checks)


def _check_drift_features(view: FeatureView, schema: list[Field], events: list[Field], keys: list[Field],
                          problems: Problems) -> None:
    """Each ``drift_thresholds`` key names a column drift compares: a feature, or for an aggregation
    view one of the event columns its rows store."""
    names = {f.name for f in events} if view.aggregations else {f.name for f in schema} - {k.name for k in keys}
    for feature in view.drift_thresholds:
        if feature != ALL_FEATURES and feature not in names:
            problems.add(f"FeatureView {view.name!r}: drift_thresholds names {feature!r}, which is not "
                         f"{'an event column' if view.aggregations else 'a feature'} of the view (known: "
                         f"{', '.join(sorted(names)) or 'none'})", obj=view.name, field_name=feature)


def view_columns(view: FeatureView, found: dict[str, pa.DataType], problems: Problems
                 ) -> dict[str, fstypes.DataType] | None:
    """The columns a view's rows have: the source's (after field mapping) with the filter applied and
    the transforms' outputs added or replacing; None (and a problem) when an expression is invalid."""

    columns: dict[str, fstypes.DataType] = {}
    for name, arrow_type in found.items():
        try:
            columns[name] = fstypes.from_arrow(arrow_type)
        except DefinitionError:
            continue  # unusable types are reported only if a feature uses them
    try:
        if view.filter is not None:
            kind = infer_type(view.filter, columns, obj=view.name)
            if kind != fstypes.Bool:
                problems.add(f"FeatureView {view.name!r}: filter must be a Bool expression, got {kind!r}",
                             obj=view.name, field_name="filter")
                return None
        produced = {}
        for expr in view.transform:
            produced[output_name(expr)] = infer_type(expr, columns, obj=view.name)
    except DefinitionError as exc:
        problems.add(f"FeatureView {view.name!r}: {exc}", obj=view.name, field_name=exc.field or "transform")
        return None
    return columns | produced


def _check_checks(view: FeatureView, columns: dict[str, fstypes.DataType], problems: Problems) -> None:
    """Each row check is a Bool expression over the view's rows (after its filter and transforms); a
    view with drop checks leaves the quarantine table's own column names free."""
    if any(c.on_fail == "drop" for c in view.row_checks):
        for name in ("check", "quarantined_at"):
            if name in {f.name for f in view.schema}:
                problems.add(f"FeatureView {view.name!r}: field {name!r} is a column of the quarantine table its "
                             f"drop checks fill; rename the field", obj=view.name, field_name=name)
    for check in view.row_checks:
        try:
            kind = infer_type(check.expr, columns, obj=view.name)
        except DefinitionError as exc:
            problems.add(f"FeatureView {view.name!r}: check {check.name!r}: {exc}", obj=view.name,
                         field_name=exc.field or "checks")
            continue
        if kind != fstypes.Bool:
            problems.add(f"FeatureView {view.name!r}: check {check.name!r} must be a Bool expression, got {kind!r}",
                         obj=view.name, field_name="checks")


def _plain_fields(view: FeatureView, keys: list[str], columns: dict[str, fstypes.DataType],
                  found: dict[str, pa.DataType], problems: Problems) -> list[Field]:
    src = view.source
    fields = list(view.schema)
    if not fields:  # no schema: every other column is a feature
        skip = set(keys) | {src.timestamp_field, src.created_timestamp_field}
        for name in list(found) + [n for n in columns if n not in found]:
            if name in skip:
                continue
            if name not in columns:
                problems.add(f"FeatureView {view.name!r}: source column {name!r} has unsupported type "
                             f"{found[name]}", obj=view.name, field_name=name)
            else:
                fields.append(Field(name=name, dtype=columns[name]))
    for f in fields:
        if f.name in keys:
            continue
        if f.name not in columns:
            problems.add(f"FeatureView {view.name!r}: schema field {f.name!r} is not a column of source "
                         f"{src.name!r} (columns: {', '.join(columns)})", obj=view.name, field_name=f.name)
        elif not _compatible_types(f.dtype, columns[f.name]):
            problems.add(f"FeatureView {view.name!r}: field {f.name!r} is declared {f.dtype!r} but source "
                         f"{src.name!r} has {found.get(f.name, columns[f.name])}", obj=view.name,
                         field_name=f.name)
    return fields


def _aggregation_fields(view: FeatureView, columns: dict[str, fstypes.DataType], problems: Problems
                        ) -> tuple[list[Field], list[Field]]:
    """(features, event columns) of an aggregation view; declared schema fields must name aggregations."""
    features, events = [], []
    for agg in view.aggregations:
        if agg.column not in columns:
            problems.add(f"FeatureView {view.name!r}: aggregation {agg.name!r} reads unknown column "
                         f"{agg.column!r}", obj=view.name, field_name=agg.column)
            continue
        try:
            features.append(Field(name=agg.name, dtype=agg.output_type(columns, obj=view.name)))
        except DefinitionError as exc:
            problems.add(str(exc), obj=view.name, field_name=agg.name)
            continue
        if agg.column not in {f.name for f in events}:
            events.append(Field(name=agg.column, dtype=columns[agg.column]))
    names = {f.name for f in features}
    for f in view.schema:
        if f.name not in names and f.name not in {k for e in view.entities if not isinstance(e, str)
                                                   for k in e.join_keys}:
            problems.add(f"FeatureView {view.name!r}: schema field {f.name!r} is not one of its aggregations "
                         f"({', '.join(a.name for a in view.aggregations)})", obj=view.name, field_name=f.name)
    return features, events


def check_engine(view: FeatureView, engine_type: str, problems: Problems) -> None:
    """An engine that cannot run a node says so at plan time, never mid-job."""
    if engine_type == "spark":
        compiler = SparkCompiler
    else:
        compiler = DuckDBCompiler
    nodes = list(view.transform) + ([view.filter] if view.filter is not None else []) + list(view.aggregations)
    nodes += [c.expr for c in view.row_checks]
    try:
        compiler.check_supported(nodes, view=view.name)
    except DefinitionError as exc:
        problems.add(str(exc), obj=view.name, field_name="transform")


def check_service(service: FeatureService, views: dict[str, Sequence[Field]], problems: Problems) -> None:
    """Every view the service lists exists and has the features it names (``views``: name -> fields)."""
    for proj in service.projections():
        fields = views.get(proj.view)
        if fields is None:
            problems.add(f"FeatureService {service.name!r} references unknown feature view {proj.view!r}",
                         obj=service.name, field_name="features")
            continue
        known = {f.name for f in fields}
        for feat in proj.features or ():
            if feat not in known:
                problems.add(f"FeatureService {service.name!r}: feature view {proj.view!r} has no feature "
                             f"{feat!r}", obj=service.name, field_name=feat)
