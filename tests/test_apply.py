"""plan/apply: validation of definitions, diffs, incompatible changes, one transaction."""

from __future__ import annotations

import multiprocessing
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from featurestore import FeatureStore
from featurestore.errors import DefinitionError, IncompatibleChangeError
from tests.repo_helpers import write_repo

T = datetime(2024, 1, 1, tzinfo=timezone.utc)
STATS = pa.table({"driver_id": pa.array([1, 2], pa.int64()),
                  "event_timestamp": pa.array([T, T], pa.timestamp("us", tz="UTC")),
                  "conv_rate": pa.array([0.5, 0.25], pa.float32()),
                  "trips": pa.array([3, 4], pa.int64())})

GOOD = """
from datetime import timedelta
from featurestore import Entity, FeatureService, FeatureView, Field, FileSource
from featurestore.types import Float32, Int64
driver = Entity(name="driver", join_keys=["driver_id"])
src = FileSource(name="stats", path="data/stats.parquet", timestamp_field="event_timestamp")
hourly = FeatureView(name="hourly", entities=[driver], ttl=timedelta(days=2), source=src,
                     schema=[Field(name="conv_rate", dtype=Float32), Field(name="trips", dtype=Int64)])
svc = FeatureService(name="svc", features=[hourly])
"""


def _repo(tmp_path, code=GOOD, **kw):
    return write_repo(tmp_path, code, tables={"stats": STATS}, **kw)


def test_plan_then_apply_then_no_changes(tmp_path):
    store = FeatureStore(_repo(tmp_path))
    plan = store.plan()
    assert [str(c) for c in plan.changes] == ["+ entity driver", "+ data_source stats",
                                              "+ feature_view hourly", "+ feature_service svc"]
    assert store.registry.version() == 0  # plan changes nothing
    applied = store.apply()
    assert applied.registry_version == 1
    assert store.plan().empty
    assert store.apply().registry_version == 1  # a no-op apply does not bump the version
    view = store.get_feature_view("hourly")
    assert [f.name for f in view.features] == ["conv_rate", "trips"]
    assert [(c.name, c.dtype.name) for c in view.entity_columns] == [("driver_id", "Int64")]


def test_plan_shows_changes_and_deletes(tmp_path):
    store = FeatureStore(_repo(tmp_path))
    store.apply()
    (tmp_path / "features.py").write_text(GOOD.replace("days=2", "days=3").replace(
        'svc = FeatureService(name="svc", features=[hourly])', ""))
    plan = FeatureStore(tmp_path).plan()
    assert [str(c) for c in plan.changes] == ["~ feature_view hourly (ttl_seconds)", "- feature_service svc"]
    FeatureStore(tmp_path).apply()
    assert FeatureStore(tmp_path).registry.get("feature_service", "svc") is None
    history = store.registry.history("feature_view", "hourly")
    assert [h.version for h in history] == [1, 2]


@pytest.mark.parametrize("code, obj, field, words", [
    (GOOD + "\nhourly2 = FeatureView(name='hourly', entities=[driver], source=src, schema=[])\n",
     "hourly", "name", "duplicate FeatureView name 'hourly'"),
    (GOOD.replace("entities=[driver]", "entities=['rider']"), "hourly", "entities", "unknown entity 'rider'"),
    (GOOD.replace('Field(name="trips"', 'Field(name="trips_total"'), "hourly", "trips_total",
     "schema field 'trips_total' is not a column of source 'stats'"),
    (GOOD.replace("data/stats.parquet", "data/missing.parquet"), "hourly", "source",
     "no parquet files at path 'data/missing.parquet'"),
    (GOOD.replace('Field(name="trips", dtype=Int64)', 'Field(name="trips", dtype=Float32), '
                  'Field(name="conv_rate", dtype=Float32)'), "hourly", "conv_rate", "declared twice"),
])
def test_bad_definitions_fail_naming_object_and_field_and_change_nothing(tmp_path, code, obj, field, words):
    store = FeatureStore(_repo(tmp_path))
    store.apply()
    before = store.registry.snapshot(), store.registry.version()
    (tmp_path / "features.py").write_text(code)
    bad = FeatureStore(tmp_path)
    for action in (bad.plan, bad.apply):
        with pytest.raises(DefinitionError) as info:
            action()
        assert words in str(info.value)
        assert info.value.obj == obj and info.value.field == field
    assert (bad.registry.snapshot(), bad.registry.version()) == before


def test_incompatible_change_is_refused_unless_forced(tmp_path):
    store = FeatureStore(_repo(tmp_path))
    store.apply()
    stats = STATS.set_column(0, "driver_id", pa.array(["a", "b"]))
    write_repo(tmp_path, GOOD, tables={"stats": stats})
    changed = FeatureStore(tmp_path)
    with pytest.raises(IncompatibleChangeError, match="feature view 'hourly': join key types change"):
        changed.apply()
    assert changed.registry.version() == 1
    assert changed.plan().incompatible
    changed.apply(force=True)
    assert changed.get_feature_view("hourly").entity_columns[0].dtype.name == "String"


def test_type_mismatch_between_schema_and_source(tmp_path):
    code = GOOD.replace('Field(name="trips", dtype=Int64)', 'Field(name="trips", dtype=String)').replace(
        "import Float32, Int64", "import Float32, Int64, String")
    with pytest.raises(DefinitionError, match="field 'trips' is declared String but source 'stats' has int64"):
        FeatureStore(_repo(tmp_path, code)).apply()


def _apply_one(repo: str, i: int) -> None:
    from featurestore import Entity, FeatureStore
    store = FeatureStore(repo)
    for j in range(5):
        store.apply([Entity(name=f"e{i}_{j}", join_keys=["k"])])


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_concurrent_applies_lose_no_update(tmp_path, request, backend):
    registry = "sqlite:///data/registry.db"
    if backend == "postgres":
        registry = request.getfixturevalue("fresh_postgres_db")
    repo = _repo(tmp_path, registry=registry)
    FeatureStore(repo).apply()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_apply_one, args=(str(repo), i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = FeatureStore(repo)
    names = set(store.registry.list("entity"))
    assert {f"e{i}_{j}" for i in range(3) for j in range(5)} <= names
    assert store.registry.version() == 1 + 15
