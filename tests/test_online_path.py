"""The online path end to end: materialize into SQLite and Redis, look up with statuses, and see the
same values a training export gives at the same time."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from featurestore import FeatureStore
from featurestore.errors import FeatureNotFound, FeatureViewNotFound, InvalidInputError
from featurestore.online_read import NOT_FOUND, NULL_VALUE, OUTSIDE_MAX_AGE, PRESENT
from tests.repo_helpers import write_repo

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from featurestore.types import Float32, Float64, Int64, String
driver = Entity(name="driver", join_keys=["driver_id"])
# Materialized from its batch source and pushed to (only views fed by a push source take pushes).
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=30),
    source=PushSource(name="stats_push", batch_source=FileSource(name="src", path="data/stats.parquet",
                      timestamp_field="ts", created_timestamp_field="created")),
    schema=[Field(name="rate", dtype=Float32), Field(name="trips", dtype=Int64),
            Field(name="label", dtype=String), Field(name="score", dtype=Float64)])
short = FeatureView(name="short", entities=[driver], ttl=timedelta(hours=1),
    source=FileSource(name="short_src", path="data/short.parquet", timestamp_field="ts"),
    schema=[Field(name="hits", dtype=Int64)])
svc = FeatureService(name="svc", features=[stats[["rate", "trips"]], short])
"""


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("redis_cluster", marks=pytest.mark.redis_cluster)])
def online_store_yaml(request):
    if request.param == "sqlite":
        return "{type: sqlite, path: data/online.db}"
    if request.param == "redis_cluster":
        url = request.getfixturevalue("redis_cluster_url")
        return f"{{type: redis, url: '{url}', key_prefix: 't{uuid.uuid4().hex[:10]}', cluster: true}}"
    url = request.getfixturevalue("redis_url")
    return f"{{type: redis, url: '{url}', key_prefix: 't{uuid.uuid4().hex[:10]}'}}"


def _stats(now: datetime, n: int, seed: int = 3) -> pa.Table:
    """n drivers with a few events each over the last 3 days; every 10th driver only 40 days ago."""
    rng = np.random.default_rng(seed)
    ids, ts, created, rate, trips, label, score = [], [], [], [], [], [], []
    for d in range(n):
        for _ in range(int(rng.integers(1, 4))):
            age = timedelta(days=40) if d % 10 == 0 else timedelta(seconds=int(rng.integers(600, 3 * 86400)))
            t = now - age
            ids.append(d)
            ts.append(t)
            created.append(t + timedelta(seconds=int(rng.integers(0, 5))))
            rate.append(float(np.float32(rng.random())))
            trips.append(int(rng.integers(0, 1000)))
            label.append(None if rng.random() < 0.1 else f"l{int(rng.integers(0, 9))}")
            score.append(float(rng.normal()))
    return pa.table({"driver_id": pa.array(ids, pa.int64()), "ts": pa.array(ts, TS),
                     "created": pa.array(created, TS), "rate": pa.array(rate, pa.float32()),
                     "trips": pa.array(trips, pa.int64()), "label": pa.array(label, pa.string()),
                     "score": pa.array(score, pa.float64())})


def _short(now: datetime) -> pa.Table:
    return pa.table({"driver_id": pa.array([1, 2], pa.int64()),
                     "ts": pa.array([now - timedelta(minutes=10), now - timedelta(minutes=90)], TS),
                     "hits": pa.array([5, 7], pa.int64())})


@pytest.fixture
def store(tmp_path, online_store_yaml):
    now = datetime.now(UTC).replace(microsecond=0)
    s = FeatureStore(write_repo(tmp_path, CODE, online_store=online_store_yaml,
                                tables={"stats": _stats(now, 2000), "short": _short(now)}))
    s.apply()
    s.materialize(now - timedelta(days=60), now, progress=False)
    yield s, now
    s.online_store.delete_view("stats")
    s.online_store.delete_view("short")
    s.close()


def test_online_equals_export_at_materialization_time(store):
    s, now = store
    ids = list(range(2000)) + [5000]
    online = s.get_online_features(["stats:rate", "stats:trips", "stats:label", "stats:score"],
                                   [{"driver_id": i} for i in ids])
    entity = pa.table({"driver_id": pa.array(ids, pa.int64()),
                       "event_timestamp": pa.array([now - timedelta(microseconds=1)] * len(ids), TS)})
    offline = s.get_historical_features(entity, ["stats:rate", "stats:trips", "stats:label", "stats:score"]
                                        ).to_arrow()
    for feature in ("rate", "trips", "label", "score"):
        assert online.to_dict()[feature] == offline.column(feature).to_pylist(), feature
    statuses = online.statuses["trips"]
    assert statuses[-1] == NOT_FOUND
    assert all(st != PRESENT for i, st in enumerate(statuses[:-1]) if i % 10 == 0)
    assert statuses.count(PRESENT) == 1800
    labels = online.statuses["label"]
    assert NULL_VALUE in labels  # a fresh row whose value is null


def test_ttl_at_read_time(store):
    s, _ = store
    resp = s.get_online_features("svc", {"driver_id": [1, 2, 3]})
    assert resp.feature_names == ["driver_id", "rate", "trips", "hits"]
    assert resp.values["hits"] == [5, None, None]
    assert resp.statuses["hits"][0] == PRESENT
    # driver 2's hit is 90 minutes old against a 1 hour TTL: expired, never served as fresh (Redis
    # keeps the key for a grace hour past the TTL, so both stores can tell "expired" from "missing")
    assert resp.statuses["hits"][1] == OUTSIDE_MAX_AGE
    assert resp.statuses["hits"][2] == NOT_FOUND


def test_rerun_changes_nothing_and_older_push_does_not_overwrite(store):
    s, now = store
    before = s.get_online_features(["stats:trips"], {"driver_id": list(range(50))}).to_dict()
    again = s.materialize(now - timedelta(days=60), now, ["stats"], progress=False)
    assert again.views[0].online_written == 0  # every row is equal to what is stored: skipped
    assert s.get_online_features(["stats:trips"], {"driver_id": list(range(50))}).to_dict() == before
    s.push("stats", {"driver_id": [1], "ts": [now - timedelta(days=20)], "trips": [-1]}, to="online")
    assert s.get_online_features(["stats:trips"], {"driver_id": [1]}).to_dict()["trips"] == before["trips"][1:2]
    s.push("stats", {"driver_id": [1], "ts": [now], "trips": [-1]}, to="online")
    assert s.get_online_features(["stats:trips"], {"driver_id": [1]}).to_dict()["trips"] == [-1]


def test_lookup_errors_name_the_problem(store):
    s, _ = store
    with pytest.raises(FeatureViewNotFound, match="'nope'"):
        s.get_online_features(["nope:x"], {"driver_id": [1]})
    with pytest.raises(FeatureNotFound, match="'nope'"):
        s.get_online_features(["stats:nope"], {"driver_id": [1]})
    with pytest.raises(InvalidInputError, match="missing join key 'driver_id'"):
        s.get_online_features(["stats:trips"], {"rider": [1]})
    with pytest.raises(InvalidInputError, match="join key 'driver_id' should be Int64"):
        s.get_online_features(["stats:trips"], {"driver_id": ["x"]})
    with pytest.raises(InvalidInputError, match="unknown columns \\['bogus'\\]"):
        s.push("stats", {"driver_id": [1], "ts": [datetime.now(UTC)], "bogus": [1]})
    with pytest.raises(InvalidInputError, match="column 'trips' should be Int64"):
        s.push("stats", {"driver_id": [1], "ts": [datetime.now(UTC)], "trips": ["many"]})
