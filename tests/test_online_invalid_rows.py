"""A stored online row that cannot be decoded breaks no batch: that entity alone is answered INVALID
(SDK and REST), counted in /metrics and logged once naming the view, the entity and the stored row,
and any later write (a push, even of an older row, or the rematerialization the log names) replaces
it. On SQLite and on a real Redis; the Redis upsert script and ``online_codec.row_problem`` agree on
which rows are damaged."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import struct
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from connectors import online_codec as codec
from connectors.online_redis import RedisOnlineStore, RedisOnlineStoreConfig
from connectors.online_sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from featurestore import FeatureStore
from featurestore.cli import main as cli
from featurestore.errors import InvalidInputError
from featurestore.online_read import INVALID, NOT_FOUND, PRESENT
from featurestore.ports.online_store import CAP_ASYNC_READ
from featurestore.timestamps import to_us
from serving.app import create_app
from tests.repo_helpers import write_repo

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
NOW = datetime.now(UTC).replace(microsecond=0)
IDS = list(range(1, 11))  # ten drivers: enough for the columnar decoding of fixed-width rows
BAD = 3  # the driver whose rows get damaged

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource, PushSource
from featurestore.types import Float64, Int64, String
from transforms import Aggregation

driver = Entity(name="driver", join_keys=["driver_id"])
stats_src = FileSource(name="stats_src", path="data/stats.parquet", timestamp_field="ts")
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=30), source=stats_src,
    schema=[Field(name="trips", dtype=Int64), Field(name="label", dtype=String)])
trips_agg = FeatureView(name="trips_agg", entities=[driver], ttl=timedelta(days=30), source=stats_src,
    aggregations=[Aggregation(column="trips", function="sum", window=timedelta(days=1))])
live_push = PushSource(name="live_push",
    batch_source=FileSource(name="live_src", path="data/live.parquet", timestamp_field="ts"))
live = FeatureView(name="live", entities=[driver], ttl=timedelta(days=1), source=live_push,
    schema=[Field(name="speed", dtype=Float64)])
"""
FEATURES = ["stats:trips", "stats:label", "trips_agg:trips_sum_1d", "live:speed"]


START, END = NOW - timedelta(days=2), NOW + timedelta(seconds=1)  # the times the fixture materializes


def _stats() -> pa.Table:
    return pa.table({"driver_id": pa.array(IDS, pa.int64()),
                     "ts": pa.array([NOW - timedelta(hours=i) for i in IDS], TS),
                     "trips": pa.array([10 * i for i in IDS], pa.int64()),
                     "label": pa.array([f"driver {i}" for i in IDS], pa.string())})


def _live() -> pa.Table:
    return pa.table({"driver_id": pa.array([], pa.int64()), "ts": pa.array([], TS),
                     "speed": pa.array([], pa.float64())})


# -------------------------------------------------------------------------------------- damage
def truncated(row: bytes) -> bytes:
    return row[:-3]  # the header (timestamps, schema) intact, the values cut short


def garbage(row: bytes) -> bytes:
    return b"\x93\x00not a row at all" * 2


def longer(row: bytes) -> bytes:
    return row + b"\x00\x00"


def far_future(row: bytes) -> bytes:
    """The row an older version stored for a push of ``event_timestamp: 9e18`` (read as microseconds)."""
    return row[:1] + struct.pack(">q", 9 * 10**18) + row[9:]


DAMAGE = [truncated, garbage, longer, far_future]


