"""Materialization: chunked copy into the offline store, idempotent reruns, incremental watermarks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from featurestore import FeatureStore, coverage
from featurestore.coverage import watermark as get_watermark
from featurestore.errors import FeatureViewNotFound, InvalidInputError
from featurestore.materialize import _chunks
from tests.repo_helpers import write_repo

UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource
from featurestore.types import Float64, Int64
driver = Entity(name="driver", join_keys=["driver_id"])
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=1),
    source=FileSource(name="src", path="data/stats.parquet", timestamp_field="ts",
                      field_mapping={"raw_trips": "trips"}),
    schema=[Field(name="trips", dtype=Int64), Field(name="rate", dtype=Float64)])
"""


def _rows(hours: int, drivers: int = 3) -> pa.Table:
    ids, ts, trips, rate = [], [], [], []
    for h in range(hours):
        for d in range(drivers):
            ids.append(d)
            ts.append(T0 + timedelta(hours=h, minutes=d))
            trips.append(h * 10 + d)
            rate.append(h / 7)
    return pa.table({"driver_id": pa.array(ids, pa.int64()), "ts": pa.array(ts, TS),
                     "raw_trips": pa.array(trips, pa.int64()), "rate": pa.array(rate, pa.float64())})


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(write_repo(tmp_path, CODE, tables={"stats": _rows(24 * 4)}))
    s.apply()
    return s


def test_chunks_cover_the_interval_exactly_once():
    start, end = T0 - timedelta(days=3, hours=5), T0 + timedelta(days=6)
    chunks = list(_chunks(T0 + timedelta(hours=7), T0 + timedelta(days=2, hours=3), start, end))
    assert chunks[0][0] == start and chunks[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert all(a < b for a, b in chunks)
    assert len(chunks) <= 5  # one per data day plus the edges, not one per calendar day of the interval


def test_materialize_copies_the_interval_and_reruns_replace(store):
    result = store.materialize(T0 + timedelta(hours=12), T0 + timedelta(days=2, hours=12), online=False)
    assert result.rows == 48 * 3
    table = store.offline_store.read("stats")
    assert table.num_rows == 48 * 3
    assert set(table.column_names) >= {"driver_id", "trips", "rate", "event_timestamp", "created_timestamp"}
    assert pc.min(table.column("event_timestamp")).as_py() == T0 + timedelta(hours=12)
    again = store.materialize(T0 + timedelta(hours=12), T0 + timedelta(days=2, hours=12), online=False)
    assert again.rows == result.rows
    assert store.offline_store.read("stats").sort_by("event_timestamp").equals(table.sort_by("event_timestamp"))
    assert coverage.covers(store, "stats", T0 + timedelta(hours=12), T0 + timedelta(days=2, hours=11))
    assert len(store.offline_store.files("stats")) == 3  # one file per day chunk; the rerun replaced them


def test_materialize_incremental_resumes_from_watermarks(store):
    assert get_watermark(store, "stats") is None
    first = store.materialize_incremental(T0 + timedelta(days=2), online=False)
    # no watermark yet: starts one TTL before the end
    assert first.views[0].start == T0 + timedelta(days=1) and first.rows == 24 * 3
    assert get_watermark(store, "stats") == T0 + timedelta(days=2)
    second = store.materialize_incremental(T0 + timedelta(days=3), online=False)
    assert second.views[0].start == T0 + timedelta(days=2) and second.rows == 24 * 3
    assert store.materialize_incremental(T0 + timedelta(days=3), online=False).views == []
    assert store.offline_store.read("stats").num_rows == 48 * 3


def test_bad_requests(store):
    with pytest.raises(InvalidInputError, match="start < end"):
        store.materialize(T0, T0, online=False)
    with pytest.raises(FeatureViewNotFound, match="'nope'"):
        store.materialize(T0, T0 + timedelta(days=1), ["nope"], online=False)


def test_a_definition_change_that_alters_rows_forgets_the_materialized_coverage(store, tmp_path):
    start, end = T0, T0 + timedelta(days=2)
    store.materialize(start, end, online=False)
    assert coverage.covers(store, "stats", start, end - timedelta(hours=1))
    # a new description changes no row: the materialized rows still answer exports
    (tmp_path / "features.py").write_text(CODE.replace('name="stats",', 'name="stats", description="d",'))
    store.apply()
    assert coverage.covers(store, "stats", start, end - timedelta(hours=1))
    # a filter changes which rows the view holds: exports read the source again until re-materialized
    (tmp_path / "features.py").write_text(CODE.replace('name="stats",', 'name="stats", filter=col("rate") > 1,')
                                          .replace("import Entity,", "import col, Entity,"))
    store.apply()
    assert coverage.intervals(store, "stats") == []
    entity = pa.table({"driver_id": pa.array([0], pa.int64()), "event_timestamp": pa.array([T0 + timedelta(hours=5)], TS)})
    job = store.get_historical_features(entity_df=entity, features=["stats:rate"])
    assert job.to_arrow().column("rate").to_pylist() == [None]  # hour 5: rate 5/7, filtered out
    assert job.manifest["views"]["stats"]["read_from"] == "source"
