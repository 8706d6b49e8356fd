"""Any engine reads what we write, and the Spark engine writes through delta-spark.

- A view materialized by the local engine (intervals replaced, the table compacted, so the directory
  holds files no current version lists) reads the same through Spark's Delta reader, through DuckDB
  over the files the store lists, and through the store itself.
- Spark's materialization lands in one Delta commit per interval, records coverage, and gives the
  same rows as the local engine's.
- A Spark replace racing the store's own (delta-rs) replaces never loses a commit; stream progress
  in commit metadata survives Spark commits; millisecond-truncated time statistics (as delta-spark
  writes them) do not hide rows from the store's replaces or file pruning.
"""

from __future__ import annotations

import os
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.offline_delta import DeltaOfflineStore, DeltaOfflineStoreConfig
from featurestore import FeatureStore, coverage
from featurestore.config import load_config
from featurestore.errors import ConflictError
from featurestore.ports.offline_store import REPLACE_TXN
from tests.repo_helpers import write_repo

pytestmark = pytest.mark.slow
UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
EV = "event_timestamp"
NOW = datetime(2025, 3, 1, tzinfo=UTC)
SPARK = {"type": "spark", "master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2"}}

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource
from featurestore.types import Bool, Float32, Float64, Int32, Int64, String, Timestamp
driver = Entity(name="driver", join_keys=["driver_id"])
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=3650),
    source=FileSource(name="src", path="data/stats.parquet", timestamp_field="ts",
                      created_timestamp_field="created"),
    schema=[Field(name="trips", dtype=Int64), Field(name="rate", dtype=Float32),
            Field(name="score", dtype=Float64), Field(name="city", dtype=String),
            Field(name="active", dtype=Bool), Field(name="since", dtype=Timestamp),
            Field(name="shift", dtype=Int32)])
