"""Fraud detection features: transaction aggregates over sliding windows and a request-time ratio."""

from datetime import timedelta

from featurestore import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    RequestSource,
    col,
    on_demand_feature_view,
)
from featurestore.types import Float64

user = Entity(name="user", join_keys=["user_id"], description="A card holder")

transactions = FileSource(name="transactions", path="data/transactions.parquet", timestamp_field="ts",
                          created_timestamp_field="created")

user_txn = FeatureView(
    name="user_txn",
    entities=[user],
    source=transactions,
    ttl=timedelta(days=30),
    filter=col("status") == "settled",
    transform=[col("amount").cast(Float64).alias("amount"), (col("country") != "US").alias("foreign")],
    aggregations=[
        Aggregation(column="amount", function="sum", window=timedelta(hours=1)),
        Aggregation(column="amount", function="mean", window=timedelta(days=7)),
        Aggregation(column="amount", function="max", window=timedelta(days=7)),
        Aggregation(column="foreign", function="count", window=timedelta(days=1)),
        Aggregation(column="amount", function="count", window=None),
    ],
)


@on_demand_feature_view(sources=[user_txn, RequestSource(schema=[Field("amount_now", Float64)])],
                        schema=[Field("ratio_to_7d_mean", Float64)])
def ratio(inputs):
    """How unusual the amount being authorised is against the user's last week."""
    return {"ratio_to_7d_mean": [None if mean in (None, 0) else now / mean
                                 for mean, now in zip(inputs["amount_mean_7d"], inputs["amount_now"])]}


fraud_model_v1 = FeatureService(name="fraud_model_v1", features=[user_txn, ratio])
