"""A payments feature repo worth browsing in the web catalog (``featurestore ui``): entities, file
sources, views with owners, tags, filters, transforms, aggregations and checks, an on-demand view and
two services, applied twice (so there is history), materialized (so there are quality runs: one view
warns, one is stale) and with one recorded drift run.

    python examples/catalog/payments.py [REPO_DIR]     # default: ./payments-demo (recreated)
    featurestore --repo payments-demo ui

The catalog's tests (tests/test_catalog_ui.py) and the README's screenshots (screenshots.py) use it.
"""

from __future__ import annotations

import random
import shutil
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from featurestore import FeatureStore
from featurestore.drift import compare

UTC = timezone.utc

FEATURES = '''
from datetime import timedelta

from featurestore import (Aggregation, Check, Entity, FeatureService, FeatureView, Field, FileSource,
                          RequestSource, col, on_demand_feature_view)
from featurestore.types import Float64, Int64, String

user = Entity(name="user", join_keys=["user_id"], description="A card holder", tags={"domain": "payments"})
merchant = Entity(name="merchant", join_keys=["merchant_id"], description="A shop taking card payments")

transactions = FileSource(name="transactions", path="data/transactions.parquet", timestamp_field="ts",
                          description="Card transactions, one row per authorisation")
merchants = FileSource(name="merchant_events", path="data/merchants.parquet", timestamp_field="ts",
                       description="Merchant profile updates")

user_txn = FeatureView(
    name="user_txn", entities=[user], source=transactions, ttl=timedelta(days=30),
    description="Spending of each card holder over sliding windows",
    owner="risk-team@example.com", tags={"domain": "payments", "tier": "gold"},
    filter=col("status") == "settled",
    transform=[col("amount").cast(Float64).alias("amount"), (col("country") != "US").alias("foreign")],
    aggregations=[
        Aggregation(column="amount", function="sum", window=timedelta(hours=1)),
        Aggregation(column="amount", function="mean", window=timedelta(days=7)),
        Aggregation(column="foreign", function="count", window=timedelta(days=1)),
    ],
    checks=[Check(col("amount") >= 0, name="amount_non_negative", on_fail="drop"),
            Check(col("country").isin(["US", "DE", "FR"]), name="known_country", on_fail="warn")],
)

merchant_profile = FeatureView(
    name="merchant_profile", entities=[merchant], source=merchants, ttl=timedelta(hours=MERCHANT_TTL_HOURS),
    description="Category and rating of each merchant",
    owner="merchant-team@example.com", tags={"domain": "merchants"},
    schema=[Field("category", String, description="Merchant category code group"),
            Field("rating", Float64, description="Average customer rating, 0 to 5"),
            Field("reviews", Int64, description="Number of reviews")],
    checks=[Check(col("rating") >= 0, name="rating_non_negative", on_fail="warn")],
)


@on_demand_feature_view(sources=[user_txn, RequestSource(schema=[Field("amount_now", Float64)])],
                        schema=[Field("ratio_to_7d_mean", Float64, description="Amount now over the 7-day mean")],
                        description="How unusual the amount being authorised is")
def spend_ratio(inputs):
    return {"ratio_to_7d_mean": [None if mean in (None, 0) else now / mean
                                 for mean, now in zip(inputs["amount_mean_7d"], inputs["amount_now"])]}


fraud_model = FeatureService(name="fraud_model", features=[user_txn, spend_ratio],
                             description="Features of the card fraud model", owner="risk-team@example.com",
                             tags={"model": "fraud"})
merchant_risk = FeatureService(name="merchant_risk", features=[merchant_profile[["rating", "reviews"]],
                                                                 user_txn[["amount_sum_1h"]]],
                               description="Merchant risk scoring", owner="merchant-team@example.com",
                               tags={"model": "merchant"})
'''


def _tables(now: datetime, rng: random.Random) -> dict[str, pa.Table]:
    n = 400
    times = [now - timedelta(days=6) + timedelta(minutes=20 * i) for i in range(n)]
    txn = pa.table({
        "user_id": [rng.randrange(1, 30) for _ in range(n)], "ts": pa.array(times, pa.timestamp("us", tz="UTC")),
        "amount": [round(rng.uniform(-5, 300) if i < n / 2 else rng.uniform(50, 600), 2) for i in range(n)],
        "country": [rng.choice(["US", "US", "DE", "FR", "BR"]) for _ in range(n)],
        "status": [rng.choice(["settled", "settled", "settled", "declined"]) for _ in range(n)],
    })
    m = 60
    merchants = pa.table({
        "merchant_id": [i % 20 for i in range(m)],
        "ts": pa.array([now - timedelta(days=5) + timedelta(hours=2 * i) for i in range(m)], pa.timestamp("us", tz="UTC")),
        "category": [rng.choice(["grocery", "travel", "fuel"]) for _ in range(m)],
        "rating": [round(rng.uniform(-1, 5), 1) for _ in range(m)],
        "reviews": [rng.randrange(0, 500) for _ in range(m)],
    })
    return {"transactions": txn, "merchants": merchants}


def _write(path: Path, features_py: str, registry: str, tables: dict[str, pa.Table]) -> None:
    (path / "data").mkdir(parents=True, exist_ok=True)
    (path / "featurestore.yaml").write_text(
        f"project: payments\nregistry: {registry}\n"
        "offline_store: {type: parquet, path: data/offline}\nonline_store: {type: sqlite, path: data/online.db}\n")
    (path / "features.py").write_text(textwrap.dedent(features_py))
    for name, table in tables.items():
        pq.write_table(table, path / "data" / f"{name}.parquet")


def build(path: Path, *, registry: str = "sqlite:///data/registry.db", seed: int | None = None) -> FeatureStore:
    """The repo, applied twice (the second apply changes the merchant view's TTL, a description and adds
    a check), materialized over its data's days, with one drift run of ``user_txn``."""
    seed = random.randrange(2**32) if seed is None else seed
    print(f"payments repo seed {seed}")
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    _write(path, FEATURES.replace("MERCHANT_TTL_HOURS", "48"), registry, _tables(now, rng))
    store = FeatureStore(repo_path=path)
    store.apply()
    second = FEATURES.replace("MERCHANT_TTL_HOURS", "1").replace(
        '"Category and rating of each merchant"', '"Category, rating and reviews of each merchant"').replace(
        'checks=[Check(col("rating") >= 0, name="rating_non_negative", on_fail="warn")]',
        'checks=[Check(col("rating") >= 0, name="rating_non_negative", on_fail="warn"), '
        'Check.not_null("category")]')
    (path / "features.py").write_text(second)
    store = FeatureStore(repo_path=path)
    store.apply()
    # Materialized up to two hours ago: merchant_profile (TTL 1 h) is stale, user_txn (30 days) is fresh.
    end = now - timedelta(hours=2)
    for day in range(6, 0, -2):
        store.materialize(now - timedelta(days=day), min(now - timedelta(days=day - 2), end), progress=False)
    compare(store, "user_txn", baseline_window=(now - timedelta(days=6), now - timedelta(days=3)),
            recent_window=(now - timedelta(days=3), now))
    return store


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "payments-demo")
    if target.exists():
        shutil.rmtree(target)
    build(target, seed=7)
    print(f"built {target}/; browse it with: featurestore --repo {target} ui")
