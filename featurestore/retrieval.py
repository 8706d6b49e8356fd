"""Point-in-time-correct training exports (``get_historical_features``).

This module decides what to join: it resolves feature references, validates the entity frame, picks
where each view's rows are read from (the offline store when it covers the needed time range, the
source otherwise) and hands plain data to the engine. The join itself lives in the engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestore import coverage, on_demand, plugins
from featurestore import types as fstypes
from featurestore.catalog import Catalog
from featurestore.damage import damage_named
from featurestore.definitions import FeatureService, FeatureView, Field
from featurestore.errors import (
    ConflictError,
    DefinitionError,
    FeatureNotFound,
    FeatureViewNotFound,
    InvalidInputError,
    NotFoundError,
    StreamIncompleteWarning,
)
from featurestore.fingerprints import fingerprint_paths
from featurestore.on_demand import OnDemandSpec
from featurestore.parquet_files import parquet_files
from featurestore.ports.engine import CAP_EXPORT_PARQUET, CREATED_TS, EVENT_TS, ViewData, ViewJoin
from featurestore.ports.offline_store import CAP_FILES, CAP_VERSIONS
from featurestore.ports.source_reader import CAP_VERSIONS as CAP_SOURCE_VERSIONS
from featurestore.sources import DataSource, StreamSource
from featurestore.streaming.progress import complete_until
from featurestore.timestamps import check_instant, check_instants, column_us, from_us
from featurestore.validate import source_schema

if TYPE_CHECKING:
    from featurestore.store import FeatureStore

UTC = timezone.utc
MIN_TIME = datetime(1, 1, 1, tzinfo=UTC)


@dataclass
class ViewRequest:
    """The features wanted from one view (a feature view or an on-demand view), in request order;
    ``hidden`` ones are read only as inputs of on-demand views and are not returned."""

    view: FeatureView | OnDemandSpec
    features: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def all_features(self) -> list[str]:
        return self.features + self.hidden


@dataclass
class Resolved:
    """A request resolved against the registry."""

    refs: list[str]
    requests: list[ViewRequest]          # feature views to read, in first-seen order
    on_demand: list[ViewRequest]         # on-demand views to run afterwards
    service: str | None = None


def parse_ref(ref: str) -> tuple[str, str]:
    view, sep, feature = ref.partition(":")
    if not sep or not view or not feature:
        raise InvalidInputError(f"feature reference {ref!r} is not of the form 'view:feature'")
    return view, feature


def resolve_features(catalog: Catalog, features: Sequence[str] | FeatureService | str) -> Resolved:
    """Refs, per-view requests and on-demand views for a list of refs or a feature service."""
    views, odfvs = catalog.views, catalog.on_demand
    known: dict[str, FeatureView | OnDemandSpec] = {**views, **odfvs}
    service_name = None
    if isinstance(features, (FeatureService, str)) and not (isinstance(features, str) and ":" in features):
        service_name = features.name if isinstance(features, FeatureService) else features
        service = catalog.services.get(service_name)
        if service is None:
            if not isinstance(features, FeatureService):
                raise NotFoundError(f"feature service {service_name!r} is not in the registry (run apply?)")
            service = features
        refs = []
        for proj in service.projections():
            view = known.get(proj.view)
            if view is None:
                raise FeatureViewNotFound(f"feature service {service_name!r}: feature view "
                                          f"{proj.view!r} is not in the registry")
            names = proj.features if proj.features is not None else view.feature_names
            refs += [f"{proj.view}:{n}" for n in names]
    else:
        refs = [features] if isinstance(features, str) else list(features)
    if not refs:
        raise InvalidInputError("no features requested")
    requests: dict[str, ViewRequest] = {}
    on_demand: dict[str, ViewRequest] = {}
    for ref in refs:
        view_name, feature = parse_ref(ref)
        view = known.get(view_name)
        if view is None:
            raise FeatureViewNotFound(f"feature view {view_name!r} (from {ref!r}) is not in the registry"
                                      f"{'; known: ' + ', '.join(sorted(known)) if known else ''}")
        if feature not in view.feature_names:
            raise FeatureNotFound(f"feature view {view_name!r} has no feature {feature!r} "
                                  f"(features: {', '.join(view.feature_names)})")
        req = (on_demand if view_name in odfvs else requests).setdefault(view_name, ViewRequest(view))
        if feature not in req.features:
            req.features.append(feature)
    for odfv in on_demand.values():  # the on-demand views' inputs: every feature of their sources
        for source in odfv.view.sources:
            req = requests.setdefault(source, ViewRequest(views[source]))
            req.hidden += [f for f in views[source].feature_names if f not in req.all_features]
    return Resolved(refs, list(requests.values()), list(on_demand.values()), service_name)


def on_demand_inputs(odfv: ViewRequest, requests: list[ViewRequest], names: dict[tuple[str, str], str],
                     column) -> dict[str, Any]:
    """The input columns of an on-demand view: its sources' features by feature name."""
    by_name = {r.name: r for r in requests}
    inputs = {}
    for source in odfv.view.sources:
        for feature in by_name[source].all_features:
            inputs[feature] = column(names[(source, feature)])
    return inputs


