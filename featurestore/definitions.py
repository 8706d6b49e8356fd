"""Feature definitions: what users declare in their repo's Python modules.

Every definition is a frozen value with a ``to_spec()`` dict (what the registry stores) and a
``from_spec()`` that rebuilds it, so the registry, the CLI and the engines all work from the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Sequence

from featurestore import types as fstypes
from featurestore.checks import Check, check_list
from featurestore.errors import DefinitionError
from featurestore.sources import DataSource, batch_source_of, source_from_spec
from transforms import ir
from transforms.aggregation import Aggregation

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"{kind} needs a non-empty string name, got {name!r}", obj=str(name))
    bad = set(name) - _NAME_CHARS
    if bad or name[0] in "-_" and kind != "Field":
        raise DefinitionError(
            f"{kind} {name!r}: names use letters, digits, '_' and '-' and start with a letter or digit",
            obj=name,
        )
    return name


@dataclass(frozen=True)
class Entity:
    """A thing features describe, identified by one or more join keys.

    >>> Entity(name="driver", join_keys=["driver_id"]).join_keys
    ('driver_id',)
    """

    name: str
    join_keys: Sequence[str] = ()
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_name("Entity", self.name)
        keys = tuple(self.join_keys) or (self.name,)
        if isinstance(self.join_keys, str):
            keys = (self.join_keys,)
        if len(set(keys)) != len(keys):
            raise DefinitionError(f"Entity {self.name!r}: duplicate join keys {list(keys)}", obj=self.name)
        for key in keys:
            check_name("join key", key)
        object.__setattr__(self, "join_keys", keys)

    def to_spec(self) -> dict[str, Any]:
        return {"name": self.name, "join_keys": list(self.join_keys), "description": self.description,
                "tags": dict(self.tags)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Entity":
        return cls(name=spec["name"], join_keys=spec["join_keys"], description=spec.get("description", ""),
                   tags=spec.get("tags", {}))


@dataclass(frozen=True)
class Field:
    """A named, typed column of a feature view (a feature, or a join key when its name is one)."""

    name: str
    dtype: fstypes.DataType
    description: str = ""

    def __post_init__(self) -> None:
        check_name("Field", self.name)
        if not isinstance(self.dtype, fstypes.DataType):
            raise DefinitionError(f"Field {self.name!r}: dtype must be a featurestore.types type, "
                                  f"got {self.dtype!r}", obj=self.name, field="dtype")

    def to_spec(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype.to_spec(), "description": self.description}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Field":
        return cls(name=spec["name"], dtype=fstypes.from_spec(spec["dtype"]),
                   description=spec.get("description", ""))


# Drift statistics a view can set a bound on per feature (``FeatureView.drift_thresholds``). A feature
# drifts when a statistic crosses its bound: ``psi`` and ``ks`` (the Kolmogorov-Smirnov distance)
# above it, the p-values ``ks_pvalue`` and ``chi2_pvalue`` below it. ``featurestore.drift`` computes
# them; ``DEFAULT_DRIFT_THRESHOLDS`` holds where a view sets nothing. PSI above 0.2 is the usual
# "significant shift"; a KS distance of 0.1 is a tenth of the rows moved across some value. P-values
# shrink with the number of rows (millions of rows make any difference "significant"), so they are
# judged only where a view asks for it.
DRIFT_STATISTICS = ("psi", "ks", "ks_pvalue", "chi2_pvalue")
DEFAULT_DRIFT_THRESHOLDS: dict[str, float | None] = {"psi": 0.2, "ks": 0.1, "ks_pvalue": None, "chi2_pvalue": None}
ALL_FEATURES = "*"  # a drift_thresholds key that sets bounds for every feature of the view


def _drift_thresholds(view: str, given: Any) -> dict[str, dict[str, float | None]]:
    """``given`` checked and copied: feature (or ``*``) -> statistic -> bound (None: not judged)."""
    if not isinstance(given, dict):
        raise DefinitionError(f"FeatureView {view!r}: drift_thresholds maps feature names to "
                              f"{{statistic: bound}}, got {given!r}", obj=view, field="drift_thresholds")
    out: dict[str, dict[str, float | None]] = {}
    for feature, bounds in given.items():
        where = f"FeatureView {view!r}: drift_thresholds[{feature!r}]"
        if not isinstance(feature, str) or not feature:
            raise DefinitionError(f"{where}: keys are feature names (or '*')", obj=view, field="drift_thresholds")
        if not isinstance(bounds, dict):
            raise DefinitionError(f"{where} must be a dict like {{'psi': 0.2}}, got {bounds!r}", obj=view,
                                  field=feature)
        out[feature] = {}
        for statistic, bound in bounds.items():
            if statistic not in DRIFT_STATISTICS:
                raise DefinitionError(f"{where}: unknown statistic {statistic!r} (known: "
                                      f"{', '.join(DRIFT_STATISTICS)})", obj=view, field=feature)
            upper = float("inf") if statistic == "psi" else 1.0  # PSI is unbounded; the rest are in [0, 1]
            number = isinstance(bound, (int, float)) and not isinstance(bound, bool)
            if bound is not None and not (number and 0 <= bound <= upper):
                raise DefinitionError(f"{where}[{statistic!r}] must be None or a number from 0 to {upper:g}, "
                                      f"got {bound!r}", obj=view, field=feature)
            out[feature][statistic] = None if bound is None else float(bound)
    return out


def _ttl_seconds(ttl: timedelta | None) -> float | None:
    if ttl is None:
        return None
    seconds = ttl.total_seconds()
    return None if seconds == 0 else seconds  # Feast treats a zero TTL as "no TTL"; so do we


@dataclass(frozen=True, eq=False)
class FeatureView:
    """A group of features computed from one source and keyed by one or more entities.

    ``ttl`` bounds how old a joined value may be (``None``: no bound). ``schema`` lists the features;
    fields named like a join key declare that key's type and are not features.
    ``drift_thresholds`` sets, per feature (``"*"``: every feature), the bounds ``featurestore drift``
    judges it by, e.g. ``{"amount": {"psi": 0.1, "ks": 0.05}, "country": {"chi2_pvalue": 0.01}}``;
    a bound of None turns a statistic's judgement off; the rest keep ``DEFAULT_DRIFT_THRESHOLDS``.
    """

    name: str
    entities: Sequence[Entity | str] = ()
    schema: Sequence[Field] = ()
    source: DataSource | None = None
    ttl: timedelta | None = None
    online: bool = True
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    owner: str = ""
    drift_thresholds: dict[str, dict[str, float | None]] = field(default_factory=dict)
    # Key column types, resolved from the source at apply time when the schema does not give them.
    entity_columns: Sequence[Field] = ()
    # Declarative transforms: ``filter`` keeps source rows where it is True (evaluated on the source's
    # columns), ``transform`` adds or replaces columns (each expression named with .alias()), and
    # ``aggregations`` turn the resulting events into windowed features (the view's features are then
    # the aggregations, named e.g. ``amount_sum_1h``).
    transform: Sequence[ir.Expr] = ()
    filter: "ir.Expr | None" = None
    aggregations: Sequence[Aggregation] = ()
    # Types of the columns the aggregations read, resolved at apply time.
    event_columns: Sequence[Field] = ()
    # Data checks on the view's rows and runs (``featurestore.checks``).
    checks: Sequence[Check] = ()

    def __post_init__(self) -> None:
        check_name("FeatureView", self.name)
        if self.source is None or not isinstance(self.source, DataSource):
            raise DefinitionError(f"FeatureView {self.name!r} needs a source (FileSource, SqlSource, ...)",
                                  obj=self.name, field="source")
        if self.ttl is not None and not isinstance(self.ttl, timedelta):
            raise DefinitionError(f"FeatureView {self.name!r}: ttl must be a timedelta or None",
                                  obj=self.name, field="ttl")
        if self.ttl is not None and self.ttl < timedelta(0):
            raise DefinitionError(f"FeatureView {self.name!r}: ttl must not be negative", obj=self.name,
                                  field="ttl")
        object.__setattr__(self, "entities", tuple(self.entities))
        object.__setattr__(self, "drift_thresholds", _drift_thresholds(self.name, self.drift_thresholds))
        object.__setattr__(self, "schema", tuple(self.schema))
        object.__setattr__(self, "entity_columns", tuple(self.entity_columns))
        object.__setattr__(self, "transform", tuple(self.transform))
        object.__setattr__(self, "aggregations", tuple(self.aggregations))
        object.__setattr__(self, "event_columns", tuple(self.event_columns))
        object.__setattr__(self, "checks", check_list(self.name, self.checks))
        for e in self.transform:
            if not isinstance(e, ir.Expr):
                raise DefinitionError(f"FeatureView {self.name!r}: transform takes expressions (col(...)...), "
                                      f"got {e!r}", obj=self.name, field="transform")
        if self.filter is not None and not isinstance(self.filter, ir.Expr):
            raise DefinitionError(f"FeatureView {self.name!r}: filter must be an expression, got {self.filter!r}",
                                  obj=self.name, field="filter")
        for a in self.aggregations:
            if not isinstance(a, Aggregation):
                raise DefinitionError(f"FeatureView {self.name!r}: aggregations takes Aggregation objects, "
                                      f"got {a!r}", obj=self.name, field="aggregations")
        agg_names = [a.name for a in self.aggregations]
        dupes = sorted({n for n in agg_names if agg_names.count(n) > 1})
        if dupes:
            raise DefinitionError(f"FeatureView {self.name!r}: aggregation {dupes[0]!r} is declared twice",
                                  obj=self.name, field=dupes[0])
        for f in self.schema:
            if not isinstance(f, Field):
                raise DefinitionError(f"FeatureView {self.name!r}: schema takes Field objects, got {f!r}",
                                      obj=self.name, field="schema")
        names = [f.name for f in self.schema]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DefinitionError(f"FeatureView {self.name!r}: field {dupes[0]!r} is declared twice",
                                  obj=self.name, field=dupes[0])

    # -- names ----------------------------------------------------------------------------------
    @property
    def entity_names(self) -> tuple[str, ...]:
        return tuple(e if isinstance(e, str) else e.name for e in self.entities)

    def join_keys(self, entities: dict[str, Entity] | None = None) -> tuple[str, ...]:
        """The view's join key columns, in entity order."""
        keys: list[str] = []
        for ent in self.entities:
            if isinstance(ent, str):
                if entities is None or ent not in entities:
                    raise DefinitionError(f"FeatureView {self.name!r} references unknown entity {ent!r}",
                                          obj=self.name, field="entities")
                ent = entities[ent]
            keys.extend(ent.join_keys)
        return tuple(keys)

    @property
    def features(self) -> tuple[Field, ...]:
        """The feature fields (schema fields that are not join keys)."""
        keys = {c.name for c in self.entity_columns} | set(self._declared_keys())
        return tuple(f for f in self.schema if f.name not in keys)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def aggregated(self) -> bool:
        """Whether the view's features are windowed aggregations of its events."""
        return bool(self.aggregations)

    @property
    def stored_fields(self) -> tuple[Field, ...]:
        """The columns of the view's stored rows besides keys and times: its features, or for an
        aggregation view the event columns its aggregations read."""
        return tuple(self.event_columns) if self.aggregated else self.features

    @property
    def batch_source(self) -> DataSource:
        """The source batch reads use: the source, or a push or Kafka source's history."""
        return batch_source_of(self.source)

    def _declared_keys(self) -> set[str]:
        return {k for ent in self.entities if not isinstance(ent, str) for k in ent.join_keys}

    @property
    def row_checks(self) -> tuple[Check, ...]:
        """The checks judging each row (the others judge a run)."""
        return tuple(c for c in self.checks if c.is_row)

    @property
    def ttl_seconds(self) -> float | None:
        return _ttl_seconds(self.ttl)

    def drift_bounds(self, feature: str) -> dict[str, float | None]:
        """The bound of each drift statistic for ``feature``: the defaults, then the view's ``"*"``
        entry, then the feature's own."""
        return {**DEFAULT_DRIFT_THRESHOLDS, **self.drift_thresholds.get(ALL_FEATURES, {}),
                **self.drift_thresholds.get(feature, {})}

    def __getitem__(self, features: Sequence[str]) -> "FeatureViewProjection":
        """``view[["a", "b"]]`` selects some features, e.g. for a FeatureService."""
        if isinstance(features, str):
            features = [features]
        known = {f.name for f in self.features} | {a.name for a in self.aggregations}
        for f in features:
            if f not in known:
                raise DefinitionError(f"FeatureView {self.name!r} has no feature {f!r}", obj=self.name,
                                      field=f)
        return FeatureViewProjection(self.name, tuple(features))

    # -- specs ----------------------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "entities": list(self.entity_names),
            "schema": [f.to_spec() for f in self.schema],
            "entity_columns": [f.to_spec() for f in self.entity_columns],
            "source": self.source.to_spec() if self.source else None,
            "ttl_seconds": self.ttl_seconds,
            "online": self.online,
            "description": self.description,
            "tags": dict(self.tags),
            "owner": self.owner,
            # only when set: views stored before drift thresholds existed keep an unchanged spec
            **({"drift_thresholds": {f: dict(b) for f, b in self.drift_thresholds.items()}}
               if self.drift_thresholds else {}),
            "transform": [ir.to_spec(e) for e in self.transform],
            "filter": None if self.filter is None else ir.to_spec(self.filter),
            "aggregations": [a.to_spec() for a in self.aggregations],
            "event_columns": [f.to_spec() for f in self.event_columns],
            "checks": [c.to_spec() for c in self.checks],
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "FeatureView":
        ttl = spec.get("ttl_seconds")
        flt = spec.get("filter")
        return cls(
            name=spec["name"],
            entities=tuple(spec["entities"]),
            schema=[Field.from_spec(f) for f in spec["schema"]],
            entity_columns=[Field.from_spec(f) for f in spec.get("entity_columns", [])],
            source=source_from_spec(spec["source"]),
            ttl=None if ttl is None else timedelta(seconds=ttl),
            online=spec.get("online", True),
            description=spec.get("description", ""),
            tags=spec.get("tags", {}),
            owner=spec.get("owner", ""),
            drift_thresholds=spec.get("drift_thresholds", {}),
            transform=[ir.from_spec(e) for e in spec.get("transform", [])],
            filter=None if flt is None else ir.from_spec(flt),
            aggregations=[Aggregation.from_spec(a) for a in spec.get("aggregations", [])],
            event_columns=[Field.from_spec(f) for f in spec.get("event_columns", [])],
            checks=[Check.from_spec(c) for c in spec.get("checks", [])],
        )

    def __repr__(self) -> str:
        return f"FeatureView(name={self.name!r}, entities={list(self.entity_names)})"


