"""The quality record of a view: one row per materialization run or stream commit, with what its
checks did (``checks``) and the statistics of the rows it wrote (``stats``), appended to the view's
table in the offline store's ``quality`` area, so it is kept where the data is (local disk or s3).

``checks`` is a list of ``{"name", "on_fail", "rows_checked", "rows_failed", "action"}`` (action:
``passed``, ``warned``, ``dropped`` or ``failed``). ``stats`` maps each feature column to its
statistics (``featurestore stats`` shows them), or is None when none were computed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from featurestore.store import FeatureStore

UTC = timezone.utc
_TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([
    ("run_id", pa.string()), ("kind", pa.string()), ("started", _TS), ("ended", _TS),
    ("rows_in", pa.int64()), ("rows_written", pa.int64()), ("checks", pa.string()), ("stats", pa.string()),
])


@dataclass
class QualityRun:
    kind: str  # "materialize" | "stream"
    started: datetime
    ended: datetime
    rows_in: int = 0
    rows_written: int = 0
    checks: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def _table(runs: list[QualityRun]) -> pa.Table:
    return pa.table({
        "run_id": [r.run_id for r in runs], "kind": [r.kind for r in runs],
        "started": pa.array([r.started for r in runs], _TS), "ended": pa.array([r.ended for r in runs], _TS),
        "rows_in": pa.array([r.rows_in for r in runs], pa.int64()),
        "rows_written": pa.array([r.rows_written for r in runs], pa.int64()),
        "checks": [json.dumps(r.checks) for r in runs],
        "stats": [None if r.stats is None else json.dumps(r.stats) for r in runs],
    }, schema=SCHEMA)


def record(store: "FeatureStore", view: str, run: QualityRun) -> None:
    """Append ``run`` to the view's quality table."""
    store.offline_store.quality.append(view, _table([run]), "started")


def runs(store: "FeatureStore", view: str, since: datetime | None = None) -> list[QualityRun]:
    """The view's recorded runs started at or after ``since`` (all when None), oldest first."""
    area = store.offline_store.quality
    if area.schema(view) is None:  # no table (views() would open every view's table)
        return []
    table = area.read(view, start=since)
    rows = sorted(table.to_pylist(), key=lambda r: (r["started"], r["run_id"]))
    return [QualityRun(kind=r["kind"], started=r["started"], ended=r["ended"], rows_in=r["rows_in"],
                       rows_written=r["rows_written"], checks=json.loads(r["checks"] or "[]"),
                       stats=None if r["stats"] is None else json.loads(r["stats"]), run_id=r["run_id"])
            for r in rows]