"""


def source(version: int, days: int = 20, per_day: int = 24) -> pa.Table:
    """Hourly rows over ``days`` days up to NOW, with sub-millisecond times and values that depend on
    ``version`` (so a replaced interval shows); ``since`` reaches year 1 and year 9999."""
    n = days * per_day
    ts = [NOW - timedelta(days=days) + timedelta(hours=24 * i / per_day, microseconds=(i * 337) % 997)
          for i in range(n)]
    since = [datetime(1, 1, 1, tzinfo=UTC) if i % 7 == 0 else datetime(9999, 12, 31, 23, 59, 59, 999999, UTC)
             if i % 11 == 0 else t - timedelta(days=400) for i, t in enumerate(ts)]
    return pa.table({
        "driver_id": pa.array([i % 9 for i in range(n)], pa.int32()),
        "ts": pa.array(ts, TS),
        "created": pa.array([t + timedelta(microseconds=3) if i % 5 else None for i, t in enumerate(ts)], TS),
        "trips": pa.array([i * 10 + version for i in range(n)], pa.int64()),
        "rate": pa.array([(i % 13) / 4 + version for i in range(n)], pa.float32()),
        "score": pa.array([None if i % 6 == 0 else i / 3 + version for i in range(n)], pa.float64()),
        "city": pa.array([None if i % 8 == 0 else f"c{(i + version) % 5}" for i in range(n)], pa.string()),
        "active": pa.array([(i + version) % 3 == 0 for i in range(n)], pa.bool_()),
        "since": pa.array(since, TS),
        "shift": pa.array([(i * 7 + version) % 100 - 50 for i in range(n)], pa.int32()),
    })


def repo(path: Path, version: int = 1) -> Path:
    return write_repo(path, CODE, tables={"stats": source(version)})


def replace_source(repo_path: Path, version: int) -> None:
    pq.write_table(source(version), repo_path / "data" / "stats.parquet")


def rows(table: pa.Table) -> list[tuple]:
    """All columns of every row, sorted (None sorts first)."""
    names = sorted(table.column_names)
    return sorted((tuple(r[n] for n in names) for r in table.to_pylist()),
                  key=lambda r: tuple((v is not None, v) for v in r))


def assert_same(got: pa.Table, want: pa.Table) -> None:
    assert sorted(got.column_names) == sorted(want.column_names)
    for name in want.column_names:
        assert got.schema.field(name).type == want.schema.field(name).type, name
    assert got.num_rows == want.num_rows
    assert rows(got) == rows(want)


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from featurestore.engines.spark import SparkEngineConfig, spark_session

    return spark_session(SparkEngineConfig(master=SPARK["master"], conf=SPARK["conf"]))


def spark_read(spark, uri: str) -> pa.Table:
    return spark.read.format("delta").load(uri).toArrow()


def duckdb_read(files: list[str]) -> pa.Table:
    import duckdb

    from featurestore.engines.local import fetch_arrow

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return fetch_arrow(con, "SELECT * FROM read_parquet($files)", {"files": files})


def test_spark_and_duckdb_read_what_the_local_engine_wrote(spark, tmp_path: Path) -> None:
    path = repo(tmp_path)
    store = FeatureStore(path)
    store.apply()
    offline = store.offline_store
    store.materialize(NOW - timedelta(days=30), NOW, progress=False)
    replace_source(path, 2)  # other values: the replaced interval shows which write won
    store.materialize(NOW - timedelta(days=12, hours=5), NOW - timedelta(days=6, minutes=7), progress=False)
    assert offline.compact("stats", max_small_files=1) > 1
    replace_source(path, 3)  # cuts across the compacted file: its rows outside stay, rewritten
    store.materialize(NOW - timedelta(days=9, seconds=1), NOW - timedelta(days=2), progress=False)

    want = offline.read("stats")
    live = offline.files("stats")
    on_disk = sorted(str(p) for p in Path(offline.table_uri("stats")).glob("*.parquet"))
    assert len(on_disk) > len(live)  # a reader of every file in the folder would see removed rows
    assert duckdb_read(on_disk).num_rows > want.num_rows
    # the store's own read, against a model of the three writes
    intervals = [(3, NOW - timedelta(days=9, seconds=1), NOW - timedelta(days=2)),
                 (2, NOW - timedelta(days=12, hours=5), NOW - timedelta(days=6, minutes=7)),
                 (1, NOW - timedelta(days=30), NOW)]
    model = set()
    for i, t in enumerate(source(1).column("ts").to_pylist()):
        version = next(v for v, a, b in intervals if a <= t < b)
        model.add((i % 9, t, i * 10 + version))
    assert {(r["driver_id"], r[EV], r["trips"]) for r in want.to_pylist()} == model

    assert_same(spark_read(spark, offline.table_uri("stats")), want)
    assert_same(duckdb_read(live), want)
    assert_same(duckdb_read(live), offline.read("stats", version=offline.version("stats")))


def test_spark_materialization_is_one_commit_with_the_local_engines_rows(spark, tmp_path: Path) -> None:
    tables = {}
    for engine in ("local", "spark"):
        path = repo(tmp_path / engine)
        local = FeatureStore(path)
        local.apply()
        store = local if engine == "local" else FeatureStore(
            path, config=load_config(path).model_copy(update={"engine": SPARK}))
        offline = store.offline_store
        store.materialize(NOW - timedelta(days=30), NOW, progress=False)
        replace_source(path, 2)
        before = offline.version("stats")
        start, end = NOW - timedelta(days=12, hours=5), NOW - timedelta(days=6, minutes=7)
        store.materialize(start, end, progress=False)
        if engine == "spark":
            assert offline.version("stats") == before + 1  # one commit replaced the interval
            assert coverage.intervals(store, "stats") == [(NOW - timedelta(days=30), NOW)]
            delta = offline._table("stats")
            assert delta.transaction_version(REPLACE_TXN) == before + 1
            last = delta.history(1)[0]
            assert last["operation"] == "WRITE" and EV in last["operationParameters"]["predicate"]
        tables[engine] = offline.read("stats")
        assert_same(spark_read(spark, offline.table_uri("stats")), tables[engine])
    assert_same(tables["spark"], tables["local"])


def test_concurrent_spark_and_store_replaces_lose_no_commit(spark, tmp_path: Path) -> None:
    """A Spark replace and delta-rs replaces of one interval race: each call either commits or raises
    ConflictError, every success is a commit in the log, and the interval holds exactly one writer's
    rows (both committing against one snapshot would leave the union)."""
    from featurestore.engines.spark_writes import write_offline

    store = DeltaOfflineStore(DeltaOfflineStoreConfig(path="off"), tmp_path, "proj")
    start, end = NOW - timedelta(days=2), NOW
    n = 200

    def batch(writer: int) -> pa.Table:
        return pa.table({"driver_id": pa.array(range(n), pa.int64()),
                         EV: pa.array([start + timedelta(minutes=7 * i) for i in range(n)], TS),
                         "writer": pa.array([writer] * n, pa.int64())})

    store.write("v", batch(0), start, end, EV)
    first = store.version("v")
    done = {"spark": 0, "rs": 0, "conflicts": 0}
    stop = threading.Event()
    errors: list[BaseException] = []

    def store_writer() -> None:
        own = DeltaOfflineStore(DeltaOfflineStoreConfig(path="off"), tmp_path, "proj")
        k = 1
        while not stop.wait(0.2 * (k % 5)):  # bursts and pauses, so either side can win a round
            try:
                own.write("v", batch(2 * k + 1), start, end, EV)
                done["rs"] += 1
            except ConflictError:
                done["conflicts"] += 1
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            k += 1

    def spark_replace(k: int) -> None:
        frame = spark.createDataFrame(batch(2 * k)).repartition(2)
        assert write_offline(frame, store.config, tmp_path, "proj", "v", start, end) == n
        done["spark"] += 1

    thread = threading.Thread(target=store_writer)
    thread.start()
    try:
        for k in range(1, 4):
            try:
                spark_replace(k)
            except ConflictError:  # a writer that commits this often can starve Spark's longer write
                done["conflicts"] += 1
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    spark_replace(10)  # on a quiet table it commits
    assert done["rs"] >= 1, done
    assert store.version("v") - first == done["spark"] + done["rs"]
    got = store.read("v")
    assert got.num_rows == n and len(set(got.column("writer").to_pylist())) == 1
    assert_same(spark_read(spark, store.table_uri("v")), got)


def test_a_skipped_spark_write_is_a_conflict_not_a_success(spark, tmp_path: Path) -> None:
    """delta-spark skips a write whose replace claim is not above the recorded one; that must not
    pass for a committed replace."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    from featurestore.engines.spark_writes import write_offline

    store = DeltaOfflineStore(DeltaOfflineStoreConfig(path="off"), tmp_path, "proj")
    start, end = NOW - timedelta(days=1), NOW
    old = pa.table({"driver_id": pa.array([1], pa.int64()), EV: pa.array([start], TS)})
    store.write("v", old, start, end, EV)
    claim = Transaction(REPLACE_TXN, store.version("v") + 50)  # above anything the rule would claim
    write_deltalake(store.table_uri("v"), old.slice(0, 0), mode="append",
                    commit_properties=CommitProperties(app_transactions=[claim]))
    version = store.version("v")
    new = pa.table({"driver_id": pa.array([2], pa.int64()), EV: pa.array([start + timedelta(hours=1)], TS)})
    with pytest.raises(ConflictError, match="concurrent commits won"):
        write_offline(spark.createDataFrame(new), store.config, tmp_path, "proj", "v", start, end)
    assert store.version("v") == version and store.read("v").column("driver_id").to_pylist() == [1]