@dataclass(frozen=True)
class FeatureViewProjection:
    """Some features of one view, as a FeatureService lists them."""

    view: str
    features: tuple[str, ...] | None  # None: every feature of the view


@dataclass(frozen=True, eq=False)
class FeatureService:
    """A named set of features a model uses; export or serve it by name."""

    name: str
    features: Sequence[FeatureView | FeatureViewProjection] = ()
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    owner: str = ""

    def __post_init__(self) -> None:
        check_name("FeatureService", self.name)
        items = tuple(self.features)
        if not items:
            raise DefinitionError(f"FeatureService {self.name!r} lists no features", obj=self.name,
                                  field="features")
        for item in items:
            if not isinstance(item, (FeatureView, FeatureViewProjection)) and not hasattr(item, "udf"):
                raise DefinitionError(f"FeatureService {self.name!r}: features takes feature views or "
                                      f"view[[...]] projections, got {item!r}", obj=self.name,
                                      field="features")
        object.__setattr__(self, "features", items)

    def projections(self) -> list[FeatureViewProjection]:
        """What the service lists, each item as a projection (``features`` None: every feature)."""
        return [item if isinstance(item, FeatureViewProjection) else FeatureViewProjection(item.name, None)
                for item in self.features]

    def to_spec(self) -> dict[str, Any]:
        features = [{"view": p.view, "features": None if p.features is None else list(p.features)}
                    for p in self.projections()]
        return {"name": self.name, "features": features, "description": self.description,
                "tags": dict(self.tags), "owner": self.owner}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "FeatureService":
        svc = object.__new__(cls)
        object.__setattr__(svc, "name", spec["name"])
        object.__setattr__(svc, "features", tuple(
            FeatureViewProjection(p["view"], None if p["features"] is None else tuple(p["features"]))
            for p in spec["features"]))
        object.__setattr__(svc, "description", spec.get("description", ""))
        object.__setattr__(svc, "tags", spec.get("tags", {}))
        object.__setattr__(svc, "owner", spec.get("owner", ""))
        return svc
