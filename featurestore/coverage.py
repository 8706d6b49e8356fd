"""Which time intervals of each view the offline store holds materialized rows for: kept in the
registry, the one place for materialization progress.

Why the registry: it is transactional across processes and machines whatever the offline store's
storage (object storage has no locks), it already serializes applies, and one record serves both
questions that used to have two answers: may an export read this view from the offline store
(``covers``), and where does an incremental materialization resume (``watermark``). Materialization
records an interval only after the offline store committed its rows, so a reader that sees the
interval also sees the rows; a crash in between leaves the interval unrecorded, which only makes
exports read the source instead.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from featurestore.store import FeatureStore

SCOPE = "coverage"
_LEGACY_WATERMARK_SCOPE = "materialize"  # the resume point older versions kept separately


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def merge(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Half-open intervals merged (touching ones join) and sorted.

    >>> from datetime import datetime as d
    >>> merge([(d(2024, 1, 3), d(2024, 1, 4)), (d(2024, 1, 1), d(2024, 1, 2)), (d(2024, 1, 2), d(2024, 1, 3))])
    [(datetime.datetime(2024, 1, 1, 0, 0), datetime.datetime(2024, 1, 4, 0, 0))]
    """
    out: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _decode(text: str | None) -> list[tuple[datetime, datetime]]:
    if not text:
        return []
    return [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in json.loads(text)]


def decode(text: str | None) -> list[tuple[datetime, datetime]]:
    """The intervals of a stored coverage value (``Registry.states(SCOPE)`` gives every view's)."""
    return _decode(text)


def intervals(store: "FeatureStore", view: str) -> list[tuple[datetime, datetime]]:
    """The view's covered half-open intervals [start, end), merged and sorted."""
    return _decode(store.registry.get_state(SCOPE, view))


def record(store: "FeatureStore", view: str, start: datetime, end: datetime) -> None:
    """Add [start, end) to the view's coverage (after the offline store committed its rows)."""
    with store.registry.write() as tx:
        merged = merge(_decode(tx.get_state(SCOPE, view)) + [(_utc(start), _utc(end))])
        tx.set_state(SCOPE, view, json.dumps([[a.isoformat(), b.isoformat()] for a, b in merged]))


def covers(store: "FeatureStore", view: str, start: datetime, end: datetime) -> bool:
    """Whether every instant of [start, end] (inclusive) lies inside the view's coverage."""
    start, end = _utc(start), _utc(end)
    return any(a <= start and end < b for a, b in intervals(store, view))


def watermark(store: "FeatureStore", view: str) -> datetime | None:
    """Where an incremental materialization resumes: the end of the latest covered interval."""
    covered = intervals(store, view)
    if covered:
        return covered[-1][1]
    legacy = store.registry.get_state(_LEGACY_WATERMARK_SCOPE, view)
    return None if legacy is None else datetime.fromisoformat(legacy)
