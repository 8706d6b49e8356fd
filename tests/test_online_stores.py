"""One suite for every online store (SQLite and Redis; Redis tests use a real redis-server).

Covers exact round trips of every value type, event-time monotonic writes (also from two processes at
once), TTL expiry on Redis, composite keys, missing keys, view deletion, and Redis outages.
"""

from __future__ import annotations

import json
import math
import pathlib
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors import online_codec as codec
from connectors.online_redis import RedisOnlineStore, RedisOnlineStoreConfig
from connectors.online_sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from featurestore.errors import BackendUnavailableError, InvalidInputError
from featurestore.ports.online_store import CAP_ASYNC_READ, OnlineStore, ReadResult, WriteResult

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
EV, CR = "event_timestamp", "created_timestamp"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
ROOT = pathlib.Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# ------------------------------------------------------------------------------------ fixtures
def _redis_cleanup(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i:i + 1000])
    finally:
        client.close()


def _redis_cluster_cleanup(url: str, prefix: str) -> None:
    import redis

    client = redis.RedisCluster.from_url(url, socket_timeout=5)
    try:
        for node in client.get_primaries():
            conn = client.get_redis_connection(node)
            for key in conn.scan_iter(match=f"{prefix}:*", count=1000):
                conn.unlink(key)
    finally:
        client.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("redis_cluster", marks=pytest.mark.redis_cluster)])
def store_config(request, tmp_path):
    """(store class, config dict, repo path) for a fresh, isolated store of each backend: SQLite, one
    Redis node, and a Redis Cluster of three masters (whose writes here use small calls and the bulk
    path from 50 rows, so a few rows already take every path of a cluster write)."""
    if request.param == "sqlite":
        yield SqliteOnlineStore, {"type": "sqlite", "path": "data/online.db"}, tmp_path
    elif request.param == "redis_cluster":
        url = request.getfixturevalue("redis_cluster_url")
        prefix = f"fst{uuid.uuid4().hex[:12]}"
        yield RedisOnlineStore, {"type": "redis", "url": url, "key_prefix": prefix, "cluster": True,
                                 "batch_size": 7, "bulk_absent_min_rows": 50}, tmp_path
        _redis_cluster_cleanup(url, prefix)
    else:
        url = request.getfixturevalue("redis_url")
        prefix = f"fst{uuid.uuid4().hex[:12]}"
        yield RedisOnlineStore, {"type": "redis", "url": url, "key_prefix": prefix}, tmp_path
        _redis_cleanup(url, prefix)


@pytest.fixture
def store(store_config):
    cls, cfg, repo = store_config
    model = SqliteOnlineStoreConfig if cls is SqliteOnlineStore else RedisOnlineStoreConfig
    s = cls(model.model_validate(cfg), repo, "proj")
    yield s
    s.close()


def table(keys: dict[str, list], features: dict[str, pa.Array | list], events: list[datetime],
          created: list[datetime | None] | None = None) -> pa.Table:
    cols: dict[str, pa.Array | list] = dict(keys)
    cols.update(features)
    cols[EV] = pa.array(events, TS)
    cols[CR] = pa.array(created if created is not None else [None] * len(events), TS)
    return pa.table(cols)


def write(s: OnlineStore, view: str, tbl: pa.Table, join_keys=("id",), ttl=None) -> WriteResult:
    return s.write(view, list(join_keys), tbl, event_ts_column=EV, created_ts_column=CR, ttl=ttl)


def read(s: OnlineStore, view: str, keys, features: dict[str, pa.DataType], join_keys=("id",)) -> ReadResult:
    return s.read(view, list(join_keys), [tuple(k) if isinstance(k, (tuple, list)) else (k,) for k in keys],
                  list(features), features)


