"""``plan`` and ``apply``: turn the definitions of a repo into registry state, in one transaction.

The desired state is computed and validated outside the transaction (it reads sources); the diff is
computed again inside the registry's write lock against what is stored *then*, so two concurrent
applies never lose each other's changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from featurestore import coverage
from featurestore.definitions import Entity, FeatureService, FeatureView
from featurestore.errors import IncompatibleChangeError
from featurestore.on_demand import OnDemandFeatureView, OnDemandSpec
from featurestore.repo import RepoContents, origin_of
from featurestore.sources import DataSource
from featurestore.validate import (
    Problems,
    check_engine,
    check_secrets,
    check_service,
    check_unique,
    resolve_view,
)

# A view's fields whose change alters the rows it materializes.
ROW_FIELDS = {"source", "entities", "entity_columns", "schema", "transform", "filter", "aggregations",
              "event_columns"}
KINDS = ("entity", "data_source", "feature_view", "on_demand_feature_view", "feature_service")
Specs = dict[str, dict[str, dict]]


@dataclass(frozen=True)
class Change:
    kind: str
    name: str
    action: str  # "add" | "change" | "delete"
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        sign = {"add": "+", "change": "~", "delete": "-"}[self.action]
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{sign} {self.kind} {self.name}{detail}"


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    incompatible: list[str] = field(default_factory=list)
    registry_version: int = 0

    @property
    def empty(self) -> bool:
        return not self.changes

    def __str__(self) -> str:
        if not self.changes:
            return "No changes: the registry matches the repo."
        lines = [str(c) for c in self.changes]
        lines += [f"! incompatible: {m}" for m in self.incompatible]
        return "\n".join(lines)


def desired_state(contents: RepoContents, repo_path: Path, stored: Specs | None = None,
                  engine_type: str = "local") -> Specs:
    """Validated specs for everything in ``contents``; entities and views not in ``contents`` are
    looked up in ``stored`` (for a partial apply)."""
    problems = Problems()
    entities = check_unique("Entity", contents.entities, problems, origin_of)
    views = check_unique("FeatureView", contents.feature_views, problems, origin_of)
    services = check_unique("FeatureService", contents.feature_services, problems, origin_of)
    sources = check_unique("data source", contents.sources + [v.source for v in views if v.source], problems,
                           origin_of)
    for source in sources:
        check_secrets(source, problems)
    entity_map = {e.name: e for e in entities}
    for name, spec in (stored or {}).get("entity", {}).items():
        entity_map.setdefault(name, Entity.from_spec(spec))
    resolved_views = [r for v in views if (r := resolve_view(v, entity_map, repo_path, problems))]
    for view in resolved_views:
        check_engine(view, engine_type, problems)
    view_specs = {v.name: v.to_spec() for v in resolved_views}
    # The fields of every view a service or an on-demand view may name: stored ones, then the repo's.
    known_views = {name: FeatureView.from_spec(spec).schema
                   for name, spec in (stored or {}).get("feature_view", {}).items()}
    known_views |= {v.name: v.schema for v in resolved_views}
    odfvs = check_unique("OnDemandFeatureView", contents.on_demand_views, problems, origin_of)
    for odfv in odfvs:
        if odfv.name in known_views:
            problems.add(f"OnDemandFeatureView {odfv.name!r}: a feature view has the same name", obj=odfv.name,
                         field_name="name")
        for source in odfv.sources:
            if isinstance(source, FeatureView) and source.name not in known_views:
                problems.add(f"OnDemandFeatureView {odfv.name!r} reads unknown feature view {source.name!r}",
                             obj=odfv.name, field_name="sources")
    known = known_views | {name: OnDemandSpec.from_spec(spec).schema
                           for name, spec in (stored or {}).get("on_demand_feature_view", {}).items()}
    known |= {odfv.name: odfv.schema for odfv in odfvs}
    for svc in services:
        check_service(svc, known, problems)
    problems.raise_if_any()
    return {
        "entity": {e.name: e.to_spec() for e in entities},
        "data_source": {s.name: s.to_spec() for s in sources},
        "feature_view": view_specs,
        "on_demand_feature_view": {odfv.name: odfv.to_spec(repo_path) for odfv in odfvs},
        "feature_service": {s.name: s.to_spec() for s in services},
    }


def _changed_fields(old: dict, new: dict) -> tuple[str, ...]:
    return tuple(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))


def _canonical(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)


def diff(current: Specs, desired: Specs, *, deletes: bool) -> Plan:
    plan = Plan()
    for kind in KINDS:
        have, want = current.get(kind, {}), desired.get(kind, {})
        for name in sorted(want):
            if name not in have:
                plan.changes.append(Change(kind, name, "add"))
            elif _canonical(have[name]) != _canonical(want[name]):
                plan.changes.append(Change(kind, name, "change", _changed_fields(have[name], want[name])))
        if deletes:
            for name in sorted(set(have) - set(want)):
                plan.changes.append(Change(kind, name, "delete"))
    plan.incompatible = incompatibilities(current, desired, plan)
    return plan


def incompatibilities(current: Specs, desired: Specs, plan: Plan) -> list[str]:
    """Changes that would make stored offline/online data unreadable: a view's entities, join keys or
    key types changing under the same name."""
    out = []
    for change in plan.changes:
        if change.action != "change":
            continue
        old, new = current[change.kind][change.name], desired[change.kind][change.name]
        if change.kind == "feature_view":
            old_view, new_view = FeatureView.from_spec(old), FeatureView.from_spec(new)
            old_entities, new_entities = list(old_view.entity_names), list(new_view.entity_names)
            if old_entities != new_entities:
                out.append(f"feature view {change.name!r}: entities change from {old_entities} to "
                           f"{new_entities}")
            old_keys = {c.name: c.dtype.to_spec() for c in old_view.entity_columns}
            new_keys = {c.name: c.dtype.to_spec() for c in new_view.entity_columns}
            if old_keys != new_keys and old_entities == new_entities:
                out.append(f"feature view {change.name!r}: join key types change from {old_keys} to {new_keys}")
        elif change.kind == "entity":
            old_keys, new_keys = list(Entity.from_spec(old).join_keys), list(Entity.from_spec(new).join_keys)
            if old_keys != new_keys:
                out.append(f"entity {change.name!r}: join keys change from {old_keys} to {new_keys}")
    return out


def contents_of(objects: Iterable[object]) -> RepoContents:
    contents = RepoContents()
    for obj in objects:
        if not isinstance(obj, (Entity, DataSource, FeatureView, FeatureService, OnDemandFeatureView)):
            raise TypeError(f"apply takes definitions (Entity, FeatureView, ...), got {obj!r}")
        contents.add(obj, "<apply(objects=...)>")
    return contents


def apply_specs(registry, desired: Specs, *, deletes: bool, force: bool) -> Plan:
    """Write ``desired`` in one registry transaction; refuses incompatible changes unless ``force``."""
    with registry.write() as tx:
        current = tx.snapshot()
        plan = diff(current, desired, deletes=deletes)
        if plan.incompatible and not force:
            raise IncompatibleChangeError(
                "refusing incompatible change (use --force / force=True to apply anyway): "
                + "; ".join(plan.incompatible))
        for change in plan.changes:
            if change.action == "delete":
                tx.delete(change.kind, change.name)
            else:
                tx.put(change.kind, change.name, desired[change.kind][change.name])
            if change.kind == "feature_view" and (change.action == "delete" or set(change.fields) & ROW_FIELDS):
                # rows materialized under the old definition no longer answer for this one
                tx.set_state(coverage.SCOPE, change.name, "[]")
    plan.registry_version = tx.new_version
    return plan