def arrow_fields(fields: Sequence[Field]) -> list[tuple[str, pa.DataType]]:
    """(name, Arrow type) of each field."""
    return [(f.name, f.dtype.to_arrow()) for f in fields]


def key_columns(view: FeatureView) -> list[tuple[str, pa.DataType]]:
    """The view's join key columns and their Arrow types."""
    return arrow_fields(view.entity_columns)


def _feature_types(view: FeatureView) -> dict[str, pa.DataType]:
    return dict(arrow_fields(view.schema))


# -- entity frame --------------------------------------------------------------------------------
def entity_table(entity_df: Any) -> pa.Table:
    if isinstance(entity_df, pa.Table):
        return entity_df
    if isinstance(entity_df, (str, os.PathLike)):
        return read_entity_file(Path(entity_df))
    import pandas as pd

    if isinstance(entity_df, pd.DataFrame):
        return pa.Table.from_pandas(entity_df, preserve_index=False)
    raise InvalidInputError(f"entity_df must be a pandas DataFrame, a pyarrow Table or a file path, "
                            f"got {type(entity_df).__name__}")


def read_entity_file(path: Path) -> pa.Table:
    if not path.exists():
        raise NotFoundError(f"entity file {str(path)!r} does not exist")
    if path.suffix.lower() == ".csv":
        import pyarrow.csv as pacsv

        return pacsv.read_csv(path)
    return pq.read_table(path)


