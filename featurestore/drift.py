"""Drift of a view's features: recent values against a baseline, judged by the view's thresholds.

The **baseline** is either a window of the view's offline data or a training export, read through
its manifest: the export's output file, the columns of the view's features in it (``view__feature``
or ``feature``, as the export named them). The **recent** sample is a window of the view's offline
data, by default the day before now. Offline data is both tables exports read: the materialized
rows and the rows stream jobs and pushes appended, so streamed values are never left out. A window
``[start, end)`` holds rows with ``start <= event time < end``.

Each feature is compared on its non-null values (``featurestore.drift_stats``: PSI and
Kolmogorov-Smirnov for numbers, PSI and chi-square for strings and booleans); null counts are
reported beside them but not judged (an export's nulls are mostly rows its point-in-time join found
no value for, which recent rows cannot have; ``Check.not_null`` is the rule for nulls). A feature
drifts when a statistic crosses its bound (``FeatureView.drift_bounds``). An aggregation view stores
events, not its aggregates, so its windows are compared on the event columns its aggregations read,
and an export of its aggregates cannot be a baseline.

Each run can be recorded (``featurestore.drift_records``); the feature server exports the newest.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestore import drift_records, drift_stats
from featurestore.definitions import FeatureView
from featurestore.drift_records import DriftValue
from featurestore.errors import InvalidInputError, NotFoundError
from featurestore.ports.engine import EVENT_TS
from featurestore.reproduce import load_manifest

if TYPE_CHECKING:
    from featurestore.store import FeatureStore

UTC = timezone.utc
DEFAULT_RECENT = timedelta(days=1)
# A statistic drifts above its bound, a p-value below it.
_BELOW_IS_DRIFT = {"ks_pvalue", "chi2_pvalue"}


@dataclass
class Sample:
    """One side of a comparison: a column per compared feature (named by the feature)."""

    description: str
    table: pa.Table


@dataclass
class FeatureDrift:
    """The comparison of one feature: ``kind`` "number" or "category" (None: not compared, ``note``
    says why), the rows and nulls of each side, the statistics, their bounds and which crossed them."""

    feature: str
    kind: str | None
    baseline_rows: int
    recent_rows: int
    baseline_nulls: int
    recent_nulls: int
    statistics: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, float | None] = field(default_factory=dict)
    crossed: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def drifted(self) -> bool:
        return bool(self.crossed)


@dataclass
class DriftReport:
    view: str
    baseline: str
    recent_start: datetime
    recent_end: datetime
    features: list[FeatureDrift]
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def drifted(self) -> list[str]:
        """The features that drifted."""
        return [f.feature for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {"view": self.view, "baseline": self.baseline, "recent_start": self.recent_start.isoformat(),
                "recent_end": self.recent_end.isoformat(), "computed_at": self.computed_at.isoformat(),
                "run_id": self.run_id, "drifted": self.drifted,
                "features": [{**f.__dict__, "drifted": f.drifted} for f in self.features]}

    def values(self) -> list[DriftValue]:
        """The report as drift records: a value per compared feature and statistic."""
        return [DriftValue(self.computed_at, self.run_id, self.baseline, self.recent_start, self.recent_end,
                           f.feature, name, value, f.bounds.get(name), name in f.crossed)
                for f in self.features for name, value in f.statistics.items()]


# -- samples ---------------------------------------------------------------------------------------
def window_sample(store: "FeatureStore", view: FeatureView, start: datetime, end: datetime) -> Sample:
    """The view's stored feature columns of its offline rows (materialized and appended) in [start, end)."""
    if not start < end:
        raise InvalidInputError(f"the window {start.isoformat()}..{end.isoformat()} is empty: its start must be "
                                "before its end")
    fields = {f.name: f.dtype.to_arrow() for f in view.stored_fields}
    offline = store.offline_store
    parts = []
    for area in (offline, offline.appends):
        schema = area.schema(view.name)
        if schema is None:
            continue
        stored = schema.names
        rows = area.read(view.name, start, end, columns=[c for c in fields if c in stored] + [EVENT_TS])
        rows = rows.filter(pc.less(rows.column(EVENT_TS), pa.scalar(end, rows.schema.field(EVENT_TS).type)))
        parts.append(pa.table({name: rows.column(name).cast(arrow_type) if name in rows.column_names
                               else pa.nulls(rows.num_rows, arrow_type) for name, arrow_type in fields.items()}))
    if not parts:
        raise NotFoundError(f"feature view {view.name!r} has no offline data: materialize it, or stream or "
                            "push rows to it, first")
    table = pa.concat_tables(parts)
    description = f"window {start.isoformat()}..{end.isoformat()}"
    if table.num_rows == 0:
        raise NotFoundError(f"feature view {view.name!r} has no offline rows in the {description} "
                            "(materialized or appended): materialize that range or choose another window")
    return Sample(description, table)


def manifest_path(path: str | os.PathLike) -> Path:
    """The manifest of an export: ``path`` itself, or ``<path>.manifest.json`` when given the export."""
    path = Path(path)
    beside = Path(f"{path}.manifest.json")
    return beside if not path.name.endswith(".json") and beside.is_file() else path


