"""The results of ``featurestore drift`` runs, kept per view in the offline store's ``drift`` area (local
disk or s3, beside the data): a row per feature and statistic of each run. The feature server exports
the newest run's rows as Prometheus gauges (``serving.metrics``), so it never computes drift itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from featurestore.store import FeatureStore

UTC = timezone.utc
_TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([
    ("computed_at", _TS), ("run_id", pa.string()), ("baseline", pa.string()), ("recent_start", _TS),
    ("recent_end", _TS), ("feature", pa.string()), ("statistic", pa.string()), ("value", pa.float64()),
    ("bound", pa.float64()), ("drifted", pa.bool_()),
])


@dataclass(frozen=True)
class DriftValue:
    """One statistic of one feature in one run; ``bound`` None when the statistic is not judged and
    ``drifted`` whether the value crossed it."""

    computed_at: datetime
    run_id: str
    baseline: str  # what the baseline was: "export <path>" or "window <start>..<end>"
    recent_start: datetime
    recent_end: datetime
    feature: str
    statistic: str
    value: float
    bound: float | None
    drifted: bool


def record(store: "FeatureStore", view: str, values: list[DriftValue]) -> None:
    """Append one run's values to the view's drift table."""
    if values:
        rows = pa.Table.from_pylist([v.__dict__ for v in values], schema=SCHEMA)
        store.offline_store.drift.append(view, rows, "computed_at")


def latest(store: "FeatureStore", view: str, since: datetime | None = None) -> list[DriftValue]:
    """The values of the view's newest run computed at or after ``since`` (all runs when None); []
    when there is none."""
    area = store.offline_store.drift
    if area.schema(view) is None:  # no table (views() would open every view's table)
        return []
    rows = area.read(view, start=since).to_pylist()
    if not rows:
        return []
    newest = max(rows, key=lambda r: (r["computed_at"], r["run_id"]))
    return [DriftValue(**r) for r in rows if r["run_id"] == newest["run_id"]]