class RawRows:
    """Stored rows read and overwritten in the backend itself, as damage or an older version would."""

    def __init__(self, store: FeatureStore, redis_url: str | None, prefix: str | None) -> None:
        self.project = store.config.project
        self.db = Path(store.repo_path) / "data" / "online.db"
        self.prefix = prefix
        self.client = None
        if redis_url is not None:
            import redis

            self.client = redis.Redis.from_url(redis_url)

    def redis_key(self, view: str, driver: int) -> bytes:
        return f"{self.prefix}:{self.project}:{view}:".encode() + codec.encode_key((driver,))

    def get(self, view: str, driver: int) -> bytes:
        if self.client is not None:
            return self.client.get(self.redis_key(view, driver))
        with sqlite3.connect(self.db) as conn:
            return conn.execute("SELECT row FROM online_rows WHERE project = ? AND view = ? AND entity_key = ?",
                                (self.project, view, codec.encode_key((driver,)))).fetchone()[0]

    def put(self, view: str, driver: int, row: bytes) -> None:
        if self.client is not None:
            self.client.set(self.redis_key(view, driver), row, keepttl=True)
            return
        sql = "UPDATE online_rows SET row = ? WHERE project = ? AND view = ? AND entity_key = ?"
        args: tuple = (row, self.project, view, codec.encode_key((driver,)))
        if len(row) >= codec.HEADER_SIZE and row[0] == codec.FORMAT:  # the columns an older version wrote
            sql = sql.replace("row = ?", "row = ?, event_ts = ?, created_ts = ?")
            args = (row, *codec.row_timestamps(row), *args[1:])
        with sqlite3.connect(self.db) as conn:
            assert conn.execute(sql, args).rowcount == 1

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request) -> tuple[str, str | None, str | None]:
    """(online_store yaml, Redis URL, key prefix): SQLite, or the shared Redis under a unique prefix."""
    if request.param == "sqlite":
        return "{type: sqlite, path: data/online.db}", None, None
    url = request.getfixturevalue("redis_url")
    prefix = f"inv{uuid.uuid4().hex[:10]}"
    # bulk_absent_min_rows: 1 sends materialization through SET NX first, then the upsert script
    return f"{{type: redis, url: '{url}', key_prefix: '{prefix}', bulk_absent_min_rows: 1}}", url, prefix


@pytest.fixture
def repo(tmp_path, backend):
    """An applied, materialized repo, a push of every driver's speed, and direct access to its rows."""
    yaml, url, prefix = backend
    store = FeatureStore(write_repo(tmp_path, CODE, online_store=yaml,
                                    tables={"stats": _stats(), "live": _live()}))
    store.apply()
    store.materialize(START, END, progress=False)
    store.push("live_push", {"driver_id": IDS, "ts": [NOW] * len(IDS), "speed": [float(i) for i in IDS]})
    raw = RawRows(store, url, prefix)
    yield store, raw
    for view in ("stats", "trips_agg", "live"):
        store.online_store.delete_view(view)
    raw.close()
    store.close()


def _damage(raw: RawRows, damage) -> None:
    for view in ("stats", "trips_agg", "live"):
        raw.put(view, BAD, damage(raw.get(view, BAD)))


