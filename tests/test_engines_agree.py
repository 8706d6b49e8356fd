"""The same repo gives the same exports on the local and the Spark engine (views with transforms,
filters, aggregations and plain as-of joins), switched by one line of featurestore.yaml."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from featurestore import FeatureStore
from featurestore.config import load_config
from tests.repo_helpers import write_repo
from tests.test_aggregation_views import CODE, FEATURES, _same, _table, _txns

pytestmark = pytest.mark.slow
UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
SPARK = {"type": "spark", "master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2"}}


def _stores(tmp_path, rows) -> tuple[FeatureStore, FeatureStore]:
    """The same repo opened with the local engine (applied) and with the Spark engine."""
    repo = write_repo(tmp_path, CODE, tables={"txns": _table(rows)})
    local = FeatureStore(repo)
    local.apply()
    return local, FeatureStore(repo, config=load_config(repo).model_copy(update={"engine": SPARK}))


@pytest.mark.parametrize("rows_per_key", ["few", "many"])  # the grouped plan and the window plan
def test_local_and_spark_exports_are_equal(tmp_path, rows_per_key):
    now = datetime(2025, 6, 1, tzinfo=UTC)
    local, spark = _stores(tmp_path, _txns(now, 120, seed=4))
    rng = np.random.default_rng(9)
    users = [int(u) for u in rng.integers(0, 125, 300)]
    times = [now - timedelta(minutes=int(m)) for m in rng.integers(-300, 12 * 24 * 60, 300)]
    if rows_per_key == "many":
        users = [u % 10 for u in users]
    entity = pa.table({"user_id": pa.array(users, pa.int64()), "event_timestamp": pa.array(times, TS)})
    refs = [f"user_txn:{f}" for f in FEATURES]
    a = local.get_historical_features(entity, refs).to_arrow()
    b = spark.get_historical_features(entity, refs).to_arrow()
    assert a.column_names == b.column_names and a.num_rows == b.num_rows == 300
    for f in FEATURES:
        assert all(_same(x, y) for x, y in zip(a.column(f).to_pylist(), b.column(f).to_pylist())), f


def test_spark_writes_the_export_itself(tmp_path):
    import pyarrow.parquet as pq

    now = datetime(2025, 6, 1, tzinfo=UTC)
    local, spark = _stores(tmp_path, _txns(now, 60, seed=8))
    rng = np.random.default_rng(2)
    n = 200
    entity = pa.table({"user_id": pa.array([int(u) for u in rng.integers(0, 70, n)], pa.int64()),
                       "event_timestamp": pa.array([now - timedelta(minutes=int(m))
                                                    for m in rng.integers(0, 9 * 24 * 60, n)], TS)})
    pq.write_table(entity, tmp_path / "entities.parquet")
    refs = [f"user_txn:{f}" for f in FEATURES]
    manifest = spark.get_historical_features(str(tmp_path / "entities.parquet"), refs).to_parquet(
        tmp_path / "train")
    assert manifest["row_count"] == n and (tmp_path / "train").is_dir()
    written = pq.read_table(tmp_path / "train")
    expected = local.get_historical_features(entity, refs).to_arrow()
    assert written.column("user_id").to_pylist() == expected.column("user_id").to_pylist()  # input order
    for f in FEATURES:
        assert all(_same(x, y) for x, y in zip(written.column(f).to_pylist(), expected.column(f).to_pylist())), f


def test_spark_materialization_matches_local(tmp_path):
    """Offline rows and online lookups (sliding windows included) are the same whichever engine
    materialized them; on Spark the executors wrote both stores."""
    now = datetime.now(UTC).replace(microsecond=0)
    rows = _txns(now, 80, seed=6)
    results = {}
    for engine in ("local", "spark"):
        local, spark = _stores(tmp_path / engine, rows)
        store = spark if engine == "spark" else local
        outcome = store.materialize(now - timedelta(days=40), now, progress=False)
        offline = store.offline_store.read("user_txn")
        online = store.get_online_features([f"user_txn:{f}" for f in FEATURES], {"user_id": list(range(85))})
        results[engine] = (outcome.rows, offline.sort_by([("user_id", "ascending"), ("event_timestamp", "ascending"),
                                                          ("amount", "ascending")]), online.to_dict())
    (rows_l, off_l, on_l), (rows_s, off_s, on_s) = results["local"], results["spark"]
    assert rows_l == rows_s > 0
    assert off_l.select(off_s.column_names).equals(off_s)
    for f in FEATURES:
        assert all(_same(a, b) for a, b in zip(on_l[f], on_s[f])), f
