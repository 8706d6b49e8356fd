"""A feature store that compiles one declarative definition to the engines and storage a team runs.

>>> from featurestore import Entity, Field, FeatureView, FileSource
>>> from featurestore.types import Float32
>>> driver = Entity(name="driver", join_keys=["driver_id"])
>>> source = FileSource(name="stats", path="data/stats.parquet", timestamp_field="event_timestamp")
>>> view = FeatureView(name="stats", entities=[driver], source=source,
...                    schema=[Field(name="conv_rate", dtype=Float32)])
>>> [f.name for f in view.features]
['conv_rate']

The names below are loaded on first use (module ``__getattr__``), so ``import featurestore`` and
``import featurestore.types`` cost next to nothing and pull in no pydantic, pyarrow or engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Check": "featurestore.checks",
    "Entity": "featurestore.definitions", "FeatureService": "featurestore.definitions",
    "FeatureView": "featurestore.definitions", "Field": "featurestore.definitions",
    "FeatureStoreError": "featurestore.errors",
    "OnDemandFeatureView": "featurestore.on_demand", "RequestSource": "featurestore.on_demand",
    "on_demand_feature_view": "featurestore.on_demand",
    "DeltaSource": "featurestore.sources", "FileSource": "featurestore.sources", "KafkaSource": "featurestore.sources",
    "PushSource": "featurestore.sources", "SqlSource": "featurestore.sources",
    "FeatureStore": "featurestore.store",
    "Aggregation": "transforms", "col": "transforms", "lit": "transforms", "coalesce": "transforms",
    "when": "transforms",
}
__all__ = ["Check", "Entity", "FeatureService", "FeatureView", "Field", "FeatureStoreError", "OnDemandFeatureView",
           "RequestSource", "on_demand_feature_view", "DeltaSource", "FileSource", "KafkaSource", "PushSource", "SqlSource",
           "FeatureStore", "Aggregation", "col", "lit", "coalesce", "when"]

if TYPE_CHECKING:
    from featurestore.checks import Check
    from featurestore.definitions import Entity, FeatureService, FeatureView, Field
    from featurestore.errors import FeatureStoreError
    from featurestore.on_demand import OnDemandFeatureView, RequestSource, on_demand_feature_view
    from featurestore.sources import DeltaSource, FileSource, KafkaSource, PushSource, SqlSource
    from featurestore.store import FeatureStore
    from transforms import Aggregation, coalesce, col, lit, when


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'featurestore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
