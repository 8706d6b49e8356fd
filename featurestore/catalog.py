"""The registry's objects at one version, parsed once into typed, frozen definitions.

Services read views, services and on-demand views from a ``Catalog`` (``FeatureStore.catalog()``),
never from the registry's JSON: the dict form lives only in each definition's ``to_spec``/``from_spec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from featurestore.definitions import Entity, FeatureService, FeatureView
from featurestore.errors import FeatureViewNotFound
from featurestore.on_demand import OnDemandSpec
from featurestore.sources import DataSource, source_from_spec


def _frozen(kind_specs: dict[str, dict] | None, parse) -> Mapping[str, Any]:
    return MappingProxyType({name: parse(spec) for name, spec in (kind_specs or {}).items()})


@dataclass(frozen=True)
class Catalog:
    """Every applied object by kind and name, as of registry ``version``."""

    version: int
    entities: Mapping[str, Entity]
    sources: Mapping[str, DataSource]
    views: Mapping[str, FeatureView]
    on_demand: Mapping[str, OnDemandSpec]
    services: Mapping[str, FeatureService]

    @classmethod
    def parse(cls, version: int, snapshot: dict[str, dict[str, dict]]) -> "Catalog":
        """A catalog from a registry snapshot (kind -> name -> spec)."""
        return cls(version=version,
                   entities=_frozen(snapshot.get("entity"), Entity.from_spec),
                   sources=_frozen(snapshot.get("data_source"), source_from_spec),
                   views=_frozen(snapshot.get("feature_view"), FeatureView.from_spec),
                   on_demand=_frozen(snapshot.get("on_demand_feature_view"), OnDemandSpec.from_spec),
                   services=_frozen(snapshot.get("feature_service"), FeatureService.from_spec))

    def view(self, name: str) -> FeatureView:
        """A feature view by name; FeatureViewNotFound names the known ones."""
        found = self.views.get(name)
        if found is None:
            known = ", ".join(sorted(self.views))
            raise FeatureViewNotFound(f"feature view {name!r} is not in the registry"
                                      + (f" (known: {known})" if known else " (run apply?)"))
        return found