def export_sample(store: "FeatureStore", view: FeatureView, manifest_file: str | os.PathLike) -> Sample:
    """The view's feature columns of the training export ``manifest_file`` describes."""
    manifest_file = manifest_path(manifest_file)
    manifest = load_manifest(manifest_file)
    if manifest["project"] != store.config.project:
        raise InvalidInputError(f"the manifest {manifest_file} is of project {manifest['project']!r}, this "
                                f"repository's is {store.config.project!r}")
    refs = [ref.partition(":") for ref in manifest["features"]]
    features = list(dict.fromkeys(feature for name, _, feature in refs if name == view.name))
    if not features:
        exported = sorted({name for name, _, _ in refs})
        raise NotFoundError(f"the export {manifest_file} has no feature of view {view.name!r} (its views: "
                            f"{', '.join(exported)})")
    if view.aggregated:
        raise InvalidInputError(f"feature view {view.name!r} aggregates its events: its exported features "
                                f"({', '.join(features)}) are not stored rows to compare with; compare windows "
                                "of its event columns with a baseline window instead")
    stored = {f.name for f in view.stored_fields}
    gone = [f for f in features if f not in stored]
    if gone:
        raise NotFoundError(f"feature view {view.name!r} no longer has the exported feature(s) {', '.join(gone)}")
    output = manifest.get("output")
    if not output or not Path(output).exists():
        raise NotFoundError(f"the export's output {output!r} (named by {manifest_file}) is gone: make it again "
                            f"with `featurestore export --reproduce {manifest_file} -o {output}`")
    columns = {f: f"{view.name}__{f}" if manifest["full_feature_names"] else f for f in features}
    table = pq.read_table(output, columns=list(columns.values()))
    return Sample(f"export {output}", table.rename_columns(list(columns)))


# -- statistics ------------------------------------------------------------------------------------
def _kind(arrow_type: pa.DataType) -> str | None:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if (pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type)
            or pa.types.is_timestamp(arrow_type)):
        return "number"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_boolean(arrow_type):
        return "category"
    return None


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    """The non-null values as float64 (times as epoch microseconds), NaN dropped."""
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp("us")).cast(pa.int64())
    values = column.drop_null().cast(pa.float64()).to_numpy()
    return values[~np.isnan(values)]


def _nulls(column: pa.ChunkedArray) -> int:
    nulls = column.null_count
    if pa.types.is_floating(column.type):
        nulls += int(pc.sum(pc.is_nan(column.drop_null())).as_py() or 0)
    return nulls


def _counts(column: pa.ChunkedArray) -> dict[Any, int]:
    counted = pc.value_counts(column.drop_null()).to_pylist()
    return {c["values"]: c["counts"] for c in counted}


def judge(statistics: dict[str, float], bounds: dict[str, float | None]) -> list[str]:
    """The statistics that crossed their bound, in ``statistics`` order."""
    crossed = []
    for name, value in statistics.items():
        bound = bounds.get(name)
        if bound is not None and (value < bound if name in _BELOW_IS_DRIFT else value > bound):
            crossed.append(name)
    return crossed


def compare_feature(feature: str, baseline: pa.ChunkedArray, recent: pa.ChunkedArray,
                    bounds: dict[str, float | None]) -> FeatureDrift:
    """One feature's statistics, judged by ``bounds``."""
    out = FeatureDrift(feature, None, len(baseline), len(recent), _nulls(baseline), _nulls(recent))
    kinds = _kind(baseline.type), _kind(recent.type)
    if kinds[0] != kinds[1]:
        out.note = f"the baseline holds {baseline.type} and recent data {recent.type}: not compared"
        return out
    if kinds[0] is None:
        out.note = f"{baseline.type} values are not compared"
        return out
    if kinds[0] == "number":
        b, r = _numbers(baseline), _numbers(recent)
        if len(b) and len(r):
            out.statistics = drift_stats.numeric(b, r)
    else:
        b, r = _counts(baseline), _counts(recent)
        if b and r:
            out.statistics = drift_stats.categorical(b, r)
    if not out.statistics:
        side = "the baseline" if not len(b) else "recent data"
        out.note = f"{side} has no non-null values: not compared"
        return out
    out.kind = kinds[0]
    out.bounds = {name: bounds.get(name) for name in out.statistics if name in bounds}
    out.crossed = judge(out.statistics, out.bounds)
    return out


def compare(store: "FeatureStore", view_name: str, *, baseline_manifest: str | os.PathLike | None = None,
            baseline_window: tuple[datetime, datetime] | None = None, recent: timedelta = DEFAULT_RECENT,
            recent_window: tuple[datetime, datetime] | None = None, until: datetime | None = None,
            record: bool = True) -> DriftReport:
    """Drift of ``view_name``'s features between a baseline (an export's manifest or a window) and
    recent data (``recent_window``, else the ``recent`` before ``until``, default now); with ``record``
    the results are kept for the feature server's ``/metrics``."""
    if (baseline_manifest is None) == (baseline_window is None):
        raise InvalidInputError("give exactly one baseline: an export's manifest or a window")
    view = store.catalog().view(view_name)
    if recent_window is None:
        if recent <= timedelta(0):
            raise InvalidInputError(f"the recent window must be longer than 0, got {recent}")
        end = until or datetime.now(UTC)
        recent_window = (end - recent, end)
    base = (export_sample(store, view, baseline_manifest) if baseline_manifest is not None
            else window_sample(store, view, *baseline_window))
    now = window_sample(store, view, *recent_window)
    features = [compare_feature(name, base.table.column(name), now.table.column(name), view.drift_bounds(name))
                for name in base.table.column_names]
    report = DriftReport(view.name, base.description, recent_window[0], recent_window[1], features)
    if record:
        drift_records.record(store, view.name, report.values())
    return report
