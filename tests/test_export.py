"""get_historical_features through the public API: semantics, validation, sources, manifests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore
from featurestore.errors import FeatureNotFound, FeatureViewNotFound, InvalidInputError, NotFoundError
from tests.repo_helpers import write_repo

UTC = timezone.utc
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def h(n: float) -> datetime:
    return T0 + timedelta(hours=n)


HOURLY = pa.table({
    "driver_id": pa.array([1, 1, 1, 2, 2], pa.int64()),
    "event_timestamp": pa.array([h(0), h(1), h(1), h(0), h(5)], TS),
    "created": pa.array([h(0), h(1), h(2), h(0), h(5)], TS),
    "conv_rate": pa.array([0.1, 0.2, 0.3, 0.5, 0.6], pa.float32()),
    "trips": pa.array([10, 20, 30, 50, 60], pa.int64()),
})
DAILY = pa.table({
    "driver_id": pa.array([1, 2], pa.int64()),
    "event_timestamp": pa.array([h(-24), h(-24)], TS),
    "trips": pa.array([100, 200], pa.int64()),
    "rating": pa.array([4.5, 3.5], pa.float64()),
})
PAIRS = pa.table({
    "driver_id": pa.array([1, 1, 2], pa.int64()),
    "city": pa.array(["a", "b", "a"]),
    "event_timestamp": pa.array([h(0), h(0), h(0)], TS),
    "surge": pa.array([1.5, 2.5, 3.5], pa.float64()),
})

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureService, FeatureView, Field, FileSource
from featurestore.types import Float32, Float64, Int64
driver = Entity(name="driver", join_keys=["driver_id"])
city = Entity(name="city", join_keys=["city"])
hourly = FeatureView(name="hourly", entities=[driver], ttl=timedelta(hours=2),
    source=FileSource(name="hourly_src", path="data/hourly.parquet", timestamp_field="event_timestamp",
                      created_timestamp_field="created"),
    schema=[Field(name="conv_rate", dtype=Float32), Field(name="trips", dtype=Int64)])
daily = FeatureView(name="daily", entities=[driver], ttl=None,
    source=FileSource(name="daily_src", path="data/daily.parquet", timestamp_field="event_timestamp"),
    schema=[Field(name="trips", dtype=Int64), Field(name="rating", dtype=Float64)])
pairs = FeatureView(name="pairs", entities=[driver, city], ttl=timedelta(days=1),
    source=FileSource(name="pairs_src", path="data/pairs.parquet", timestamp_field="event_timestamp"),
    schema=[Field(name="surge", dtype=Float64)])
svc = FeatureService(name="svc", features=[hourly[["conv_rate"]], daily])
"""


@pytest.fixture
def store(tmp_path):
    repo = write_repo(tmp_path, CODE, tables={"hourly": HOURLY, "daily": DAILY, "pairs": PAIRS})
    s = FeatureStore(repo)
    s.apply()
    return s


def entities(rows):
    return pd.DataFrame(rows, columns=["driver_id", "event_timestamp"])


def test_point_in_time_semantics(store):
    df = entities([(1, h(1)), (1, h(0.5)), (1, h(3)), (1, h(3.5)), (2, h(-1)), (3, h(1)), (1, h(1))])
    out = store.get_historical_features(df, ["hourly:conv_rate", "hourly:trips"]).to_pandas()
    assert list(out.columns) == ["driver_id", "event_timestamp", "conv_rate", "trips"]
    # tie at h(1) broken by created; h(3) is exactly ttl after h(1) (inclusive); h(3.5) is expired;
    # before any data and unknown keys give nulls; duplicates are kept in input order
    assert out["trips"].tolist()[:1] == [30]
    assert out["trips"].astype("object").where(out["trips"].notna(), None).tolist() == \
        [30, 10, 30, None, None, None, 30]
    assert out["conv_rate"].dtype == "float32"
    assert out["event_timestamp"].tolist() == df["event_timestamp"].tolist()


def test_several_views_full_names_and_collisions(store):
    df = entities([(1, h(1)), (2, h(5))])
    with pytest.raises(InvalidInputError, match="'trips' comes from both hourly:trips and daily:trips"):
        store.get_historical_features(df, ["hourly:trips", "daily:trips"])
    out = store.get_historical_features(df, ["hourly:trips", "daily:trips", "daily:rating"],
                                        full_feature_names=True).to_arrow()
    assert out.column_names == ["driver_id", "event_timestamp", "hourly__trips", "daily__trips", "daily__rating"]
    assert out.column("hourly__trips").to_pylist() == [30, 60]
    assert out.column("daily__trips").to_pylist() == [100, 200]  # no TTL: a day-old value still joins


