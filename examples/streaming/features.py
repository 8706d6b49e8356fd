"""Clicks from Kafka, aggregated per user over a sliding 10-minute window.

The broker and topic come from the environment when the repo is applied (KAFKA_BOOTSTRAP, default
127.0.0.1:9092; CLICKS_TOPIC, default ``clicks``); they are stored in the registry with the view.
"""

import os
from datetime import timedelta

from featurestore import Aggregation, Entity, FeatureView, FileSource, KafkaSource

user = Entity(name="user", join_keys=["user_id"])

# The clicks' history (written by generate_history.py): exports and backfills read it, and it fixes
# the events' columns and types (user_id int64, price float64, ts timestamp).
clicks_history = FileSource(name="clicks_history", path="data/clicks_history.parquet", timestamp_field="ts")

clicks = KafkaSource(
    name="clicks",
    bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
    topic=os.environ.get("CLICKS_TOPIC", "clicks"),
    format="json",
    timestamp_field="ts",
    batch_source=clicks_history,
)

user_clicks = FeatureView(
    name="user_clicks",
    entities=[user],
    source=clicks,
    ttl=timedelta(days=1),
    aggregations=[
        Aggregation(column="price", function="sum", window=timedelta(minutes=10)),    # price_sum_10m
        Aggregation(column="price", function="count", window=timedelta(minutes=10)),  # price_count_10m
    ],
)
