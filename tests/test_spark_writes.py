"""Writes done by Spark executors: offline interval replaces committed by delta-spark, and online
upserts from the tasks. The Spark tests are marked slow and share one session."""

from __future__ import annotations

import os
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from connectors.offline_delta import DeltaOfflineStore, DeltaOfflineStoreConfig
from featurestore.errors import FeatureViewNotFound, InvalidInputError

UTC = timezone.utc
T0 = datetime(2024, 5, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
EV, CR = "event_timestamp", "created_timestamp"


def H(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def rows(hours: list[float], base_id: int = 0, value: float = 0.0) -> pa.Table:
    return pa.table({
        "driver_id": pa.array([base_id + i for i in range(len(hours))], pa.int64()),
        EV: pa.array([H(h) for h in hours], TS),
        "trips": pa.array([value + h for h in hours], pa.float64()),
    })


def as_set(table: pa.Table) -> set[tuple]:
    return {tuple(r.values()) for r in table.to_pylist()}


def make_store(root: Path, project: str = "proj") -> DeltaOfflineStore:
    return DeltaOfflineStore(DeltaOfflineStoreConfig(path=str(root)), root, project)


def disk_files(store: DeltaOfflineStore, view: str) -> set[str]:
    """The view's data files on disk (committed to some version or not; the log's files aside)."""
    return {str(p) for p in Path(store.root, view).glob("*.parquet")}


def test_frame_schema_matches_local_engine_types() -> None:
    from featurestore.engines.spark_writes import frame_schema

    schema = frame_schema([("driver_id", pa.int32())], [("src", "trips", pa.float32())])
    assert schema.names == ["driver_id", "trips", EV, CR]
    assert [schema.field(n).type for n in schema.names] == [pa.int32(), pa.float32(), TS, TS]


# -- Spark ----------------------------------------------------------------------------------------------
DAYS = 5
PER_DAY = 700


def history(seed: int = 0, shift_hours: float = 0.0, value_offset: float = 0.0) -> pa.Table:
    """PER_DAY rows a day over DAYS days; 50 drivers, so each has many rows."""
    n = DAYS * PER_DAY
    step = DAYS * 24 * 3600 * 1_000_000 // n
    micros = [int((T0.timestamp() + shift_hours * 3600) * 1_000_000) + i * step + (i * 7919 + seed) % 1000
              for i in range(n)]
    return pa.table({
        "driver_id": pa.array([(i * 31 + seed) % 50 for i in range(n)], pa.int64()),
        "trips": pa.array([float(i) + value_offset for i in range(n)], pa.float64()),
        "name": pa.array([f"d{i % 13}" for i in range(n)], pa.string()),
        EV: pa.array(micros, TS),
        CR: pa.array([m + 5 for m in micros], TS),
    })


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from featurestore.engines.spark import SparkEngineConfig, spark_session

    return spark_session(SparkEngineConfig(master="local[2]", conf={"spark.sql.shuffle.partitions": "2"}))


def frame(spark, table: pa.Table, partitions: int = 3):
    # createDataFrame ships the test data from the driver; the writes under test run on the executors.
    return spark.createDataFrame(table).repartition(partitions)


@pytest.mark.slow
def test_write_offline_round_trip_rerun_and_partial_interval(spark, tmp_path: Path) -> None:
    from featurestore.engines.spark_writes import write_offline

    section = {"type": "parquet", "path": "offline"}
    store = DeltaOfflineStore(DeltaOfflineStoreConfig(path="offline"), tmp_path, "proj")
    data = history()
    start, end = T0, T0 + timedelta(days=DAYS)
    assert write_offline(frame(spark, data), section, tmp_path, "proj", "trips", start, end) == data.num_rows
    got = store.read("trips")
    assert got.num_rows == data.num_rows and as_set(got) == as_set(data)
    assert got.schema.field(EV).type == TS and got.schema.field("name").type == pa.string()
    assert store.files("trips") and all(Path(f).exists() for f in store.files("trips"))

    # a rerun replaces rather than duplicates
    assert write_offline(frame(spark, data, 2), section, tmp_path, "proj", "trips", start, end) == data.num_rows
    assert as_set(store.read("trips")) == as_set(data)

    # a partial interval (mid-day to mid-day) replaces the rows inside and keeps those outside
    lo, hi = H(36), H(84)
    newer = history(seed=3, value_offset=0.25)
    ts = newer.column(EV)
    inside = pc.and_(pc.greater_equal(ts, pa.scalar(lo, TS)), pc.less(ts, pa.scalar(hi, TS)))
    newer = newer.filter(inside)
    assert write_offline(frame(spark, newer), store.config, tmp_path, "proj", "trips", lo, hi) == newer.num_rows
    old_ts = data.column(EV)
    kept = data.filter(pc.invert(pc.and_(pc.greater_equal(old_ts, pa.scalar(lo, TS)),
                                         pc.less(old_ts, pa.scalar(hi, TS)))))
    assert as_set(store.read("trips")) == as_set(kept) | as_set(newer)


@pytest.mark.slow
def test_write_offline_errors_empty_and_uncommitted(spark, tmp_path: Path) -> None:
    from pyspark.sql import functions as F

    from featurestore.engines.spark_writes import write_offline

    section = {"path": str(tmp_path / "off")}
    store = DeltaOfflineStore(DeltaOfflineStoreConfig(**section), tmp_path, "proj")
    data = history()
    first_day = (T0, T0 + timedelta(days=1))
    # rows outside the interval: an InvalidInputError on the driver and no commit; the files the tasks
    # wrote before the check stopped them are listed by no commit, and vacuum removes them
    with pytest.raises(InvalidInputError, match="outside the interval"):
        write_offline(frame(spark, data), section, tmp_path, "proj", "trips", *first_day)
    assert store.views() == []
    with pytest.raises(FeatureViewNotFound):
        store.read("trips")
    store.vacuum(grace=timedelta(0))
    assert disk_files(store, "trips") == set()

    # a null event time is refused the same way
    nulls = frame(spark, data.slice(0, 10)).withColumn(EV, F.lit(None).cast("timestamp"))
    with pytest.raises(InvalidInputError, match="or null"):
        write_offline(nulls, section, tmp_path, "proj", "trips", *first_day)

    # an empty DataFrame on a new view still fixes the schema
    empty = frame(spark, data).where("driver_id < 0")
    assert write_offline(empty, section, tmp_path, "proj", "empty", *first_day) == 0
    assert store.read("empty").num_rows == 0
    assert store.schema("empty").names == data.column_names

    # on a view with rows, the stored schema is the contract: a missing column is named
    store.write("trips", data.slice(0, 5), *first_day, EV)
    with pytest.raises(InvalidInputError, match=r"missing \['name'\]"):
        write_offline(frame(spark, data).drop("name"), section, tmp_path, "proj", "trips", *first_day)
    with pytest.raises(InvalidInputError, match="start < end"):
        write_offline(frame(spark, data), section, tmp_path, "proj", "trips", T0, T0)
    assert store.read("trips").num_rows == 5


@pytest.mark.slow
def test_write_offline_casts_to_stored_schema(spark, tmp_path: Path) -> None:
    """Spark carries an int32 key as whatever the DataFrame says; the stored schema wins."""
    from featurestore.engines.spark_writes import write_offline

    store = make_store(tmp_path / "off")
    data = history()
    store.write("trips", data.slice(0, 0).cast(data.schema.set(0, pa.field("driver_id", pa.int32()))),
                T0, H(1), EV)
    assert write_offline(frame(spark, data), store.config, tmp_path, "proj", "trips", T0,
                         T0 + timedelta(days=DAYS)) == data.num_rows
    got = store.read("trips")
    assert got.schema.field("driver_id").type == pa.int32()
    assert sorted(got.column("driver_id").to_pylist()) == sorted(data.column("driver_id").to_pylist())


def latest_per_key(table: pa.Table) -> dict[int, tuple]:
    best: dict[int, tuple] = {}
    for r in table.to_pylist():
        stamp = (r[EV], r[CR])
        if r["driver_id"] not in best or stamp > best[r["driver_id"]][0]:
            best[r["driver_id"]] = (stamp, r["trips"], r["name"])
    return best


def check_online(spark, section: dict, repo: Path, project: str) -> None:
    from featurestore.config import backend_config
    from featurestore.engines.spark_writes import write_online

    data = history()
    view, ttl = "trips", timedelta(days=3650)
    result = write_online(frame(spark, data, 4), section, repo, project, view, ["driver_id"], ttl)
    # every key's newest row is stored; what else got stored depends on the order tasks ran in
    assert 50 <= result.written <= data.num_rows and result.written + result.skipped_stale == data.num_rows
    cls, config = backend_config("online_store", section)
    with cls(config, repo, project) as store:
        want = latest_per_key(data)
        keys = sorted(want)
        got = store.read(view, ["driver_id"], [(k,) for k in keys], ["trips", "name"],
                         {"trips": pa.float64(), "name": pa.string()})
        assert got.values["trips"] == [want[k][1] for k in keys]
        assert got.values["name"] == [want[k][2] for k in keys]
        assert got.event_timestamps == [want[k][0][0] for k in keys]

        # an older rerun (every event a day earlier, other values) changes nothing
        older = history(shift_hours=-24, value_offset=1e6)
        again = write_online(frame(spark, older, 3), section, repo, project, view, ["driver_id"], ttl)
        assert again.written == 0 and again.skipped_stale == older.num_rows
        same = write_online(frame(spark, data, 2), section, repo, project, view, ["driver_id"], ttl)
        assert same.written == 0
        after = store.read(view, ["driver_id"], [(k,) for k in keys], ["trips", "name"],
                           {"trips": pa.float64(), "name": pa.string()})
        assert after.values == got.values and after.event_timestamps == got.event_timestamps
        store.delete_view(view)


@pytest.mark.slow
def test_write_online_sqlite(spark, tmp_path: Path) -> None:
    check_online(spark, {"type": "sqlite", "path": "data/online.db"}, tmp_path, "proj")
    assert (tmp_path / "data" / "online.db").is_file()


@pytest.mark.slow
@pytest.mark.redis
def test_write_online_redis(spark, tmp_path: Path, redis_url: str) -> None:
    check_online(spark, {"type": "redis", "url": redis_url, "key_prefix": f"t{uuid.uuid4().hex[:8]}"},
                 tmp_path, "proj")


@pytest.mark.slow
def test_write_online_bad_section_fails_on_the_driver(spark, tmp_path: Path) -> None:
    from featurestore.engines.spark_writes import write_online
    from featurestore.errors import ConfigError

    with pytest.raises(ConfigError):
        write_online(frame(spark, history()), {"type": "sqlite", "bogus": 1}, tmp_path, "proj", "trips",
                     ["driver_id"], None)
    with pytest.raises(InvalidInputError, match="driver_key"):
        write_online(frame(spark, history()), {"type": "sqlite"}, tmp_path, "proj", "trips", ["driver_key"], None)