def timestamp_column(table: pa.Table, requested: str | None) -> str:
    if requested is not None:
        if requested not in table.column_names:
            raise InvalidInputError(f"entity_df has no timestamp column {requested!r}")
        return requested
    if "event_timestamp" in table.column_names:
        return "event_timestamp"
    candidates = [f.name for f in table.schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InvalidInputError("entity_df has no timestamp column: add 'event_timestamp' (or one "
                                "datetime column)")
    raise InvalidInputError(f"entity_df has several datetime columns {candidates}; name one 'event_timestamp'")


def normalise_timestamps(table: pa.Table, column: str) -> pa.Table:
    """Entity times as UTC microseconds (naive times are UTC); nulls and non-times are errors."""
    col = table.column(column)
    t = col.type
    if pa.types.is_date(t) or (pa.types.is_null(t) and len(col) == 0):
        col = col.cast(pa.timestamp("us"))
        t = col.type
    if not pa.types.is_timestamp(t):
        raise InvalidInputError(f"entity_df column {column!r} must hold timestamps, not {t}")
    if col.null_count:
        raise InvalidInputError(f"entity_df column {column!r} has {col.null_count} null timestamps")
    col = column_us(col)  # naive = UTC, nanoseconds floored (featurestore.timestamps)
    check_instants(col, f"entity_df column {column!r}")  # the accepted range, as every input time
    return table.set_column(table.column_names.index(column), column, col)


def check_keys(table: pa.Table, requests: list[ViewRequest]) -> None:
    for req in requests:
        for key, arrow_type in key_columns(req.view):
            if key not in table.column_names:
                raise InvalidInputError(f"entity_df is missing join key column {key!r} needed by feature view "
                                        f"{req.name!r}")
            found = table.schema.field(key).type
            if pa.types.is_null(found):
                continue
            want = fstypes.from_arrow(arrow_type)
            try:
                have = fstypes.from_arrow(found)
            except DefinitionError:
                have = None
            if have is None or have.family != want.family:
                raise InvalidInputError(f"join key {key!r} is {have or found} in entity_df but feature view "
                                        f"{req.name!r} keys it as {want}")


def output_names(requests: list[ViewRequest], full_feature_names: bool, entity_columns: list[str]
                 ) -> dict[tuple[str, str], str]:
    names: dict[tuple[str, str], str] = {}
    seen: dict[str, str] = {}
    for req in requests:
        for feature in req.hidden:
            names[(req.name, feature)] = f"__fs_dep__{req.name}__{feature}"
        for feature in req.features:
            out = f"{req.name}__{feature}" if full_feature_names else feature
            if out in seen:
                raise InvalidInputError(f"feature name collision: {out!r} comes from both {seen[out]} and "
                                        f"{req.name}:{feature}; use full_feature_names=True")
            if out in entity_columns:
                raise InvalidInputError(f"feature name collision: {out!r} is also a column of entity_df; "
                                        "rename it or use full_feature_names=True")
            seen[out] = f"{req.name}:{feature}"
            names[(req.name, feature)] = out
    return names


# -- where each view is read from ----------------------------------------------------------------
@dataclass
class ViewRead:
    join: ViewJoin
    read_from: str  # "offline_store" | "source", with "+appended" when streamed or pushed rows join them
    fingerprint: str
    # For a view whose source streams: the event time below which its stream job has completed
    # (``featurestore.streaming.progress.complete_until``), None when it has committed nothing.
    stream_complete_until: datetime | None = None
    streams: bool = False
    table_version: int | None = None  # the offline table's commit read (read_from "offline_store")
    appended_version: int | None = None  # the appended rows' table commit read ("+appended")
    source_version: int | None = None  # a versioned source's version read (read_from "source")


@dataclass(frozen=True)
class ViewPin:
    """What an earlier export of one view read (its manifest entry): reading it again gives the same
    rows whatever was materialized, pushed, streamed or compacted since."""

    read_from: str
    fingerprint: str
    table_version: int | None = None
    appended_version: int | None = None
    source_version: int | None = None

    @classmethod
    def from_manifest(cls, view: str, entry: dict[str, Any]) -> "ViewPin":
        try:
            return cls(entry["read_from"], entry["fingerprint"], entry.get("table_version"),
                       entry.get("appended_version"), entry.get("source_version"))
        except (KeyError, TypeError) as exc:
            raise InvalidInputError(f"the manifest's entry for view {view!r} lacks {exc}; it was written "
                                    "before exports recorded table versions and cannot be reproduced") from None

    @property
    def offline(self) -> bool:
        return self.read_from.startswith("offline_store")

    @property
    def own_fingerprint(self) -> str:
        """The fingerprint of the offline table or source, without the appended rows' part."""
        return self.fingerprint.split("|", 1)[0]


def needed_from(view: FeatureView, lo: datetime | None) -> datetime | None:
    """The earliest event time an export with entity times >= lo + ttl can need (None: all history).

    Plain views need [t - ttl, t]; aggregation views need their longest window too, and all history
    for a lifetime aggregation or when there is no TTL (the latest event decides freshness)."""
    if not view.aggregated:
        return lo
    ttl = view.ttl_seconds
    windows = [None if a.window is None else a.window.total_seconds() for a in view.aggregations]
    if lo is None or ttl is None or any(w is None for w in windows):
        return None
    return lo + timedelta(seconds=ttl) - timedelta(seconds=max(max(windows), ttl))


def stored_columns(view: FeatureView) -> tuple[list[tuple[str, pa.DataType]], list[tuple[str, pa.DataType]]]:
    """(key columns, stored columns) of a view's rows, with their Arrow types (``stored_fields``)."""
    return key_columns(view), arrow_fields(view.stored_fields)


def view_read(store: "FeatureStore", req: ViewRequest, lo: datetime | None, hi: datetime,
              names: dict[tuple[str, str], str], pin: ViewPin | None = None) -> ViewRead:
    """Where one view's rows for entity times in [lo + ttl, hi] are read from, as an engine join; with
    ``pin``, exactly what an earlier export read."""
    view = req.view
    keys, stored = stored_columns(view)
    offline = store.offline_store
    lo = needed_from(view, lo)
    versions = CAP_VERSIONS in offline.capabilities
    table_version = appended_version = source_version = None
    if pin.offline if pin else coverage.covers(store, req.name, lo or MIN_TIME, hi):
        table_version = pin.table_version if pin else (offline.version(req.name) if versions else None)
        files = offline.files(req.name, lo, hi, version=table_version) if CAP_FILES in offline.capabilities else []
        data = (ViewData(EVENT_TS, CREATED_TS, files=tuple(files),
                         storage_options=tuple(offline.storage_options.items()))
                if files else
                ViewData(EVENT_TS, CREATED_TS, table=offline.read(req.name, lo, hi, version=table_version)))
        read_from, fingerprint = "offline_store", offline.fingerprint(req.name, version=table_version)
    else:
        data, fingerprint, source_version = source_data(store, view, [k for k, _ in keys] + [c for c, _ in stored],
                                                        lo, hi, pin.source_version if pin else None)
        read_from = "source"
    if pin and pin.source_version is not None:
        fingerprint = pin.own_fingerprint  # the version read names the rows, not today's latest
    if pin and fingerprint != pin.own_fingerprint:
        raise ConflictError(f"feature view {req.name!r}: its {read_from.replace('_', ' ')} is no longer what the "
                            f"export read (fingerprint {pin.own_fingerprint}, now {fingerprint})"
                            + ("; the table was deleted and made again" if pin.offline else
                               "; a source that is not versioned cannot be read as it was"))
    # Rows stream jobs and pushes appended: part of the view's history whatever was materialized.
    if pin:
        appended_version = pin.appended_version
    elif versions:
        appended_version = offline.appends.version(req.name)
    appended = ([] if pin and appended_version is None
                else offline.appends.files(req.name, lo, hi, version=appended_version))
    if appended:
        data = replace(data, appended=tuple(appended), columns=tuple(n for n, _ in keys + stored),
                       appended_storage_options=tuple(offline.appends.storage_options.items()))
        read_from += "+appended"
        fingerprint += "|" + offline.appends.fingerprint(req.name, version=appended_version)
    streams = isinstance(view.source, StreamSource) and view.source.streams
    complete = None
    if streams:
        bounds = [complete_until(p) for p in offline.appends.streams(req.name).values()]
        complete = min((b for b in bounds if b is not None), default=None)
    ftypes = _feature_types(view)
    join = ViewJoin(
        name=req.name,
        keys=tuple((k, k, t) for k, t in keys),
        features=tuple((f, names[(req.name, f)], ftypes[f]) for f in req.all_features),
        ttl_seconds=view.ttl_seconds,
        data=data,
        aggregations=tuple(view.aggregations),
        event_columns=tuple((c.name, c.dtype) for c in view.event_columns),
    )
    return ViewRead(join, read_from, fingerprint, complete, streams, table_version,
                    appended_version if appended else None, source_version)


def pipeline(store: "FeatureStore", view: FeatureView, source: DataSource) -> dict[str, Any]:
    """The ViewData pipeline fields of a view over ``source``: field mapping, filter, transforms."""
    out: dict[str, Any] = {}
    if source.field_mapping:
        out["rename"] = tuple(source.field_mapping.items())
    if view.filter is not None:
        out["filter"] = view.filter
    if view.transform:
        out["transform"] = tuple(view.transform)
    drops = tuple((c.name, c.expr) for c in view.row_checks if c.on_fail == "drop")
    if drops:
        out["checks"] = drops
    if "filter" in out or "transform" in out or view.row_checks:
        types = {}
        for f in source_schema(source, store.repo_path):
            try:
                types[f.name] = fstypes.from_arrow(f.type)
            except DefinitionError:
                continue
        out["schema"] = tuple(types.items())
    return out


def source_data(store: "FeatureStore", view: FeatureView, columns: list[str], lo: datetime | None,
                hi: datetime | None, version: int | None = None) -> tuple[ViewData, str, int | None]:
    """A view's batch source rows as engine input (with the view's pipeline), the source's fingerprint
    and, for a versioned source (``CAP_VERSIONS``), the version read (``version``, else its latest).
    Without a pipeline only ``columns`` (view names) and the times are asked for."""
    source = view.batch_source
    reader = plugins.source_reader(source, store.repo_path)
    steps = pipeline(store, view, source)
    wanted = None
    if "filter" not in steps and "transform" not in steps:
        inverse = {v: k for k, v in source.field_mapping.items()}
        created = source.created_timestamp_field
        checked = [c for check in view.row_checks for c in check.expr.columns()]  # checks may read others
        wanted = list(dict.fromkeys([inverse.get(c, c) for c in columns + checked] + [source.timestamp_field]
                                    + ([created] if created else [])))
    if CAP_SOURCE_VERSIONS in reader.capabilities:
        version = reader.version(source) if version is None else version
        data = reader.read_version(source, version, wanted, lo, hi)
    else:
        data, version = reader.read(source, wanted, lo, hi), None
    return replace(data, **steps), reader.fingerprint(source), version


# -- the job ---------------------------------------------------------------------------------------
class RetrievalJob:
    """A training export. Computed once, on the first ``to_*`` call.

    ``manifest`` records what produced it (registry version, refs, row count, source fingerprints) so
    the same export can be reproduced; ``to_parquet`` writes it beside the data.
    """

    def __init__(self, store: "FeatureStore", entity_df: Any, features, full_feature_names: bool,
                 timestamp_field: str | None = None, *, catalog: Catalog | None = None,
                 pins: dict[str, ViewPin] | None = None):
        self._store = store
        catalog = catalog or store.catalog()
        self._pins = pins
        self._snapshot_version = catalog.version
        resolved = resolve_features(catalog, features)
        self._refs, self._requests, self._service = resolved.refs, resolved.requests, resolved.service
        self._on_demand = resolved.on_demand
        # An engine that runs whole exports on a cluster reads an entity file itself (see to_parquet).
        self._entity_file = str(Path(entity_df).resolve()) if isinstance(entity_df, (str, os.PathLike)) else None
        self._entity_path = (self._entity_file if self._entity_file and CAP_EXPORT_PARQUET in store.engine.capabilities
                             and Path(entity_df).suffix.lower() != ".csv" else None)
        if self._entity_path is not None:
            # No rows, only the columns (``Schema.empty_table`` would load pandas: ~50 MB for nothing).
            table = pa.Table.from_batches([], schema=_parquet_schema(Path(self._entity_path)))
        else:
            table = entity_table(entity_df)
        self._ts_col = timestamp_column(table, timestamp_field)
        self._entity = table
        self._full = full_feature_names
        check_keys(table, self._requests)
        for odfv in self._on_demand:
            on_demand.request_inputs(odfv.view, {c: None for c in table.column_names})  # names a missing field now
        self._names = output_names(self._requests + self._on_demand, full_feature_names, table.column_names)
        self._result: pa.Table | None = None
        self._hi: datetime | None = None  # the latest entity time, once computed
        self.manifest: dict[str, Any] = {}

    def _view_reads(self, lo_t: datetime, hi: datetime) -> list[ViewRead]:
        reads = []
        for req in self._requests:
            ttl = req.view.ttl_seconds
            lo = None if ttl is None else lo_t - timedelta(seconds=ttl)
            pin = None
            if self._pins is not None:
                pin = self._pins.get(req.name)
                if pin is None:
                    raise InvalidInputError(f"the manifest records no read of feature view {req.name!r}")
            reads.append(view_read(self._store, req, lo, hi, self._names, pin))
        return reads

    def _manifest(self, rows: int, reads: list[ViewRead]) -> dict[str, Any]:
        return {
            "created_at": datetime.now(UTC).isoformat(),
            "project": self._store.config.project,
            "registry_version": self._snapshot_version,
            "features": list(self._refs),
            "feature_service": self._service,
            "full_feature_names": self._full,
            "timestamp_column": self._ts_col,
            "row_count": rows,
            "entity_fingerprint": (_table_fingerprint(self._entity) if self._entity_path is None
                                   else _entity_file_fingerprint(self._entity_path)),
            "entity_columns": self._entity.column_names,
            "entity_file": self._entity_file,
            "views": {r.join.name: {"read_from": r.read_from, "fingerprint": r.fingerprint,
                                    "table_version": r.table_version, "appended_version": r.appended_version,
                                    "source_version": r.source_version,
                                    **self._stream_note(r)} for r in reads},
        }

    def _stream_note(self, read: ViewRead) -> dict[str, Any]:
        """For a view whose source streams: up to when its stream job has completed, and whether the
        export's latest entity time is past that (on-time events for it may still arrive)."""
        if not read.streams:
            return {}
        until = read.stream_complete_until
        return {"stream_complete_until": until.isoformat() if until else None,
                "stream_complete": until is not None and self._hi is not None and self._hi < until}

    def _warn_incomplete(self, reads: list[ViewRead]) -> None:
        for r in reads:
            note = self._stream_note(r)
            if note and not note["stream_complete"]:
                until = note["stream_complete_until"]
                warnings.warn(StreamIncompleteWarning(
                    f"feature view {r.join.name!r}: the export asks for times up to {self._hi.isoformat()}, but "
                    + (f"its stream job has completed only events before {until}" if until else
                       "its stream job has committed nothing yet")
                    + "; on-time events for later times may still arrive (see the manifest's "
                      "stream_complete_until)"), stacklevel=4)

    def _join(self, entity: pa.Table, lo: datetime, hi: datetime, attempts: int = 3
              ) -> tuple[list[ViewRead], pa.Table]:
        """Decide the reads and join. A materialization that commits between the two can replace (and
        delete) offline-store files the reads named; then they are decided again from the new commit."""
        attempts = 1 if self._pins is not None else attempts  # pinned reads name files that stay
        for attempt in range(attempts):
            reads = self._view_reads(lo, hi)
            try:
                with damage_named(self._store, [r.view for r in self._requests]):
                    return reads, self._store.engine.point_in_time_join(entity, self._ts_col, [r.join for r in reads])
            except Exception:
                vanished = [f for r in reads for f in r.join.data.files if not os.path.exists(f)]
                if not vanished or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _compute(self) -> pa.Table:
        if self._result is not None:
            return self._result
        if self._entity_path is not None and self._entity.num_rows == 0:
            self._entity = read_entity_file(Path(self._entity_path))
        entity = normalise_timestamps(self._entity, self._ts_col)
        times = entity.column(self._ts_col)
        reads = []
        if entity.num_rows:
            self._hi = pc.max(times).as_py()
            reads, features = self._join(entity, pc.min(times).as_py(), self._hi)
            self._warn_incomplete(reads)
        else:
            features = pa.table({self._names[(r.name, f)]: pa.array([], _feature_types(r.view)[f])
                                 for r in self._requests for f in r.all_features})
        features = self._run_on_demand(features)
        ordered = [self._names[(v, f)] for v, f in (parse_ref(r) for r in dict.fromkeys(self._refs))]
        result = self._entity
        for name in ordered:
            result = result.append_column(name, features.column(name))
        self._result = result
        self.manifest = self._manifest(result.num_rows, reads)
        return result

    def _run_on_demand(self, features: pa.Table) -> pa.Table:
        """On-demand views over the joined features and the entity frame's request columns: the same
        function, with the same inputs, as the server runs at request time."""
        if not self._on_demand:
            return features
        n = self._entity.num_rows
        for odfv in self._on_demand:
            inputs = on_demand_inputs(odfv, self._requests, self._names,
                                      lambda name, table=features: table.column(name).to_pylist())
            inputs |= {k: v.to_pylist() for k, v in on_demand.request_inputs(
                odfv.view, {c: self._entity.column(c) for c in self._entity.column_names}).items()}
            outputs = on_demand.run(odfv.view, self._store.repo_path, inputs, n)
            for feature in odfv.features:
                features = features.append_column(self._names[(odfv.name, feature)], outputs[feature])
        return features

    def to_arrow(self) -> pa.Table:
        return self._compute()

    def to_pandas(self):
        return self._compute().to_pandas()

    def to_df(self):  # Feast's spelling
        return self.to_pandas()

    def to_parquet(self, path: str | os.PathLike) -> dict[str, Any]:
        """Write the export and ``<path>.manifest.json`` atomically; returns the manifest.

        With the entity rows given as a Parquet path (and no on-demand views), the engine streams the
        whole export itself: the local engine's DuckDB writes the file ``path`` without holding the
        result in memory; a cluster engine (Spark) writes ``path`` as a Parquet directory."""
        if self._entity_path is not None and self._result is None and not self._on_demand:
            return self._engine_export(Path(path))
        table = self._compute()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = dict(self.manifest, output=str(path.resolve()))
        _atomic_write(path, lambda tmp: write_parquet(table, tmp))
        _atomic_write(Path(str(path) + ".manifest.json"),
                      lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True)))
        return manifest


    def _engine_export(self, path: Path) -> dict[str, Any]:
        lo, self._hi = _time_bounds(self._entity_path, self._ts_col)
        for t in (lo, self._hi):  # the accepted range, as every input time (featurestore.timestamps)
            if t is not None:
                check_instant(t, f"entity_df column {self._ts_col!r}")
        reads = self._view_reads(lo, self._hi) if lo is not None else []
        self._warn_incomplete(reads)
        with damage_named(self._store, [r.view for r in self._requests]):
            rows = self._store.engine.export_parquet(self._entity_path, self._ts_col, [r.join for r in reads],
                                                     str(path.resolve()))
        manifest = dict(self._manifest(rows, reads), output=str(path.resolve()), written_by=self._store.engine.name)
        self.manifest = manifest
        _atomic_write(Path(str(path) + ".manifest.json"),
                      lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True)))
        return manifest