def _invalid_counter(metrics: str, view: str) -> float:
    found = re.search(rf'^featurestore_online_invalid_rows_total{{view="{view}"}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


def _check_batch(values: dict, statuses: dict) -> None:
    """Driver BAD is INVALID in every view (null values), every other driver is served as stored."""
    i = IDS.index(BAD)
    for name in ("trips", "label", "trips_sum_1d", "speed"):
        assert statuses[name][i] == INVALID, name
        assert values[name][i] is None, name
        others = [s for j, s in enumerate(statuses[name]) if j != i]
        assert others == [PRESENT] * (len(IDS) - 1), name
    good = [d for d in IDS if d != BAD]
    assert [v for d, v in zip(IDS, values["trips"]) if d != BAD] == [10 * d for d in good]
    assert [v for d, v in zip(IDS, values["label"]) if d != BAD] == [f"driver {d}" for d in good]
    assert [v for d, v in zip(IDS, values["speed"]) if d != BAD] == [float(d) for d in good]
    assert statuses["driver_id"] == [PRESENT] * len(IDS)


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_row_answers_its_entity_alone_counted_and_logged_once(repo, damage, caplog):
    store, raw = repo
    _damage(raw, damage)
    caplog.set_level(logging.WARNING, logger="featurestore.online_read")

    resp = store.get_online_features(FEATURES, {"driver_id": IDS})
    _check_batch(resp.values, resp.statuses)
    assert resp.invalid_rows == {"stats": 1, "trips_agg": 1, "live": 1}
    few = store.get_online_features(["stats:trips", "live:speed"], {"driver_id": [BAD, 1, 99]})  # row by row
    assert few.statuses["trips"] == [INVALID, PRESENT, NOT_FOUND]
    assert few.statuses["speed"] == [INVALID, PRESENT, NOT_FOUND]

    warnings = [r.getMessage() for r in caplog.records if "'stats'" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per row, however often it is read
    message = warnings[0]
    assert f"driver_id={BAD}" in message and "INVALID" in message
    assert f"featurestore materialize {START.isoformat()} {END.isoformat()} --views stats" in message
    if raw.client is not None:
        assert raw.redis_key("stats", BAD).decode() in message  # the damaged key, by name
    else:
        assert str(raw.db) in message and repr(codec.encode_key((BAD,))) in message

    with TestClient(create_app(store)) as client:
        for body in ({"features": FEATURES, "entities": {"driver_id": IDS}},  # the fast path
                     {"features": FEATURES, "entities": {"driver_id": IDS}, "full_feature_names": False}):
            r = client.post("/get-online-features", json=body)
            assert r.status_code == 200, r.text
            names = r.json()["metadata"]["feature_names"]
            results = dict(zip(names, r.json()["results"]))
            _check_batch({n: res["values"] for n, res in results.items()},
                         {n: res["statuses"] for n, res in results.items()})
            assert results["trips"]["event_timestamps"][IDS.index(BAD)] == "1970-01-01T00:00:00Z"
        metrics = client.get("/metrics").text
    for view in ("stats", "trips_agg", "live"):
        assert _invalid_counter(metrics, view) == 2.0, view


@pytest.mark.parametrize("damage", DAMAGE)
def test_the_command_the_warning_names_or_any_push_replaces_a_damaged_row(repo, damage, caplog):
    store, raw = repo
    _damage(raw, damage)
    caplog.set_level(logging.WARNING, logger="featurestore.online_read")
    store.get_online_features(FEATURES, {"driver_id": [BAD]})

    # The command each view's warning names: the same rows again, no newer than the damaged row's header.
    commands = {}
    for record in caplog.records:
        found = re.search(r"`featurestore (materialize \S+ \S+ --views (\w+))`", record.getMessage())
        if found:
            commands[found.group(2)] = found.group(1).split()
    assert sorted(commands) == ["live", "stats", "trips_agg"]
    for view in ("stats", "trips_agg"):
        result = CliRunner().invoke(cli, ["--repo", str(store.repo_path), *commands[view]])
        assert result.exit_code == 0, result.output
    # A push older than the damaged row: a sound row that new would win, a damaged one counts as absent.
    store.push("live_push", {"driver_id": [BAD], "ts": [NOW - timedelta(hours=5)], "speed": [-1.0]})

    resp = store.get_online_features(FEATURES, {"driver_id": IDS})
    assert resp.invalid_rows == {}
    assert all(s == [PRESENT] * len(IDS) for s in resp.statuses.values())
    assert resp.values["trips"] == [10 * d for d in IDS]
    assert resp.values["label"][IDS.index(BAD)] == f"driver {BAD}"
    assert resp.values["trips_sum_1d"][IDS.index(BAD)] == 10.0 * BAD
    assert resp.values["speed"][IDS.index(BAD)] == -1.0
    for view in ("stats", "trips_agg", "live"):
        assert codec.row_problem(raw.get(view, BAD)) is None, view


def test_a_rest_push_replaces_a_row_an_older_version_wrote_with_a_time_out_of_range(repo):
    store, raw = repo
    raw.put("live", BAD, far_future(raw.get("live", BAD)))
    with TestClient(create_app(store)) as client:
        body = {"features": ["live:speed"], "entities": {"driver_id": IDS}}
        assert client.post("/get-online-features", json=body).json()["results"][1]["statuses"][IDS.index(BAD)] \
            == INVALID
        r = client.post("/push", json={"push_source_name": "live_push", "to": "online",
                                       "df": {"driver_id": [BAD], "ts": [NOW.isoformat()], "speed": [7.5]}})
        assert r.status_code == 200, r.text
        result = client.post("/get-online-features", json=body).json()["results"][1]
    assert result["statuses"] == [PRESENT] * len(IDS)
    assert result["values"][IDS.index(BAD)] == 7.5


# ----------------------------------------------- the write paths and row_problem agree, byte for byte
def _variants(row: bytes) -> list[bytes]:
    """A sound row and many damaged forms of it: every truncation, extra bytes, garbage, times at and
    past the accepted range's edges, unknown type codes, a schema or blob length that lies."""
    slen = struct.unpack_from(">H", row, 17)[0]
    out = [row[:k] for k in range(len(row))] + [row, row + b"\x00", b"\x01" * 40, b"\x02" + row[1:]]
    for ev in (codec.ROW_TS_MIN_US - 1, codec.ROW_TS_MIN_US, codec.ROW_TS_END_US - 1, codec.ROW_TS_END_US,
               9 * 10**18, -(9 * 10**18)):
        out.append(row[:1] + struct.pack(">q", ev) + row[9:])
    for cr in (codec.INT64_MIN, codec.ROW_TS_END_US, codec.ROW_TS_MIN_US - 1, codec.ROW_TS_END_US - 1):
        out.append(row[:9] + struct.pack(">q", cr) + row[17:])
    for code in (9, 0x10, 0x19, 0xFF):  # unknown type codes in the first schema entry
        out.append(row[:19] + bytes([code]) + row[20:])
    out.append(row[:17] + struct.pack(">H", slen + 1) + row[19:])
    out.append(row[:17] + struct.pack(">H", len(row)) + row[19:])
    bitmap_at = 19 + slen
    blob_length_at = bitmap_at + 1 + 8  # after the 1-byte bitmap and the int64 feature: the string's length
    for delta in (1, -1):
        (length,) = struct.unpack_from("<I", row, blob_length_at)
        out.append(row[:blob_length_at] + struct.pack("<I", length + delta) + row[blob_length_at + 4:])
    return out


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def online(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteOnlineStore(SqliteOnlineStoreConfig(path=str(tmp_path / "online.db")), tmp_path, "p")
    else:
        prefix = f"inv{uuid.uuid4().hex[:10]}"
        s = RedisOnlineStore(RedisOnlineStoreConfig(url=request.getfixturevalue("redis_url"), key_prefix=prefix),
                             tmp_path, "p")
    yield s
    s.delete_view("v")
    s.close()


def _put_raw(store, key: int, row: bytes, columns: tuple[int, int]) -> None:
    encoded = codec.encode_key((key,))
    if isinstance(store, RedisOnlineStore):
        store._client.set(store._view_prefix("v") + encoded, row)
        return
    with sqlite3.connect(store._target) as conn:
        conn.execute("INSERT OR REPLACE INTO online_rows VALUES (?, ?, ?, ?, ?, ?)",
                     ("p", "v", encoded, *columns, row))


def _get_raw(store, key: int) -> bytes:
    encoded = codec.encode_key((key,))
    if isinstance(store, RedisOnlineStore):
        return store._client.get(store._view_prefix("v") + encoded)
    with sqlite3.connect(store._target) as conn:
        return conn.execute("SELECT row FROM online_rows WHERE entity_key = ?", (encoded,)).fetchone()[0]


def _stored_variants(online):
    """A sound row (event time 2024-01-01) and its damaged forms, stored under keys 0, 1, ..."""
    when = datetime(2024, 1, 1, tzinfo=UTC)
    sound = codec.WriteBatch(pa.table({"id": [0], "x": pa.array([5], pa.int64()), "s": ["hello"],
                                       "ev": pa.array([when], TS)}), ["id"], "ev", None).encoded_rows()[0].as_py()
    variants = _variants(sound)
    for key, row in enumerate(variants):
        stamps = codec.row_timestamps(row if len(row) >= codec.HEADER_SIZE else sound)
        _put_raw(online, key, row, stamps)
    return when, sound, variants


def test_a_write_replaces_exactly_the_rows_row_problem_rejects(online):
    when, sound, variants = _stored_variants(online)
    # One row per key, an hour older than the sound row: it replaces a stored row only when that row
    # is damaged (or is itself older, as the variants at the range's low edge are).
    older = when - timedelta(hours=1)
    keys = list(range(len(variants)))
    new = pa.table({"id": keys, "x": pa.array([-1] * len(keys), pa.int64()), "s": ["new"] * len(keys),
                    "ev": pa.array([older] * len(keys), TS)})
    result = online.write("v", ["id"], new, event_ts_column="ev")

    older_us = to_us(older)
    expected = [codec.row_problem(row) is not None or older_us > codec.row_timestamps(row)[0]
                for row in variants]
    # the fast check SQLite's upsert calls says the same (given the timestamps stored beside the row)
    assert [not codec.row_sound(row, *codec.row_timestamps(row if len(row) >= codec.HEADER_SIZE else sound))
            for row in variants] == [codec.row_problem(row) is not None for row in variants]
    replaced = [_get_raw(online, key) != row for key, row in enumerate(variants)]
    assert replaced == expected
    assert result.written == sum(expected)
    assert sum(expected) > len(sound)  # the damaged forms are many; the sound one and its kin are not replaced
    assert not expected[variants.index(sound)]
    read = online.read("v", ["id"], [(k,) for k in keys], ["x", "s"], {"x": pa.int64(), "s": pa.string()})
    assert read.invalid == {}
    assert read.values["x"] == [-1 if r else 5 for r in replaced]


def test_reads_report_every_damaged_variant_and_serve_the_rest(online):
    when, sound, variants = _stored_variants(online)
    keys = [(k,) for k in range(len(variants))] + [(10_000,)]
    got = online.read("v", ["id"], keys, ["x", "s"], {"x": pa.int64(), "s": pa.string()})
    damaged = {i for i, row in enumerate(variants) if codec.row_problem(row) is not None}
    assert set(got.invalid) == damaged
    for i, row in enumerate(variants):
        if i in damaged:
            assert got.values["x"][i] is None and got.event_timestamps[i] is None
            assert codec.row_problem(row) in got.invalid[i]
        else:
            assert (got.values["x"][i], got.values["s"][i]) == (5, "hello")
    assert got.values["x"][-1] is None and len(keys) - 1 not in got.invalid  # missing is not damaged
    if CAP_ASYNC_READ in online.capabilities:  # the feature server's path answers the same
        (again,) = asyncio.run(online.read_many_async([("v", ["id"], keys, ["x", "s"],
                                                        {"x": pa.int64(), "s": pa.string()})]))
        assert again.invalid == got.invalid and again.values == got.values
        assert all(online._view_prefix("v").decode() in message for message in again.invalid.values())


def test_rows_without_features_and_rows_of_other_schemas_stay_sound(online):
    """Rows the script has no cached schema for (the first of a call, an empty schema, a second schema
    in one call) are judged like the others: a sound row is kept against an older write."""
    when = datetime(2024, 1, 1, tzinfo=UTC)
    online.write("v", ["id"], pa.table({"id": [1, 2], "ev": pa.array([when] * 2, TS)}), event_ts_column="ev")
    online.write("v", ["id"], pa.table({"id": [3], "x": pa.array([1.5]), "ev": pa.array([when], TS)}),
                 event_ts_column="ev")
    older = pa.table({"id": [1, 2, 3], "x": pa.array([9.0] * 3), "ev": pa.array([when - timedelta(days=1)] * 3, TS)})
    assert online.write("v", ["id"], older, event_ts_column="ev").written == 0
    got = online.read("v", ["id"], [(1,), (2,), (3,)], ["x"], {"x": pa.float64()})
    assert got.invalid == {} and got.values["x"] == [None, None, 1.5]
    assert got.event_timestamps == [when] * 3


# ------------------------------------------------------------------------------------ the codec
def _one_row(**columns) -> bytes:
    table = pa.table({"id": [1], **columns})
    return codec.WriteBatch(table, ["id"], "ev", "cr" if "cr" in columns else None).encoded_rows()[0].as_py()


def test_values_that_cannot_be_decoded_make_the_row_invalid_not_the_batch():
    when = pa.array([datetime(2024, 1, 1, tzinfo=UTC)], TS)
    sound = _one_row(ev=when, seen=pa.array([datetime(2020, 1, 1, tzinfo=UTC)], TS))
    # a Timestamp feature beyond Python's datetime range (an older version read integers as microseconds)
    overflow = sound[:-8] + struct.pack("<q", 9 * 10**18)
    names, types = ["seen"], {"seen": TS}
    for n in (2, 12):  # row by row, and the columnar path for many rows of one schema
        rows = [sound] * (n - 1) + [overflow]
        got = codec.RowDecoder().decode(rows, names, types)
        assert list(got.invalid) == [n - 1] and "OverflowError" in got.invalid[n - 1]
        assert got.values["seen"] == [datetime(2020, 1, 1, tzinfo=UTC)] * (n - 1) + [None]
    text = _one_row(ev=when, s=pa.array(["abc"]))
    not_utf8 = text[:-3] + b"\xff\xfe\xfd"
    got = codec.RowDecoder().decode([text, not_utf8], ["s"], {"s": pa.string()})
    assert got.values["s"] == ["abc", None] and list(got.invalid) == [1]
    listed = _one_row(ev=when, xs=pa.array([[1, 2, 3]], pa.list_(pa.int64())))
    lying_count = listed[:-28] + struct.pack("<I", 4) + listed[-24:]
    got = codec.RowDecoder().decode([lying_count], ["xs"], {"xs": pa.list_(pa.int64())})
    assert got.values["xs"] == [None] and list(got.invalid) == [0]


def test_rows_columnar_decoding_hands_out_of_range_times_to_the_row_path():
    rows = [_one_row(ev=pa.array([datetime(2024, 1, 1, tzinfo=UTC)], TS), x=pa.array([i], pa.int64()))
            for i in range(12)]
    rows[4] = far_future(rows[4])
    rows[7] = rows[7][:9] + struct.pack(">q", codec.ROW_TS_END_US) + rows[7][17:]  # its created time
    got = codec.RowDecoder().decode(rows, ["x"], {"x": pa.int64()})
    assert sorted(got.invalid) == [4, 7]
    assert "event time" in got.invalid[4] and "created time" in got.invalid[7]
    assert got.values["x"] == [None if i in (4, 7) else i for i in range(12)]


@pytest.mark.parametrize("column", ["ev", "cr"])
def test_a_row_with_a_time_out_of_range_is_never_written(column):
    times = {"ev": pa.array([datetime(2024, 1, 1, tzinfo=UTC)], TS), "cr": pa.array([None], TS)}
    times[column] = pa.array(np.array([9 * 10**18], dtype=np.int64), pa.int64()).cast(TS)
    with pytest.raises(InvalidInputError, match=f"column '{column}'.*outside the accepted time range"):
        _one_row(**times)
