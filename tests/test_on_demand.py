"""On-demand feature views run identically in exports and in online lookups."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from featurestore import FeatureStore
from featurestore.errors import InvalidInputError
from featurestore.on_demand import OnDemandFeatureError
from tests.repo_helpers import write_repo

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")

CODE = """
from datetime import timedelta
from featurestore import (Entity, FeatureService, FeatureView, Field, FileSource, RequestSource,
                          on_demand_feature_view)
from featurestore.types import Float64, Int64, String
user = Entity(name="user", join_keys=["user_id"])
stats = FeatureView(name="stats", entities=[user], ttl=timedelta(days=7),
    source=FileSource(name="src", path="data/stats.parquet", timestamp_field="ts"),
    schema=[Field(name="mean_amount", dtype=Float64), Field(name="trips", dtype=Int64)])

@on_demand_feature_view(sources=[stats, RequestSource(schema=[Field("amount_now", Float64)])],
                        schema=[Field("ratio", Float64), Field("size", String)])
def ratio(inputs):
    out = {"ratio": [], "size": []}
    for mean, now in zip(inputs["mean_amount"], inputs["amount_now"]):
        out["ratio"].append(None if mean in (None, 0) else now / mean)
        out["size"].append("big" if now > 100 else "small")
    return out

@on_demand_feature_view(sources=[stats], schema=[Field("boom", Float64)], mode="pandas")
def broken(df):
    return df.assign(boom=1 / 0)

svc = FeatureService(name="svc", features=[stats[["trips"]], ratio])
"""


@pytest.fixture
def store(tmp_path):
    now = datetime.now(UTC)
    stats = pa.table({"user_id": pa.array([1, 2, 3], pa.int64()),
                      "ts": pa.array([now - timedelta(hours=1)] * 2 + [now - timedelta(days=30)], TS),
                      "mean_amount": pa.array([50.0, 0.0, 10.0]), "trips": pa.array([3, 4, 5], pa.int64())})
    s = FeatureStore(write_repo(tmp_path, CODE, tables={"stats": stats}))
    s.apply()
    s.materialize(now - timedelta(days=60), now, progress=False)
    return s


def test_same_inputs_same_outputs_online_and_in_exports(store):
    amounts = [75.0, 300.0, 20.0, 5.0]
    users = [1, 2, 3, 9]
    online = store.get_online_features(["ratio:ratio", "ratio:size", "stats:trips"],
                                       {"user_id": users, "amount_now": amounts})
    assert online.feature_names == ["user_id", "ratio", "size", "trips"]
    assert online.values["ratio"] == [1.5, None, None, None]  # user 3's stats expired; user 9 unknown
    assert online.values["size"] == ["small", "big", "small", "small"]
    entity = pa.table({"user_id": pa.array(users, pa.int64()), "amount_now": pa.array(amounts),
                       "event_timestamp": pa.array([datetime.now(UTC)] * 4, TS)})
    offline = store.get_historical_features(entity, "svc").to_arrow()
    assert offline.column_names == ["user_id", "amount_now", "event_timestamp", "trips", "ratio", "size"]
    for name in ("ratio", "size", "trips"):
        assert offline.column(name).to_pylist() == online.values[name]


def test_missing_request_field_is_named(store):
    with pytest.raises(InvalidInputError, match="needs request field 'amount_now'"):
        store.get_online_features(["ratio:ratio"], {"user_id": [1]})
    entity = pa.table({"user_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([datetime.now(UTC)], TS)})
    with pytest.raises(InvalidInputError, match="needs request field 'amount_now'"):
        store.get_historical_features(entity, ["ratio:ratio"])


def test_failing_function_names_the_view(store):
    with pytest.raises(OnDemandFeatureError, match="on-demand feature view 'broken' failed: ZeroDivisionError"):
        store.get_online_features(["broken:boom"], {"user_id": [1]})
    entity = pa.table({"user_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([datetime.now(UTC)], TS)})
    with pytest.raises(OnDemandFeatureError, match="'broken'"):
        store.get_historical_features(entity, ["broken:boom"]).to_arrow()


def test_changed_function_must_be_applied_again(store):
    path = store.repo_path / "features.py"
    path.write_text(path.read_text().replace("now > 100", "now > 200"))
    fresh = FeatureStore(store.repo_path)
    with pytest.raises(OnDemandFeatureError, match="changed since it was applied"):
        fresh.get_online_features(["ratio:size"], {"user_id": [1], "amount_now": [1.0]})
    fresh.apply()
    assert fresh.get_online_features(["ratio:size"], {"user_id": [1], "amount_now": [150.0]}).values["size"] == ["small"]


def test_server_answers_a_failing_function_with_a_json_error_naming_the_view(store):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    client = TestClient(create_app(store))
    ok = client.post("/get-online-features", json={"features": ["ratio:ratio"],
                                                   "entities": {"user_id": [1], "amount_now": [75.0]}})
    assert ok.status_code == 200 and ok.json()["results"][1]["values"] == [1.5]
    bad = client.post("/get-online-features", json={"features": ["broken:boom"], "entities": {"user_id": [1]}})
    assert bad.status_code == 500
    error = bad.json()["error"]
    assert error["type"] == "OnDemandFeatureError" and "'broken'" in error["message"]
    assert "Traceback" not in bad.text
    missing = client.post("/get-online-features", json={"features": ["ratio:ratio"], "entities": {"user_id": [1]}})
    assert missing.status_code == 422 and "amount_now" in missing.json()["error"]["message"]
