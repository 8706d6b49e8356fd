"""Writes done by Spark executors: two-phase offline commits (stage anywhere, commit once) and online
upserts from the tasks.

The stage/commit_staged tests need no Spark; the Spark ones are marked slow and share one session."""

from __future__ import annotations

import json
import os
import subprocess
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


# -- stage / commit_staged, without Spark -------------------------------------------------------------
def test_stage_then_commit_equals_write(tmp_path: Path) -> None:
    """The same sequence of interval writes through write() and through stage()+commit_staged()."""
    a, b = make_store(tmp_path / "a"), make_store(tmp_path / "b")
    steps = [
        ([rows([1, 10, 13, 20, 25, 30, 37, 44, 50])], H(0), H(72)),  # three days
        ([rows([12, 26], 1000, 0.5), rows([30.5], 2000)], H(12), H(36)),  # partial days on both edges
        ([rows([5, 30, 55], 3000)], H(5), H(60)),  # a whole middle day
        ([], H(40), H(41)),  # nothing: deletes rows inside
    ]
    for tables, start, end in steps:
        whole = pa.concat_tables(tables) if tables else rows([])
        a.write("trips", whole, start, end, EV)
        staged = [entry for t in tables for entry in b.stage("trips", t, EV)]
        assert json.loads(json.dumps(staged)) == staged  # JSON-safe
        assert b.commit_staged("trips", staged, start, end, EV) == whole.num_rows
        assert as_set(b.read("trips")) == as_set(a.read("trips"))
        assert b.read("trips").schema.equals(a.read("trips").schema)
        assert set(b.files("trips")) <= disk_files(b, "trips")  # superseded ones stay for older versions