# --------------------------------------------------------------------------------- exact values
def same(a, b) -> bool:
    """Equality that also holds for NaN (bit-exact floats) and nested lists."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b if a is not None and b is not None else a is b


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_TIMES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
SCALARS = {
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "int32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "float32": (pa.float32(), st.floats(width=32, allow_nan=True, allow_infinity=True)),
    "float64": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "string": (pa.string(), _TEXT),
    "bool": (pa.bool_(), st.booleans()),
    "bytes": (pa.binary(), st.binary(max_size=12)),
    "timestamp": (TS, _TIMES),
}
ALL_TYPES = dict(SCALARS)
ALL_TYPES.update({f"list_{name}": (pa.list_(typ), st.lists(st.none() | strat, max_size=5))
                  for name, (typ, strat) in SCALARS.items()})


@st.composite
def typed_rows(draw):
    n = draw(st.integers(1, 6))
    cols = {name: draw(st.lists(st.none() | strat, min_size=n, max_size=n))
            for name, (_typ, strat) in ALL_TYPES.items()}
    return n, cols


@FUZZ
@given(data=typed_rows(), key_kind=st.sampled_from(["int", "str", "bytes"]))
def test_every_type_round_trips_exactly(store, data, key_kind):
    n, cols = data
    view = f"v{uuid.uuid4().hex[:8]}"
    ids = {"int": list(range(-2, n - 2)), "str": [f"k{i}é" for i in range(n)],
           "bytes": [bytes([i, 0, 255]) for i in range(n)]}[key_kind]
    features = {name: pa.array(values, ALL_TYPES[name][0]) for name, values in cols.items()}
    features["always_null"] = pa.nulls(n)
    events = [t(i) for i in range(n)]
    result = write(store, view, table({"id": ids}, features, events))
    assert result == WriteResult(written=n, skipped_stale=0)
    types = {name: arr.type for name, arr in features.items()}
    got = read(store, view, ids + [ids[0]], types)
    assert got.event_timestamps == events + [events[0]]
    for name, values in cols.items():
        expected = list(values) + [values[0]]
        assert len(got.values[name]) == n + 1
        for g, e in zip(got.values[name], expected):
            assert same(g, e), (name, g, e)
    assert got.values["always_null"] == [None] * (n + 1)


def test_float32_keeps_the_exact_float32_value(store):
    x = np.float32(0.1)
    write(store, "v", table({"id": [1]}, {"x": pa.array([x], pa.float32())}, [t(0)]))
    value = read(store, "v", [1], {"x": pa.float32()}).values["x"][0]
    assert value == float(x) and value != 0.1


def test_timestamps_come_back_utc_aware(store):
    write(store, "v", table({"id": [1]}, {"ts": pa.array([t(1.5)], TS)}, [t(2)]))
    got = read(store, "v", [1], {"ts": TS})
    assert got.values["ts"][0] == t(1.5) and got.values["ts"][0].tzinfo is not None
    assert got.event_timestamps[0] == t(2) and got.event_timestamps[0].utcoffset() == timedelta(0)


# --------------------------------------------------------------------------------- monotonicity
def test_older_rows_never_overwrite_and_equal_rows_are_skipped(store):
    feats = {"x": pa.int64()}
    assert write(store, "v", table({"id": [1, 2]}, {"x": [10, 20]}, [t(10), t(10)])) == WriteResult(2, 0)
    # older and equal: both skipped, nothing changes
    assert write(store, "v", table({"id": [1, 2]}, {"x": [11, 21]}, [t(9), t(10)])) == WriteResult(0, 2)
    got = read(store, "v", [1, 2], feats)
    assert got.values["x"] == [10, 20] and got.event_timestamps == [t(10), t(10)]
    # newer wins
    assert write(store, "v", table({"id": [1]}, {"x": [12]}, [t(11)])) == WriteResult(1, 0)
    assert read(store, "v", [1, 2], feats).values["x"] == [12, 20]
    # rerunning the same batch changes nothing
    assert write(store, "v", table({"id": [1]}, {"x": [12]}, [t(11)])) == WriteResult(0, 1)


def test_created_timestamp_breaks_ties_and_none_is_smallest(store):
    feats = {"x": pa.int64()}
    write(store, "v", table({"id": [1]}, {"x": [1]}, [t(5)], [None]))
    assert write(store, "v", table({"id": [1]}, {"x": [2]}, [t(5)], [t(0)])) == WriteResult(1, 0)
    assert write(store, "v", table({"id": [1]}, {"x": [3]}, [t(5)], [None])) == WriteResult(0, 1)
    assert write(store, "v", table({"id": [1]}, {"x": [4]}, [t(5)], [t(-1)])) == WriteResult(0, 1)
    assert write(store, "v", table({"id": [1]}, {"x": [5]}, [t(5)], [t(1)])) == WriteResult(1, 0)
    assert read(store, "v", [1], feats).values["x"] == [5]


def test_newest_row_per_key_within_one_batch(store):
    tbl = table({"id": [1, 2, 1, 1, 2, 3, 3]}, {"x": [1, 2, 3, 4, 5, 6, 7]},
                [t(1), t(9), t(3), t(2), t(1), t(4), t(4)], [None, None, None, None, None, t(0), None])
    assert write(store, "v", tbl) == WriteResult(written=3, skipped_stale=4)
    got = read(store, "v", [1, 2, 3], {"x": pa.int64()})
    assert got.values["x"] == [3, 2, 6]
    assert got.event_timestamps == [t(3), t(9), t(4)]


def test_full_tie_in_a_batch_keeps_the_first_row_like_sequential_writes(store):
    tbl = table({"id": [1, 1]}, {"x": [1, 2]}, [t(1), t(1)])
    assert write(store, "v", tbl) == WriteResult(1, 1)
    assert read(store, "v", [1], {"x": pa.int64()}).values["x"] == [1]


@FUZZ
@given(batches=st.lists(st.lists(st.tuples(st.integers(0, 4), st.integers(-(2**40), 2**40),
                                           st.none() | st.integers(-(2**40), 2**40)),
                                 min_size=1, max_size=8), min_size=1, max_size=5))
def test_any_write_sequence_ends_with_the_newest_row_per_key(store, batches):
    """Model check, timestamps on both sides of the epoch and of 2**32 microseconds."""
    view = f"m{uuid.uuid4().hex[:8]}"
    stored: dict[int, tuple] = {}  # key -> ((event, created rank), (event, created)) as a model
    for batch in batches:
        newest: dict[int, tuple] = {}
        for key, ev, cr in batch:
            rank = (ev, -(2**63) if cr is None else cr)
            if key not in newest or rank > newest[key][0]:
                newest[key] = (rank, (ev, cr))
        expected_written = sum(1 for k, (rank, _) in newest.items() if k not in stored or rank > stored[k][0])
        for k, (rank, row) in newest.items():
            if k not in stored or rank > stored[k][0]:
                stored[k] = (rank, row)
        ids = [k for k, _, _ in batch]
        evs = [T0 + timedelta(microseconds=e) for _, e, _ in batch]
        crs = [None if c is None else T0 + timedelta(microseconds=c) for _, _, c in batch]
        values = [e * 7 + (c or 0) for _, e, c in batch]
        result = write(store, view, table({"id": ids}, {"x": values}, evs, crs))
        assert result == WriteResult(expected_written, len(batch) - expected_written)
    keys = sorted(stored)
    got = read(store, view, keys, {"x": pa.int64()})
    for key, value, stamp in zip(keys, got.values["x"], got.event_timestamps):
        ev, cr = stored[key][1]
        assert value == ev * 7 + (cr or 0)
        assert stamp == T0 + timedelta(microseconds=ev)


_WRITER = textwrap.dedent("""
    import json, sys, random, time
    from datetime import datetime, timedelta, timezone
    import pyarrow as pa
    from featurestore import plugins
    from featurestore.config import backend_config
    args = json.loads(sys.argv[1])
    cls, cfg = backend_config("online_store", args["config"])
    store = cls(cfg, __import__("pathlib").Path(args["repo"]), "proj")
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rows = [(k, s) for k in range(args["keys"]) for s in args["seconds"]]
    random.Random(args["seed"]).shuffle(rows)
    time.sleep(max(0.0, args["start_at"] - time.time()))  # both writers start together
    started = time.time()
    for i in range(0, len(rows), args["batch"]):
        chunk = rows[i:i + args["batch"]]
        tbl = pa.table({"id": [k for k, _ in chunk], "x": [s for _, s in chunk],
                        "event_timestamp": pa.array([t0 + timedelta(seconds=s) for _, s in chunk],
                                                    pa.timestamp("us", tz="UTC"))})
        store.write("v", ["id"], tbl, event_ts_column="event_timestamp")
    store.close()
    print(json.dumps([started, time.time()]))
