"""Feature views with transforms, filters and windowed aggregations: exports match a brute-force
reference, and online lookups (windows still sliding after materialization) match exports."""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from featurestore import FeatureStore
from featurestore.errors import DefinitionError
from tests.repo_helpers import write_repo

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource
from featurestore.types import Float64
from transforms import Aggregation, col
user = Entity(name="user", join_keys=["user_id"])
txns = FeatureView(
    name="user_txn", entities=[user], ttl=timedelta(days=30),
    source=FileSource(name="transactions", path="data/txns.parquet", timestamp_field="ts",
                      created_timestamp_field="created"),
    transform=[col("amount_cents").cast(Float64).alias("amount"), (col("country") != "US").alias("foreign")],
    filter=col("status") == "settled",
    aggregations=[Aggregation(column="amount", function="sum", window=timedelta(hours=1)),
                  Aggregation(column="amount", function="mean", window=timedelta(days=7)),
                  Aggregation(column="foreign", function="count", window=timedelta(days=1)),
                  Aggregation(column="amount", function="max", window=None),
                  Aggregation(column="amount", function="last", window=timedelta(days=1)),
                  Aggregation(column="amount", function="stddev", window=timedelta(days=7))])
"""
FEATURES = ["amount_sum_1h", "amount_mean_7d", "foreign_count_1d", "amount_max_lifetime", "amount_last_1d",
            "amount_stddev_7d"]


def _txns(now: datetime, users: int, seed: int = 11) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for _ in range(int(rng.integers(0, 12))):
            t = now - timedelta(minutes=int(rng.integers(5, 10 * 24 * 60)))
            rows.append({"user_id": u, "ts": t, "created": t + timedelta(seconds=int(rng.integers(0, 3))),
                         "amount_cents": int(rng.integers(0, 40)) * 25,
                         "country": str(rng.choice(["US", "FR", "US", "DE"])),
                         "status": str(rng.choice(["settled", "settled", "pending"]))})
    return rows


def _table(rows):
    return pa.Table.from_pylist(rows, pa.schema([("user_id", pa.int64()), ("ts", TS), ("created", TS),
                                                 ("amount_cents", pa.int64()), ("country", pa.string()),
                                                 ("status", pa.string())]))


def _reference(rows: list[dict], user: int, t: datetime) -> dict:
    """Brute force: settled events of the user with time <= t; each window is (t - w, t]."""
    ev = [r for r in rows if r["user_id"] == user and r["status"] == "settled" and r["ts"] <= t]
    if not ev or max(r["ts"] for r in ev) < t - timedelta(days=30):
        return dict.fromkeys(FEATURES)

    def within(w):
        return [r for r in ev if r["ts"] > t - w]

    h1, d1, d7 = within(timedelta(hours=1)), within(timedelta(days=1)), within(timedelta(days=7))
    amounts7 = [float(r["amount_cents"]) for r in d7]
    last = max(d1, key=lambda r: (r["ts"], r["created"]), default=None)
    return {"amount_sum_1h": sum(float(r["amount_cents"]) for r in h1) if h1 else None,
            "amount_mean_7d": sum(amounts7) / len(amounts7) if amounts7 else None,
            "foreign_count_1d": sum(1 for r in d1),
            "amount_max_lifetime": max(float(r["amount_cents"]) for r in ev),
            "amount_last_1d": None if last is None else float(last["amount_cents"]),
            "amount_stddev_7d": statistics.stdev(amounts7) if len(amounts7) > 1 else None}


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@pytest.fixture
def repo(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    rows = _txns(now, 300)
    store = FeatureStore(write_repo(tmp_path, CODE, tables={"txns": _table(rows)}))
    store.apply()
    return store, rows, now


def test_view_resolves_features_and_types(repo):
    store, _, _ = repo
    view = store.get_feature_view("user_txn")
    assert [(f.name, f.dtype.name) for f in view.features] == [
        ("amount_sum_1h", "Float64"), ("amount_mean_7d", "Float64"), ("foreign_count_1d", "Int64"),
        ("amount_max_lifetime", "Float64"), ("amount_last_1d", "Float64"), ("amount_stddev_7d", "Float64")]


@pytest.mark.parametrize("repeat", [1, 8], ids=["grouped-plan", "window-plan"])
def test_export_matches_reference(repo, repeat):
    """Few rows per key take the join-and-group plan, many take the window plan: same answers."""
    store, rows, now = repo
    rng = np.random.default_rng(5)
    users = [int(u) for u in rng.integers(0, 310, 400)]
    times = [now - timedelta(minutes=int(m)) for m in rng.integers(-600, 12 * 24 * 60, 400)]
    # window edges: exactly one hour / one day after an event
    edge = rows[0]
    users += [edge["user_id"]] * 2
    times += [edge["ts"] + timedelta(hours=1), edge["ts"] + timedelta(days=1)]
    if repeat > 1:  # many rows per key
        users, times = [u % 20 for u in users] * 2, times * 2
    entity = pa.table({"user_id": pa.array(users, pa.int64()), "event_timestamp": pa.array(times, TS)})
    out = store.get_historical_features(entity, [f"user_txn:{f}" for f in FEATURES]).to_arrow()
    for i, (u, t) in enumerate(zip(users, times)):
        want = _reference(rows, u, t)
        for f in FEATURES:
            assert _same(out.column(f)[i].as_py(), want[f]), (i, u, t, f, out.column(f)[i].as_py(), want[f])


def test_online_lookup_equals_export_while_windows_slide(repo):
    store, rows, now = repo
    store.materialize(now - timedelta(days=60), now, progress=False)
    users = list(range(300))
    online = store.get_online_features([f"user_txn:{f}" for f in FEATURES], {"user_id": users})
    read_at = datetime.now(UTC)
    entity = pa.table({"user_id": pa.array(users, pa.int64()),
                       "event_timestamp": pa.array([read_at] * len(users), TS)})
    offline = store.get_historical_features(entity, [f"user_txn:{f}" for f in FEATURES]).to_arrow()
    for f in FEATURES:
        got, want = online.to_dict()[f], offline.column(f).to_pylist()
        assert all(_same(a, b) for a, b in zip(got, want)), f
    # the export of the offline store gives the same numbers once it covers all history (lifetime)
    store.materialize(None, read_at + timedelta(hours=1), online=False, progress=False)
    again = store.get_historical_features(entity, [f"user_txn:{f}" for f in FEATURES])
    again.to_arrow()
    assert again.manifest["views"]["user_txn"]["read_from"] == "offline_store"
    for f in FEATURES:  # equal up to the order float sums are added in
        assert all(_same(a, b) for a, b in zip(again.to_arrow().column(f).to_pylist(), offline.column(f).to_pylist()))


@pytest.mark.parametrize("change, field, words", [
    ('col("amount_cents").cast(Float64).alias("amount")', "amount_cent", "amount_cent"),
    ('(col("country") != "US").alias("foreign")', "country", "foreign"),
])
def test_invalid_expressions_fail_at_plan_naming_the_column(tmp_path, change, field, words):
    bad = {"amount_cent": CODE.replace('col("amount_cents")', 'col("amount_cent")'),
           "country": CODE.replace('(col("country") != "US")', '(col("country") + 1)')}[field]
    store = FeatureStore(write_repo(tmp_path, bad, tables={"txns": _table(_txns(datetime.now(UTC), 3))}))
    with pytest.raises(DefinitionError) as info:
        store.plan()
    assert info.value.obj == "user_txn" and field in str(info.value)
    assert store.registry.version() == 0
