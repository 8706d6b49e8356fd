"""The local engine's point-in-time join against the brute-force reference, on random data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.engines.local import LocalEngine
from featurestore.ports.engine import ViewData, ViewJoin
from tests.pit_reference import reference_join

UTC = timezone.utc
T0 = datetime(2024, 1, 1, tzinfo=UTC)

# Small domains on purpose: they make ties, duplicates, exact TTL edges and misses common.
times = st.integers(min_value=0, max_value=12).map(lambda h: T0 + timedelta(hours=h))
key_a = st.integers(min_value=1, max_value=3)
key_b = st.sampled_from(["x", "y"])

feature_row = st.fixed_dictionaries({
    "a": key_a, "b": key_b, "event_timestamp": times,
    "created": st.one_of(st.none(), times),
    "v": st.one_of(st.none(), st.integers(-1000, 1000)),
})
entity_row = st.fixed_dictionaries({
    "a": st.one_of(key_a, st.just(99)), "b": key_b,
    "event_timestamp": st.integers(min_value=-2, max_value=15).map(lambda h: T0 + timedelta(hours=h)),
})
ttls = st.one_of(st.none(), st.integers(min_value=0, max_value=5).map(lambda h: timedelta(hours=h)))


def _join(engine, entity_rows, feature_rows, ttl, composite=True, created=True):
    keys = ["a", "b"] if composite else ["a"]
    entity = pa.Table.from_pylist(entity_rows, schema=pa.schema([
        ("a", pa.int64()), ("b", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC"))]))
    feats = pa.Table.from_pylist(feature_rows, schema=pa.schema([
        ("a", pa.int64()), ("b", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("created", pa.timestamp("us", tz="UTC")), ("v", pa.int64())]))
    types = {"a": pa.int64(), "b": pa.string()}
    join = ViewJoin(name="fv", keys=tuple((k, k, types[k]) for k in keys),
                    features=(("v", "v", pa.int64()),),
                    ttl_seconds=None if ttl is None else ttl.total_seconds(),
                    data=ViewData("event_timestamp", "created" if created else None, table=feats))
    return engine.point_in_time_join(entity, "event_timestamp", [join]).column("v").to_pylist(), keys


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entity_rows=st.lists(entity_row, max_size=25), feature_rows=st.lists(feature_row, max_size=30),
       ttl=ttls, composite=st.booleans())
def test_engine_matches_reference(entity_rows, feature_rows, ttl, composite):
    # zero TTL is "no TTL" at the definition level; the engine takes seconds or None
    got, keys = _join(LocalEngine(), entity_rows, feature_rows, ttl, composite)
    want = reference_join(entity_rows, feature_rows, keys, ["v"], ttl)
    assert len(got) == len(entity_rows)
    for i, (value, acceptable) in enumerate(zip(got, want)):
        assert value in acceptable[0], (i, entity_rows[i], value, acceptable)


def test_tie_on_event_time_takes_largest_created():
    rows = [{"a": 1, "b": "x", "event_timestamp": T0, "created": T0 + timedelta(hours=2), "v": 20},
            {"a": 1, "b": "x", "event_timestamp": T0, "created": T0 + timedelta(hours=1), "v": 10},
            {"a": 1, "b": "x", "event_timestamp": T0, "created": None, "v": 5}]
    entity = [{"a": 1, "b": "x", "event_timestamp": T0}]
    got, _ = _join(LocalEngine(), entity, rows, None)
    assert got == [20]


def test_ttl_bounds_are_inclusive():
    rows = [{"a": 1, "b": "x", "event_timestamp": T0, "created": None, "v": 7}]
    entity = [{"a": 1, "b": "x", "event_timestamp": T0 + timedelta(hours=2)},   # exactly at t - ttl
              {"a": 1, "b": "x", "event_timestamp": T0 + timedelta(hours=2, microseconds=1)},
              {"a": 1, "b": "x", "event_timestamp": T0},                       # e == t
              {"a": 1, "b": "x", "event_timestamp": T0 - timedelta(microseconds=1)}]
    got, _ = _join(LocalEngine(), entity, rows, timedelta(hours=2))
    assert got == [7, None, 7, None]


def test_duplicates_and_order_are_kept():
    rows = [{"a": k, "b": "x", "event_timestamp": T0, "created": None, "v": k * 10} for k in (1, 2, 3)]
    entity = [{"a": k, "b": "x", "event_timestamp": T0 + timedelta(hours=1)} for k in (3, 1, 3, 2, 99, 1)]
    got, _ = _join(LocalEngine(), entity, rows, None)
    assert got == [30, 10, 30, 20, None, 10]


@pytest.fixture(scope="module")
def spark_engine():
    pytest.importorskip("pyspark")
    from featurestore.engines.spark import SparkEngine, SparkEngineConfig

    return SparkEngine(SparkEngineConfig(master="local[2]", conf={"spark.sql.shuffle.partitions": "2"}))


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(entity_rows=st.lists(entity_row, min_size=1, max_size=15), feature_rows=st.lists(feature_row, max_size=20),
       ttl=ttls, composite=st.booleans())
def test_spark_engine_matches_local_engine(spark_engine, entity_rows, feature_rows, ttl, composite):
    got, keys = _join(spark_engine, entity_rows, feature_rows, ttl, composite)
    want = reference_join(entity_rows, feature_rows, keys, ["v"], ttl)
    assert len(got) == len(entity_rows)
    for i, (value, acceptable) in enumerate(zip(got, want)):
        assert value in acceptable[0], (i, entity_rows[i], value, acceptable)