def _time_bounds(path: str, column: str) -> tuple[datetime | None, datetime | None]:
    """The earliest and latest entity time in a Parquet file or folder: from the files' statistics
    when every row group has them (microsecond times without nulls), else read a batch at a time (the
    whole column of a 100M-row frame would sit in memory beside the engine's export)."""
    files = parquet_files(path)
    found = _stats_bounds(files, column)
    if found is not None:
        return found
    lo = hi = None
    for batch in (b for name in files for b in pq.ParquetFile(name).iter_batches(columns=[column])):
        if batch.num_rows:
            bounds = pc.min_max(normalise_timestamps(pa.table([batch.column(0)], names=[column]), column)
                                .column(0)).as_py()
            lo = bounds["min"] if lo is None else min(lo, bounds["min"])
            hi = bounds["max"] if hi is None else max(hi, bounds["max"])
    return lo, hi


def _stats_bounds(files: list[str], column: str) -> tuple[datetime | None, datetime | None] | None:
    """(min, max) of ``column`` from Parquet footers, None unless every row group states both for a
    microsecond timestamp column without nulls (anything else is checked by reading the values)."""
    lows, highs = [], []
    for name in files:
        meta = pq.ParquetFile(name).metadata
        schema = meta.schema.to_arrow_schema()
        if column not in schema.names or schema.field(column).type not in (pa.timestamp("us"),
                                                                           pa.timestamp("us", tz="UTC")):
            return None
        index = next(i for i in range(meta.num_columns) if meta.schema.column(i).path == column)
        for g in range(meta.num_row_groups):
            if meta.row_group(g).num_rows == 0:
                continue
            stats = meta.row_group(g).column(index).statistics
            if stats is None or not stats.has_min_max or stats.null_count != 0:
                return None
            lows.append(stats.min_raw)  # the stored int64 microseconds (``min`` would load pandas)
            highs.append(stats.max_raw)
    return (from_us(min(lows)), from_us(max(highs))) if lows else (None, None)