""")


def test_two_concurrent_writer_processes_end_with_the_max_per_key(store_config):
    _two_concurrent_writers(*store_config)


@pytest.mark.redis
def test_two_concurrent_redis_writers_racing_on_set_nx_end_with_the_max_per_key(tmp_path, redis_url):
    prefix = f"fst{uuid.uuid4().hex[:12]}"
    # every batch tries SET NX first (the bulk path), racing the other writer for the same new keys
    cfg = {"type": "redis", "url": redis_url, "key_prefix": prefix, "bulk_absent_min_rows": 1}
    try:
        _two_concurrent_writers(RedisOnlineStore, cfg, tmp_path)
    finally:
        _redis_cleanup(redis_url, prefix)


def _two_concurrent_writers(cls, cfg: dict, repo) -> None:
    nkeys = 400
    procs = []
    start_at = time.time() + 3.0
    for seed, seconds in ((1, list(range(0, 40, 2))), (2, list(range(1, 40, 2)))):
        args = {"config": cfg, "repo": str(repo), "keys": nkeys, "seconds": seconds, "seed": seed,
                "batch": 50, "start_at": start_at}
        procs.append(subprocess.Popen([sys.executable, "-c", _WRITER, json.dumps(args)], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    spans = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        spans.append(json.loads(out))
    assert max(a for a, _ in spans) < min(b for _, b in spans), f"the writers did not overlap: {spans}"
    model = SqliteOnlineStoreConfig if cls is SqliteOnlineStore else RedisOnlineStoreConfig
    with cls(model.model_validate(cfg), repo, "proj") as s:
        got = read(s, "v", list(range(nkeys)), {"x": pa.int64()})
    assert got.values["x"] == [39] * nkeys
    assert got.event_timestamps == [t(39)] * nkeys


# -------------------------------------------------------------------------------- keys, misses
def test_composite_keys_are_unambiguous(store):
    jk = ("a", "b")
    tbl = table({"a": [1, 12, 1], "b": ["23", "3", "2"]}, {"x": [1, 2, 3]}, [t(0)] * 3)
    assert write(store, "v", tbl, join_keys=jk).written == 3
    got = read(store, "v", [(1, "23"), (12, "3"), (1, "2"), (1, "3"), (123, "")], {"x": pa.int64()}, join_keys=jk)
    assert got.values["x"] == [1, 2, 3, None, None]
    bkeys = {"u": [b"\x00", b"\x00\x00"], "w": [b"\x00", b""], "i": [7, 7]}
    assert write(store, "w", table(bkeys, {"x": [1, 2]}, [t(0)] * 2), join_keys=("u", "w", "i")).written == 2
    got = read(store, "w", [(b"\x00", b"\x00", 7), (b"\x00\x00", b"", 7), (b"\x00", b"\x00", 8)],
               {"x": pa.int64()}, join_keys=("u", "w", "i"))
    assert got.values["x"] == [1, 2, None]


def test_key_column_encoding_matches_key_tuple_encoding():
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), _TEXT, st.binary(max_size=6)), min_size=1))
    def check(rows):
        tbl = pa.table({"i": pa.array([r[0] for r in rows], pa.int64()), "s": [r[1] for r in rows],
                        "b": pa.array([r[2] for r in rows], pa.binary())})
        assert codec.encode_key_column(tbl, ["i", "s", "b"]).to_pylist() == [codec.encode_key(r) for r in rows]

    check()
    tbl = pa.table({"i": pa.array([5], pa.int32())})
    assert codec.encode_key_column(tbl, ["i"]).to_pylist() == [codec.encode_key((5,))] == [b"i1:5"]


def test_missing_keys_features_and_views_read_as_none(store):
    write(store, "v", table({"id": [1]}, {"x": [1]}, [t(0)]))
    got = read(store, "v", [2, 1, 3], {"x": pa.int64(), "added_later": pa.string()})
    assert got.values == {"x": [None, 1, None], "added_later": [None, None, None]}
    assert got.event_timestamps == [None, t(0), None]
    assert read(store, "nope", [1], {"x": pa.int64()}).values == {"x": [None]}
    assert read(store, "v", [], {"x": pa.int64()}) == ReadResult(values={"x": []}, event_timestamps=[])


def test_rows_written_before_a_schema_change_still_read(store):
    write(store, "v", table({"id": [1]}, {"a": pa.array([1], pa.int32()), "gone": ["x"]}, [t(0)]))
    write(store, "v", table({"id": [2]}, {"a": pa.array([2], pa.int64()), "new": [True]}, [t(0)]))
    got = read(store, "v", [1, 2], {"new": pa.bool_(), "a": pa.int64()})
    assert got.values == {"new": [None, True], "a": [1, 2]}
    # a type from another family reads as missing rather than as a wrong value
    assert read(store, "v", [1], {"a": pa.string()}).values == {"a": [None]}


def test_delete_view_removes_only_that_view(store):
    write(store, "v", table({"id": [1, 2]}, {"x": [1, 2]}, [t(0)] * 2))
    write(store, "v2", table({"id": [1]}, {"x": [3]}, [t(0)]))
    store.delete_view("v")
    store.delete_view("v")  # idempotent
    assert read(store, "v", [1, 2], {"x": pa.int64()}).values["x"] == [None, None]
    assert read(store, "v2", [1], {"x": pa.int64()}).values["x"] == [3]
    # after deletion an old row can be written again
    assert write(store, "v", table({"id": [1]}, {"x": [9]}, [t(-5)])).written == 1


def test_invalid_input_is_rejected(store):
    with pytest.raises(InvalidInputError):
        write(store, "v", table({"id": [1, None]}, {"x": [1, 2]}, [t(0)] * 2))
    with pytest.raises(InvalidInputError):
        write(store, "v", pa.table({"id": [1], "x": [1], EV: pa.array([None], TS)}))
    with pytest.raises(InvalidInputError):
        store.write("v", ["missing"], table({"id": [1]}, {"x": [1]}, [t(0)]), event_ts_column=EV)
    with pytest.raises(InvalidInputError):
        read(store, "v", [(1, 2)], {"x": pa.int64()})
    with pytest.raises(InvalidInputError):
        read(store, "v", [1.5], {"x": pa.int64()})
    assert write(store, "v", table({"id": []}, {"x": pa.array([], pa.int64())}, [])) == WriteResult(0, 0)


def test_write_without_created_column(store):
    tbl = pa.table({"id": [1, 1], "x": [1, 2], EV: pa.array([t(1), t(2)], TS)})
    assert store.write("v", ["id"], tbl, event_ts_column=EV) == WriteResult(1, 1)
    assert read(store, "v", [1], {"x": pa.int64()}).values["x"] == [2]


def test_ttl_rows_are_returned_with_their_event_time(store):
    """Stores return what they hold; the caller decides OUTSIDE_MAX_AGE from the event timestamp."""
    now = datetime.now(UTC).replace(microsecond=0)
    write(store, "v", table({"id": [1]}, {"x": [1]}, [now]), ttl=timedelta(hours=1))
    got = read(store, "v", [1], {"x": pa.int64()})
    assert got.values["x"] == [1] and got.event_timestamps == [now]


def test_input_types_are_normalised_to_the_product_types(store):
    from decimal import Decimal

    naive = datetime(2024, 5, 6, 7, 8, 9, 123456)
    features = {
        "large": pa.array(["a", None], pa.large_string()),
        "dict": pa.array(["x", "y"]).dictionary_encode(),
        "i8": pa.array([-3, None], pa.int8()),
        "u32": pa.array([2**32 - 1, 0], pa.uint32()),
        "ns": pa.array([naive, None], pa.timestamp("ns")),
        "dec": pa.array([Decimal("1.25"), None], pa.decimal128(5, 2)),
        "f16": pa.array([np.float16(0.5), None], pa.float16()),
    }
    tbl = table({"id": pa.array([1, 2], pa.int32())}, features, [t(0), t(0)])
    # event times given as naive nanoseconds are taken as UTC
    tbl = tbl.set_column(tbl.schema.get_field_index(EV), EV, pa.array([naive, naive], pa.timestamp("ns")))
    assert write(store, "v", tbl).written == 2
    types = {"large": pa.string(), "dict": pa.string(), "i8": pa.int32(), "u32": pa.int64(), "ns": TS,
             "dec": pa.float64(), "f16": pa.float32()}
    got = read(store, "v", [1, 2], types)
    aware = naive.replace(tzinfo=UTC)
    assert got.values == {"large": ["a", None], "dict": ["x", "y"], "i8": [-3, None], "u32": [2**32 - 1, 0],
                          "ns": [aware, None], "dec": [1.25, None], "f16": [0.5, None]}
    assert got.event_timestamps == [aware, aware]
    with pytest.raises(InvalidInputError):
        store.read("v", ["id"], [(1,)], ["large"], {})


# ------------------------------------------------------------------------------- configs
def test_configs_forbid_unknown_keys_and_resolve_relative_paths(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        RedisOnlineStoreConfig.model_validate({"type": "redis", "urll": "x"})
    with pytest.raises(ValidationError):
        SqliteOnlineStoreConfig.model_validate({"type": "sqlite", "pth": "x"})
    cfg = RedisOnlineStoreConfig(type="redis")
    assert (cfg.url, cfg.key_prefix, cfg.socket_timeout, cfg.batch_size) == (
        "redis://127.0.0.1:6379/0", "fs", 0.5, 1000)
    with SqliteOnlineStore(SqliteOnlineStoreConfig(type="sqlite", path="sub/o.db"), tmp_path, "p") as s:
        write(s, "v", table({"id": [1]}, {"x": [1]}, [t(0)]))
    assert (tmp_path / "sub" / "o.db").exists()


def test_plugins_find_both_stores():
    from featurestore.config import backend_config

    cls, cfg = backend_config("online_store", {"type": "sqlite", "path": ":memory:"})
    assert cls is SqliteOnlineStore and isinstance(cfg, SqliteOnlineStoreConfig)
    cls, cfg = backend_config("online_store", {"type": "redis"})
    assert cls is RedisOnlineStore and isinstance(cfg, RedisOnlineStoreConfig)


def test_sqlite_in_memory_is_shared_across_threads():

    with SqliteOnlineStore(SqliteOnlineStoreConfig(path=":memory:"), pathlib.Path("."), "p") as s:
        write(s, "v", table({"id": [1]}, {"x": [1]}, [t(0)]))
        out = []
        th = threading.Thread(target=lambda: out.append(read(s, "v", [1], {"x": pa.int64()}).values["x"]))
        th.start()
        th.join()
        assert out == [[1]]


# ------------------------------------------------------------------------------- Redis only
@pytest.fixture
def redis_store(redis_url):
    prefix = f"fst{uuid.uuid4().hex[:12]}"
    s = RedisOnlineStore(RedisOnlineStoreConfig(url=redis_url, key_prefix=prefix, batch_size=7,
                                                expiry_grace_seconds=0), pathlib.Path("."), "proj")
    yield s
    s.close()
    _redis_cleanup(redis_url, prefix)


@pytest.mark.redis
def test_redis_keys_outlive_ttl_by_the_grace(redis_url):
    import redis

    prefix = f"fst{uuid.uuid4().hex[:12]}"
    store = RedisOnlineStore(RedisOnlineStoreConfig(url=redis_url, key_prefix=prefix, expiry_grace_seconds=60),
                             pathlib.Path("."), "proj")
    client = redis.Redis.from_url(redis_url)
    try:
        now = datetime.now(UTC)
        old = table({"id": [1, 2]}, {"x": [1, 2]}, [now - timedelta(seconds=30), now - timedelta(seconds=90)])
        # 30 s old with a 10 s TTL: expired but inside the grace, so kept; 90 s old: gone for good
        assert write(store, "v", old, ttl=timedelta(seconds=10)) == WriteResult(1, 1)
        assert 0 < client.pttl(f"{prefix}:proj:v:i1:1") <= 40_000
        assert read(store, "v", [1, 2], {"x": pa.int64()}).values["x"] == [1, None]
    finally:
        store.close()
        client.close()
        _redis_cleanup(redis_url, prefix)


@pytest.mark.redis
def test_redis_key_layout_and_one_value_per_entity(redis_store, redis_url):
    import redis

    write(redis_store, "driver_stats", table({"id": [1001]}, {"x": [1]}, [t(0)]))
    client = redis.Redis.from_url(redis_url)
    prefix = redis_store.config.key_prefix
    assert client.keys(f"{prefix}:*") == [f"{prefix}:proj:driver_stats:i4:1001".encode()]
    assert client.ttl(f"{prefix}:proj:driver_stats:i4:1001") == -1
    client.close()


@pytest.mark.redis
def test_redis_many_batches_per_call(redis_store):
    """batch_size=7: the rows go out in many script calls; the counts still add up."""
    n = 1000
    ids = list(range(n))
    assert write(redis_store, "v", table({"id": ids}, {"x": ids}, [t(1)] * n)) == WriteResult(n, 0)
    half = table({"id": ids}, {"x": [-1] * n}, [t(2) if i % 2 else t(0) for i in ids])
    assert write(redis_store, "v", half) == WriteResult(n // 2, n // 2)
    got = read(redis_store, "v", ids, {"x": pa.int64()}).values["x"]
    assert got == [-1 if i % 2 else i for i in ids]


def _command_calls(client) -> dict[str, int]:
    return {name: stats["calls"] for name, stats in client.info("commandstats").items()}


@pytest.mark.redis
def test_redis_bulk_writes_set_new_keys_with_set_nx_and_keep_the_monotonic_rule(redis_url):
    """Writes of many rows go out as SET NX (PXAT) first and only keys that exist go through the
    compare-and-set script: new keys get their row and expiry, a re-run writes nothing, newer stored
    rows are never overwritten and older ones are."""
    import redis

    prefix = f"fst{uuid.uuid4().hex[:12]}"
    s = RedisOnlineStore(RedisOnlineStoreConfig(url=redis_url, key_prefix=prefix, bulk_absent_min_rows=5000,
                                                expiry_grace_seconds=0), pathlib.Path("."), "proj")
    client = redis.Redis.from_url(redis_url)
    try:
        n = 30_000
        ids = list(range(n))
        now = datetime.now(UTC).replace(microsecond=0)
        ttl = timedelta(hours=1)
        # keys 0, 7, 14, ... already hold a row newer than the bulk load's, keys 3, 10, ... an older one
        newer = ids[::7]
        older = ids[3::7]
        write(s, "v", table({"id": newer}, {"x": [-1] * len(newer)}, [now] * len(newer)), ttl=ttl)
        write(s, "v", table({"id": older}, {"x": [-2] * len(older)}, [now - timedelta(minutes=9)] * len(older)),
              ttl=ttl)
        before = _command_calls(client)
        bulk = table({"id": ids}, {"x": ids}, [now - timedelta(minutes=5)] * n)
        result = write(s, "v", bulk, ttl=ttl)
        after = _command_calls(client)
        assert result == WriteResult(n - len(newer), len(newer))
        sets = after.get("cmdstat_set", 0) - before.get("cmdstat_set", 0)
        assert sets >= n, f"expected one SET NX per row, saw {sets} SET calls"
        got = read(s, "v", ids, {"x": pa.int64()}).values["x"]
        assert got == [-1 if i % 7 == 0 else i for i in ids]
        key = f"{prefix}:proj:v:i5:12345".encode()
        expected_ms = (now - timedelta(minutes=5) + ttl).timestamp() * 1000
        assert abs(client.pexpiretime(key) - expected_ms) <= 1
        # a re-run changes nothing and (most keys existing) leaves SET NX after the first slice
        before = _command_calls(client)
        assert write(s, "v", bulk, ttl=ttl) == WriteResult(0, n)
        sets = _command_calls(client).get("cmdstat_set", 0) - before.get("cmdstat_set", 0)
        assert sets <= 2000, f"{sets} SET NX calls on a re-run: the fast path did not give way"
        assert read(s, "v", ids, {"x": pa.int64()}).values["x"] == got
    finally:
        s.close()
        client.close()
        _redis_cleanup(redis_url, prefix)


@pytest.mark.redis
def test_redis_bulk_write_error_reply_is_raised_and_the_store_recovers(redis_server_factory):
    """An error reply inside a SET NX pipeline (a server out of memory: its maxmemory set just above
    what it uses) is raised as the backend being unavailable, naming the reply; the connection is
    dropped, so once the server has room the next write and read work."""
    import redis

    server = redis_server_factory()
    s = RedisOnlineStore(RedisOnlineStoreConfig(url=server.url, bulk_absent_min_rows=100),
                         pathlib.Path("."), "proj")
    client = redis.Redis.from_url(server.url)
    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", client.info("memory")["used_memory"] + 2_000_000)
        n = 50_000
        big = table({"id": list(range(n))}, {"x": ["y" * 200] * n}, [t(1)] * n)
        with pytest.raises(BackendUnavailableError, match="OOM"):
            write(s, "v", big)
        client.config_set("maxmemory", 0)
        assert write(s, "v", table({"id": [n + 1]}, {"x": ["z"]}, [t(2)])).written == 1
        assert read(s, "v", [n + 1], {"x": pa.string()}).values["x"] == ["z"]
    finally:
        s.close()
        client.close()


@pytest.mark.redis
def test_redis_ttl_expires_keys_and_skips_expired_rows(redis_store, redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    prefix = redis_store.config.key_prefix
    now = datetime.now(UTC)
    ttl = timedelta(seconds=1)
    assert write(redis_store, "v", table({"id": [1]}, {"x": [1]}, [now]), ttl=ttl) == WriteResult(1, 0)
    key = f"{prefix}:proj:v:i1:1"
    assert 0 < client.pttl(key) <= 1000
    expected_at = math.ceil((now + ttl).timestamp() * 1000)
    assert abs(client.pexpiretime(key) - expected_at) <= 1
    assert read(redis_store, "v", [1], {"x": pa.int64()}).values["x"] == [1]
    # already expired when written: skipped, nothing stored
    # a zero TTL means none: no expiry
    write(redis_store, "z", table({"id": [1]}, {"x": [1]}, [t(0)]), ttl=timedelta(0))
    assert client.pttl(f"{prefix}:proj:z:i1:1") == -1
    old = table({"id": [2, 3]}, {"x": [2, 3]}, [now - timedelta(hours=2), now])
    assert write(redis_store, "v", old, ttl=timedelta(hours=1)) == WriteResult(1, 1)
    assert client.exists(f"{prefix}:proj:v:i1:2") == 0
    time.sleep(max(0.0, (now + ttl - datetime.now(UTC)).total_seconds()) + 0.2)
    got = read(redis_store, "v", [1, 3], {"x": pa.int64()})
    assert got.values["x"] == [None, 3] and got.event_timestamps[0] is None
    assert client.exists(key) == 0
    client.close()


@pytest.mark.redis
def test_redis_down_raises_backend_unavailable_fast_and_recovers(redis_server_factory):
    server = redis_server_factory()
    s = RedisOnlineStore(RedisOnlineStoreConfig(url=server.url, socket_timeout=0.5), pathlib.Path("."), "proj")
    try:
        write(s, "v", table({"id": [1]}, {"x": [1]}, [t(0)]))
        assert read(s, "v", [1], {"x": pa.int64()}).values["x"] == [1]
        server.stop()
        for op in (lambda: read(s, "v", [1], {"x": pa.int64()}),
                   lambda: write(s, "v", table({"id": [1]}, {"x": [2]}, [t(1)])),
                   lambda: s.delete_view("v")):
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                op()
            assert time.monotonic() - started < 2.0
        server.start()  # same port, empty (no persistence)
        assert read(s, "v", [1], {"x": pa.int64()}).values["x"] == [None]
        assert write(s, "v", table({"id": [1]}, {"x": [3]}, [t(2)])) == WriteResult(1, 0)
        assert read(s, "v", [1], {"x": pa.int64()}).values["x"] == [3]
    finally:
        s.close()


@pytest.mark.redis
def test_redis_hung_server_times_out_within_the_socket_timeout(redis_server_factory):
    import os
    import signal

    server = redis_server_factory()
    s = RedisOnlineStore(RedisOnlineStoreConfig(url=server.url, socket_timeout=0.3), pathlib.Path("."), "proj")
    try:
        write(s, "v", table({"id": [1]}, {"x": [1]}, [t(0)]))
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            for op in (lambda: read(s, "v", [1], {"x": pa.int64()}),
                       lambda: write(s, "v", table({"id": [1]}, {"x": [2]}, [t(1)]))):
                started = time.monotonic()
                with pytest.raises(BackendUnavailableError):
                    op()
                assert time.monotonic() - started < 1.5
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert read(s, "v", [1], {"x": pa.int64()}).values["x"] == [1]
    finally:
        s.close()


@pytest.mark.redis
def test_redis_script_reloads_after_a_script_flush(redis_store, redis_url):
    import redis

    write(redis_store, "v", table({"id": [1]}, {"x": [1]}, [t(0)]))
    client = redis.Redis.from_url(redis_url)
    client.script_flush()
    client.close()
    assert write(redis_store, "v", table({"id": [1]}, {"x": [2]}, [t(1)])) == WriteResult(1, 0)


def test_redis_missing_dependency_is_reported(monkeypatch):
    from featurestore.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependencyError, match="featurestore\\[redis\\]"):
        RedisOnlineStore(RedisOnlineStoreConfig(), pathlib.Path("."), "proj")


# ------------------------------------------------------------ many rows at once, and async reads
@FUZZ
@given(data=typed_rows(), extra=st.integers(8, 30), missing=st.lists(st.integers(0, 40), max_size=5))
def test_decoding_many_rows_at_once_equals_decoding_each(data, extra, missing):
    """The decoder reads many rows of one fixed-width schema as one numpy array: the same values,
    nulls and event times as row by row, also with absent keys and rows of another schema mixed in."""
    n, cols = data
    fixed = {name: cols[name] for name in ("int64", "int32", "float32", "float64", "bool", "timestamp")}
    m = n + extra
    arrays = {name: pa.array([vals[i % n] for i in range(m)], ALL_TYPES[name][0]) for name, vals in fixed.items()}
    arrays["always_null"] = pa.nulls(m)
    tbl = table({"id": list(range(m))}, arrays, [t(i % 3) for i in range(m)])
    batch = codec.WriteBatch(tbl, ["id"], EV, CR)
    rows = batch.encoded_rows().to_pylist()
    for i in sorted(set(missing)):
        rows.insert(min(i, len(rows)), None)
    other = codec.WriteBatch(table({"id": [0]}, {"int64": pa.array([7], pa.int64())}, [t(9)]), ["id"], EV, CR)
    types = {name: arr.type for name, arr in arrays.items()} | {"not_stored": pa.string()}
    names = list(types)
    one_by_one = [codec.RowDecoder().decode([row], names, types) for row in rows]
    result = codec.RowDecoder().decode(rows, names, types)
    many_values = result.values
    assert result.event_timestamps == [one.event_timestamps[0] for one in one_by_one]
    for name in names:
        for got, one in zip(many_values[name], one_by_one):
            assert same(got, one.values[name][0]), name
    # the "complete" hint names exactly the features with a value for every key (when it names any)
    assert result.complete <= {name for name in names if None not in result.values[name]}
    if not missing and len(rows) >= 8:
        assert result.complete == {name for name in names if None not in result.values[name]}
    mixed = rows + other.encoded_rows().to_pylist()  # two schemas: decoded row by row, same answer
    mixed_values = codec.RowDecoder().decode(mixed, names, types).values
    assert mixed_values["int64"][-1] == 7 and mixed_values["int32"][-1] is None
    assert all(same(a, b) for a, b in zip(mixed_values["float32"], many_values["float32"]))


@pytest.mark.redis
def test_redis_async_reads_equal_reads(redis_store):
    import asyncio

    ids = list(range(40)) + [-7, 123_456_789_012, -(2**63), 2**63 - 1]  # integer keys of many widths
    write(redis_store, "a", table({"id": ids}, {"x": ids, "s": [str(i) for i in ids]}, [t(1)] * len(ids)))
    write(redis_store, "b", table({"id": ids[::2]}, {"y": [float(i) for i in ids[::2]]}, [t(1)] * 22))
    unknown = [99, 10**30]  # not stored; the second is wider than any int64 key
    reads = [("a", ["id"], [(i,) for i in ids + unknown], ["x", "s"], {"x": pa.int64(), "s": pa.string()}),
             ("b", ["id"], [(i,) for i in ids], ["y"], {"y": pa.float64()}),
             ("b", ["id"], [], ["y"], {"y": pa.float64()})]

    assert CAP_ASYNC_READ in redis_store.capabilities  # what the server's fast path checks

    async def both_loops():
        return await redis_store.read_many_async(reads), await redis_store.read_many_async(reads[1:2])

    for _ in range(2):  # a new event loop each time: the store connects again on it
        many, again = asyncio.run(both_loops())
        assert many == [redis_store.read(*args) for args in reads]
        assert again == many[1:2]
        assert many[0].values["x"] == ids + [None, None]


@pytest.mark.redis
def test_redis_async_reads_fail_fast_when_down_or_hung_and_recover(redis_server_factory):
    import asyncio
    import os
    import signal

    server = redis_server_factory()
    s = RedisOnlineStore(RedisOnlineStoreConfig(url=server.url, socket_timeout=0.3), pathlib.Path("."), "proj")
    args = [("v", ["id"], [(1,)], ["x"], {"x": pa.int64()})]

    async def lookups(count: int):
        return await asyncio.gather(*(s.read_many_async(args) for _ in range(count)), return_exceptions=True)

    async def scenario():
        write(s, "v", table({"id": [1]}, {"x": [1]}, [t(0)]))
        assert (await s.read_many_async(args))[0].values["x"] == [1]
        os.kill(server.proc.pid, signal.SIGSTOP)  # hung: every waiting lookup times out, side by side
        try:
            started = time.monotonic()
            results = await lookups(8)
            assert all(isinstance(r, BackendUnavailableError) for r in results), results
            assert time.monotonic() - started < 1.5
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert (await s.read_many_async(args))[0].values["x"] == [1]  # a fresh connection
        server.stop()
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            await s.read_many_async(args)
        assert time.monotonic() - started < 1.5
        server.start()
        assert (await s.read_many_async(args))[0].values["x"] == [None]  # empty after the restart

    try:
        asyncio.run(scenario())
    finally:
        s.close()


@pytest.mark.redis
def test_a_bulk_write_waits_out_a_server_pause_longer_than_the_socket_timeout(redis_server_factory):
    """A materialization's pipelined slices wait bulk_write_timeout for Redis, not the lookups'
    socket_timeout: a server that stops answering for 1 s (a busy machine) slows the load, not fails it."""
    import os
    import signal

    server = redis_server_factory()
    s = RedisOnlineStore(RedisOnlineStoreConfig(url=server.url, socket_timeout=0.3, bulk_absent_min_rows=1000),
                         pathlib.Path("."), "proj")
    n = 200_000
    rows = table({"id": list(range(n))}, {"x": list(range(n))}, [t(0)] * n)
    write(s, "v", table({"id": [-1]}, {"x": [-1]}, [t(0)]))  # connected, script loaded: the pause hits the load
    pause = threading.Timer(0.05, os.kill, (server.proc.pid, signal.SIGSTOP))
    resume = threading.Timer(1.1, os.kill, (server.proc.pid, signal.SIGCONT))
    try:
        pause.start()
        resume.start()
        assert write(s, "v", rows).written == n
        assert read(s, "v", [0, n - 1], {"x": pa.int64()}).values["x"] == [0, n - 1]
        # The connection went back to the pool with the lookups' timeout.
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                write(s, "v", table({"id": [1]}, {"x": [5]}, [t(1)]))
            assert time.monotonic() - started < 1.5
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
    finally:
        pause.cancel()
        resume.join()
        s.close()
