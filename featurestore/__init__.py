"""A feature store that compiles one declarative definition to the engines and storage a team runs.

>>> from featurestore import Entity, Field, FeatureView, FileSource
>>> from featurestore.types import Float32
>>> driver = Entity(name="driver", join_keys=["driver_id"])
>>> source = FileSource(name="stats", path="data/stats.parquet", timestamp_field="event_timestamp")
>>> view = FeatureView(name="stats", entities=[driver], source=source,
...                    schema=[Field(name="conv_rate", dtype=Float32)])
>>> [f.name for f in view.features]
['conv_rate']
"""

from featurestore.definitions import Entity, FeatureService, FeatureView, Field
from featurestore.errors import FeatureStoreError
from featurestore.on_demand import OnDemandFeatureView, RequestSource, on_demand_feature_view
from featurestore.sources import FileSource, KafkaSource, PushSource, SqlSource
from featurestore.store import FeatureStore

__all__ = ["Entity", "Field", "FeatureView", "FeatureService", "FileSource", "SqlSource", "PushSource", "KafkaSource", "FeatureStore",
           "FeatureStoreError", "OnDemandFeatureView", "RequestSource", "on_demand_feature_view", "Aggregation",
           "col", "lit", "coalesce", "when"]
__version__ = "0.1.0"

_FROM_TRANSFORMS = {"Aggregation", "col", "lit", "coalesce", "when"}


def __getattr__(name: str):
    # The transform language is re-exported lazily: ``transforms`` imports ``featurestore.types``, so
    # importing it here eagerly would be circular when a user imports ``transforms`` first.
    if name in _FROM_TRANSFORMS:
        import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'featurestore' has no attribute {name!r}")