EXPORT_ROW_GROUP = 1 << 18


def write_parquet(table: pa.Table, path: str) -> None:
    """Write ``table`` with a layout that depends on its rows only: each row group is made contiguous
    first (Arrow's chunking of a column shapes the pages written), so equal rows give equal bytes."""
    with pq.ParquetWriter(path, table.schema) as writer:
        for offset in range(0, max(table.num_rows, 1), EXPORT_ROW_GROUP):
            writer.write_table(table.slice(offset, EXPORT_ROW_GROUP).combine_chunks())


def _parquet_schema(path: Path) -> pa.Schema:
    """The schema of a Parquet file, or of the first of the Parquet files in a folder (as pyarrow's
    datasets take it)."""
    return pq.read_schema(parquet_files(path)[0])


def _entity_file_fingerprint(path: str) -> str:
    files = [str(p) for p in Path(path).rglob("*") if p.is_file()] if Path(path).is_dir() else [path]
    return fingerprint_paths(files)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _table_fingerprint(table: pa.Table) -> str:
    digest = hashlib.sha256(str(table.schema).encode())
    digest.update(str(table.num_rows).encode())
    for batch in table.to_batches(max_chunksize=65536)[:64]:
        for col in batch.columns:
            for buf in col.buffers():
                if buf is not None:
                    digest.update(memoryview(buf)[:4096])
    return digest.hexdigest()[:32]