def test_feature_service_and_composite_keys(store):
    df = entities([(1, h(1))])
    out = store.get_historical_features(df, store.list_feature_services()[0]).to_arrow()
    assert out.column_names == ["driver_id", "event_timestamp", "conv_rate", "trips", "rating"]
    assert store.get_historical_features(df, "svc").to_arrow().equals(out)
    pairs = pd.DataFrame({"driver_id": [1, 1, 2, 2], "city": ["b", "a", "a", "b"],
                          "event_timestamp": [h(1)] * 4})
    got = store.get_historical_features(pairs, ["pairs:surge"]).to_pandas()["surge"].tolist()
    assert got[:3] == [2.5, 1.5, 3.5] and pd.isna(got[3])


def test_naive_timestamps_are_utc(store):
    naive = entities([(1, h(1).replace(tzinfo=None)), (1, h(3.5).replace(tzinfo=None))])
    out = store.get_historical_features(naive, ["hourly:trips"]).to_pandas()
    assert out["trips"].tolist()[0] == 30 and pd.isna(out["trips"].tolist()[1])


@pytest.mark.parametrize("df, features, error, words", [
    (entities([(1, h(1))]), ["nope:trips"], FeatureViewNotFound, "feature view 'nope'"),
    (entities([(1, h(1))]), ["hourly:nope"], FeatureNotFound, "has no feature 'nope'"),
    (entities([(1, h(1))]), ["hourly"], InvalidInputError, "'hourly' is not of the form 'view:feature'"),
    (entities([(1, h(1))]), "hourly", NotFoundError, "feature service 'hourly' is not in the registry"),
    (pd.DataFrame({"event_timestamp": [h(1)]}), ["hourly:trips"], InvalidInputError,
     "missing join key column 'driver_id'"),
    (pd.DataFrame({"driver_id": [1]}), ["hourly:trips"], InvalidInputError, "no timestamp column"),
    (pd.DataFrame({"driver_id": ["1"], "event_timestamp": [h(1)]}), ["hourly:trips"], InvalidInputError,
     "join key 'driver_id' is String in entity_df but feature view 'hourly' keys it as Int64"),
    (pd.DataFrame({"driver_id": [1], "event_timestamp": [h(1)], "trips": [0]}), ["hourly:trips"],
     InvalidInputError, "'trips' is also a column of entity_df"),
])
def test_clear_errors(store, df, features, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(")):
        store.get_historical_features(df, features).to_arrow()


def test_int32_keys_join_int64_views(store):
    df = pd.DataFrame({"driver_id": pd.array([1], dtype="int32"), "event_timestamp": [h(1)]})
    assert store.get_historical_features(df, ["hourly:trips"]).to_arrow().column("trips").to_pylist() == [30]


def test_manifest_and_parquet_output(store, tmp_path):
    df = entities([(1, h(1)), (2, h(5))])
    job = store.get_historical_features(df, "svc")
    manifest = job.to_parquet(tmp_path / "out" / "train.parquet")
    assert pq.read_table(tmp_path / "out" / "train.parquet").equals(job.to_arrow())
    on_disk = json.loads((tmp_path / "out" / "train.parquet.manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["registry_version"] == 1 and manifest["row_count"] == 2
    assert manifest["feature_service"] == "svc"
    assert manifest["features"] == ["hourly:conv_rate", "daily:trips", "daily:rating"]
    assert set(manifest["views"]) == {"hourly", "daily"}
    assert all(v["fingerprint"].startswith("files:") for v in manifest["views"].values())


def test_csv_directory_and_glob_sources(tmp_path):
    repo = write_repo(tmp_path, CODE.replace("data/hourly.parquet", "data/hourly_csv")
                      .replace("data/daily.parquet", "data/daily_*.csv"),
                      tables={"pairs": PAIRS})
    (tmp_path / "data" / "hourly_csv").mkdir()
    pq.write_table(HOURLY.slice(0, 3), tmp_path / "data" / "hourly_csv" / "a.parquet")
    pq.write_table(HOURLY.slice(3), tmp_path / "data" / "hourly_csv" / "b.parquet")
    pacsv.write_csv(DAILY.slice(0, 1), tmp_path / "data" / "daily_1.csv")
    pacsv.write_csv(DAILY.slice(1), tmp_path / "data" / "daily_2.csv")
    store = FeatureStore(repo)
    store.apply()
    out = store.get_historical_features(entities([(1, h(1)), (2, h(5))]),
                                        ["hourly:conv_rate", "daily:rating"]).to_arrow()
    assert out.column("conv_rate").to_pylist() == [pytest.approx(0.3), pytest.approx(0.6)]
    assert out.column("rating").to_pylist() == [4.5, 3.5]


def test_empty_entity_frame(store):
    out = store.get_historical_features(entities([]), ["hourly:trips"]).to_arrow()
    assert out.num_rows == 0 and out.column_names[-1] == "trips"