def test_staged_files_are_invisible_until_committed_and_vacuumed_if_never(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    staged = store.stage("trips", rows([1, 30]), EV)
    assert all(Path(store.root, "trips", e["path"]).is_file() for e in staged)
    assert store.views() == [] and store.files("trips") == []
    with pytest.raises(FeatureViewNotFound):
        store.read("trips")
    # on a view with data, staged rows do not show either
    store.write("trips", rows([2], 100), H(0), H(48), EV)
    before = as_set(store.read("trips"))
    store.stage("trips", rows([3, 4]), EV)
    assert as_set(store.read("trips")) == before
    # within the grace period vacuum keeps them (a write may be in flight); after it they go
    assert store.vacuum() == []
    removed = store.vacuum(grace=timedelta(0))
    assert len(removed) == 2  # one file per stage() call, neither committed
    assert disk_files(store, "trips") == {f.removeprefix("file://") for f in store.files("trips")}
    assert as_set(store.read("trips")) == before
    with pytest.raises(InvalidInputError, match="does not exist"):
        store.commit_staged("trips", staged, H(0), H(48), EV)


def test_commit_staged_rejects_rows_outside_and_cleans_up(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.write("trips", rows([1, 2]), H(0), H(24), EV)
    before, version = as_set(store.read("trips")), store.fingerprint("trips")
    staged = store.stage("trips", rows([5, 30], 50), EV)
    with pytest.raises(InvalidInputError, match="outside the interval"):
        store.commit_staged("trips", staged, H(0), H(24), EV)
    assert as_set(store.read("trips")) == before and store.fingerprint("trips") == version
    assert disk_files(store, "trips") == set(store.files("trips"))  # the staged files were removed
    # stage() can check the interval itself, before writing anything
    with pytest.raises(InvalidInputError, match="1 row"):
        store.stage("trips", rows([5, 30], 50), EV, start=H(0), end=H(24))
    assert disk_files(store, "trips") == set(store.files("trips"))


def test_commit_staged_checks_descriptions(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    staged = store.stage("trips", rows([1, 2]), EV)
    assert store.commit_staged("trips", staged, H(0), H(24), EV) == 2
    # committing the same set twice must not lose the (now live) files
    with pytest.raises(InvalidInputError, match="already committed"):
        store.commit_staged("trips", staged, H(0), H(24), EV)
    assert store.read("trips").num_rows == 2
    assert all(Path(p).is_file() for p in store.files("trips"))
    # a path outside the view's data files, a wrong timestamp column, wrong row counts
    with pytest.raises(InvalidInputError, match="not a staged data file path"):
        store.commit_staged("trips", [{**staged[0], "path": "../../etc/passwd"}], H(0), H(24), EV)
    fresh = store.stage("trips", rows([3]), EV)
    with pytest.raises(InvalidInputError, match="timestamp column"):
        store.commit_staged("trips", fresh, H(0), H(24), "other_ts")
    fresh = store.stage("trips", rows([3]), EV)
    with pytest.raises(InvalidInputError, match="has 1 rows"):
        store.commit_staged("trips", [{**fresh[0], "rows": 7}], H(0), H(24), EV)
    assert store.read("trips").num_rows == 2
    # a table that does not fit the stored schema fails at stage time, on the executor
    with pytest.raises(InvalidInputError, match="trips"):
        store.stage("trips", rows([3]).drop_columns(["trips"]), EV)
    with pytest.raises(InvalidInputError, match="start < end"):
        store.commit_staged("trips", [], H(1), H(1), EV)


def test_commit_nothing_staged(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    with pytest.raises(InvalidInputError, match="schema="):
        store.commit_staged("trips", [], H(0), H(24), EV)
    assert store.commit_staged("trips", [], H(0), H(24), EV, schema=rows([]).schema) == 0
    assert store.read("trips").schema.names == ["driver_id", EV, "trips"] and store.read("trips").num_rows == 0
    store.write("trips", rows([30, 40]), H(24), H(48), EV)
    assert store.commit_staged("trips", [], H(30), H(35), EV) == 0  # deletes the row at 30 h
    assert sorted(store.read("trips").column("trips").to_pylist()) == [40.0]


def test_stage_from_another_process(tmp_path: Path) -> None:
    """stage() needs only the config, the repo path and the project: here a separate interpreter."""
    store = make_store(tmp_path)
    code = (
        "import json, sys, pyarrow as pa\n"
        "from datetime import datetime, timezone\n"
        "from pathlib import Path\n"
        "from connectors.offline_delta import DeltaOfflineStore, DeltaOfflineStoreConfig\n"
        "s = DeltaOfflineStore(DeltaOfflineStoreConfig(path=sys.argv[1]), Path(sys.argv[1]), 'proj')\n"
        "t = pa.table({'driver_id': pa.array([7], pa.int64()), 'event_timestamp': pa.array("
        "[datetime(2024, 5, 1, 3, tzinfo=timezone.utc)], pa.timestamp('us', tz='UTC')), "
        "'trips': pa.array([1.5])})\n"
        "print(json.dumps(s.stage('trips', t, 'event_timestamp')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True, text=True)
    staged = json.loads(out.stdout)
    assert store.commit_staged("trips", staged, H(0), H(24), EV) == 1
    assert store.read("trips").to_pylist() == [{"driver_id": 7, EV: H(3), "trips": 1.5}]


def test_frame_schema_matches_local_engine_types() -> None:
    from featurestore.engines.spark_writes import _conform, frame_schema

    schema = frame_schema([("driver_id", pa.int32())], [("src", "trips", pa.float32())])
    assert schema.names == ["driver_id", "trips", EV, CR]
    table = pa.table({"driver_id": pa.array([1], pa.int64()), "trips": pa.array([1.5]),
                      EV: pa.array([H(1)], TS), CR: pa.array([None], TS)})
    assert _conform(table, schema).schema.equals(schema)
    with pytest.raises(InvalidInputError, match="driver_id"):
        _conform(table.set_column(0, "driver_id", pa.array([2**40], pa.int64())), schema)


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
def test_write_offline_errors_empty_and_uncommitted(spark, tmp_path: Path, monkeypatch) -> None:
    from connectors import offline_delta
    from featurestore.engines.spark_writes import write_offline

    section = {"path": str(tmp_path / "off")}
    store = DeltaOfflineStore(DeltaOfflineStoreConfig(**section), tmp_path, "proj")
    data = history()
    first_day = (T0, T0 + timedelta(days=1))
    # rows outside the interval: an InvalidInputError on the driver, nothing committed, nothing left over
    with pytest.raises(InvalidInputError, match="outside the interval"):
        write_offline(frame(spark, data), section, tmp_path, "proj", "trips", *first_day)
    assert store.views() == [] and disk_files(store, "trips") == set()

    # an empty DataFrame on a new view still fixes the schema
    empty = frame(spark, data).where("driver_id < 0")
    assert write_offline(empty, section, tmp_path, "proj", "empty", *first_day) == 0
    assert store.read("empty").num_rows == 0
    assert store.schema("empty").names == data.column_names

    # a job whose commit never happens leaves only invisible files, which vacuum removes
    def boom(*args, **kwargs):
        raise RuntimeError("driver died before the commit")

    monkeypatch.setattr(offline_delta.DeltaOfflineStore, "commit_staged", boom)  # the driver's copy only
    with pytest.raises(RuntimeError):
        write_offline(frame(spark, data), section, tmp_path, "proj", "trips", T0, T0 + timedelta(days=DAYS))
    monkeypatch.undo()
    assert disk_files(store, "trips")  # the tasks staged their files; no commit lists them
    assert store.views() == ["empty"]
    with pytest.raises(FeatureViewNotFound):
        store.read("trips")
    store.vacuum(grace=timedelta(0))
    assert disk_files(store, "trips") == set()


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