def test_stream_progress_survives_spark_commits(spark, tmp_path: Path) -> None:
    from featurestore.engines.spark_writes import write_offline

    config = DeltaOfflineStoreConfig(path="off")
    store = DeltaOfflineStore(config, tmp_path, "proj")
    start = NOW - timedelta(days=1)
    table = pa.table({"driver_id": pa.array([1, 2], pa.int64()),
                      EV: pa.array([start, start + timedelta(hours=1)], TS)})
    progress = {"max_event_us": {"0": 7}, "watermark_delay_us": 0}
    store.append("v", table, EV, stream="kafka:t", offsets={0: (0, 4)}, progress=progress)
    for _ in range(2):
        write_offline(spark.createDataFrame(table), config, tmp_path, "proj", "v", start, NOW)
    fresh = DeltaOfflineStore(config, tmp_path, "proj")  # another process: reads the log
    assert fresh.stream_progress("v", "kafka:t") == ({0: 4}, progress)
    assert fresh.streams("v") == {"kafka:t": progress}


def test_millisecond_time_stats_do_not_hide_rows(spark, tmp_path: Path) -> None:
    """delta-spark keeps time statistics to the millisecond (a file holding 00:00:00.001500 says its
    maximum is 00:00:00.001); the store's replaces and file pruning must still see that row."""
    from featurestore.engines.spark_writes import write_offline

    store = DeltaOfflineStore(DeltaOfflineStoreConfig(path="off"), tmp_path, "proj")
    t0 = NOW - timedelta(days=1)
    times = [t0 + timedelta(microseconds=400), t0 + timedelta(microseconds=1500)]
    table = pa.table({"driver_id": pa.array([1, 2], pa.int64()), EV: pa.array(times, TS)})
    write_offline(spark.createDataFrame(table).coalesce(1), store.config, tmp_path, "proj", "v", t0, NOW)
    cut = t0 + timedelta(microseconds=1200)
    assert store.files("v", cut, NOW) == store.files("v")
    assert store.read("v", cut, NOW).column("driver_id").to_pylist() == [2]
    store.write("v", table.slice(0, 0), cut, NOW, EV)  # deletes the row at 1.5 ms only
    assert store.read("v").column(EV).to_pylist() == times[:1]
    assert_same(spark_read(spark, store.table_uri("v")), store.read("v"))
