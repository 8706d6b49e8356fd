"""Repairing a view's offline tables: ``featurestore offline repair VIEW``.

What can be rebuilt and what cannot: a view's materialized rows come from its source, so whatever
the repair of its table could not keep is rematerialized (offline only: the online store was not
damaged) over the intervals the view had materialized. Rows appended by stream jobs and pushes exist
nowhere else; the repair keeps every readable one and reports the rest as lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from featurestore import coverage, materialize
from featurestore.errors import InvalidInputError
from featurestore.ports.offline_store import CAP_REPAIR, TableRepair

if TYPE_CHECKING:
    from featurestore.store import FeatureStore


@dataclass
class RepairResult:
    view: str
    materialized: TableRepair
    appended: TableRepair
    rematerialized: list[tuple[datetime, datetime]] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return self.materialized.damaged or self.appended.damaged

    def lines(self) -> list[str]:
        """What was found and done, for people."""
        if not self.damaged:
            return [f"{self.view}: the offline tables are readable; nothing to repair"]
        out = []
        for label, table in (("materialized rows", self.materialized), ("appended rows", self.appended)):
            out += [f"{self.view}: {label}: {note}" for note in table.notes]
            if table.set_aside:
                out.append(f"{self.view}: {label}: damaged files were moved to {table.set_aside}")
        if self.materialized.damaged:
            if self.rematerialized:
                spans = ", ".join(f"{a.isoformat()} .. {b.isoformat()}" for a, b in self.rematerialized)
                out.append(f"{self.view}: materialized rows: rematerialized from the source: {spans}")
            else:
                out.append(f"{self.view}: materialized rows: no materialized interval needed rematerializing")
        if self.appended.damaged:
            lost = ("an unknown number of" if self.appended.lost_rows is None else str(self.appended.lost_rows))
            out.append(f"{self.view}: appended rows: {lost} streamed or pushed rows are lost; they have no "
                       f"source to be rebuilt from (push them again, or replay their Kafka events, to restore them)")
        return out


def _clip(covered: list[tuple[datetime, datetime]], lost: list[tuple[datetime, datetime]] | None
          ) -> list[tuple[datetime, datetime]]:
    """The parts of the covered intervals that hold lost rows (all of them when ``lost`` is unknown)."""
    if lost is None:
        return covered
    out = [(max(a, lo), min(b, hi)) for a, b in covered for lo, hi in lost if max(a, lo) < min(b, hi)]
    return coverage.merge(out)


def repair_offline(store: "FeatureStore", view: str) -> RepairResult:
    """Repair the view's offline tables and rematerialize what the materialized one lost."""
    offline = store.offline_store
    if CAP_REPAIR not in offline.capabilities:
        raise InvalidInputError(f"the {type(offline).__name__} offline store cannot repair its tables")
    result = RepairResult(view, offline.repair(view), offline.appends.repair(view))
    if result.materialized.damaged:
        intervals = _clip(coverage.intervals(store, view), result.materialized.lost_times)
        if intervals and view not in store.catalog().views:
            raise InvalidInputError(f"feature view {view!r} is not in the registry: its lost materialized rows "
                                    f"cannot be rematerialized (apply its definition first)")
        for start, end in intervals:
            materialize.materialize(store, start, end, [view], online=False, progress=False)
        result.rematerialized = intervals
    return result
