"""Accepted input, one definition on every path (``featurestore.timestamps``, ``featurestore.values``):
integer timestamps are epoch milliseconds in 1678-01-01 <= t < 2262-01-01, bool and text are never
integers, NaN, infinities and Float32 overflow are refused at push and stream and stored as null from
batch sources; ``/push`` writes only to push sources and, without API keys, only for local clients.

Each test runs against a repo applied and materialized on SQLite (SQLite registry) and on a real Redis
(PostgreSQL registry), through the SDK and the REST app (TestClient or a real uvicorn server).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from featurestore import FeatureStore
from featurestore.errors import InvalidInputError
from featurestore.streaming import events
from featurestore.streaming.blueprint import EventColumn
from featurestore.types import Float32, Float64, Int64, Timestamp
from serving.app import create_app
from tests.repo_helpers import write_repo

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
RANGE = "1678-01-01T00:00:00Z <= t < 2262-01-01T00:00:00Z"

CODE = """
from datetime import timedelta
from featurestore import (Entity, FeatureView, Field, FileSource, PushSource, RequestSource,
                          on_demand_feature_view)
from featurestore.types import Array, Bytes, Float32, Float64, Int64, Timestamp

driver = Entity(name="driver", join_keys=["driver_id"])
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=30),
    source=FileSource(name="stats_src", path="data/stats.parquet", timestamp_field="ts"),
    schema=[Field(name="trips", dtype=Int64), Field(name="rate", dtype=Float32),
            Field(name="score", dtype=Float64), Field(name="scores", dtype=Array(Float64))])
live_push = PushSource(name="live_push",
    batch_source=FileSource(name="live_src", path="data/live.parquet", timestamp_field="ts"))
live = FeatureView(name="live", entities=[driver], ttl=timedelta(days=1), source=live_push,
    schema=[Field(name="speed", dtype=Float64), Field(name="ratio", dtype=Float32),
            Field(name="seen", dtype=Timestamp), Field(name="tag", dtype=Bytes)])
stream_push = PushSource(name="stream_push", bootstrap_servers="127.0.0.1:1", topic="never_reached",
    batch_source=FileSource(name="stream_src", path="data/live.parquet", timestamp_field="ts"))
streamed = FeatureView(name="streamed", entities=[driver], ttl=timedelta(days=1), source=stream_push,
    schema=[Field(name="speed", dtype=Float64), Field(name="ratio", dtype=Float32)])

@on_demand_feature_view(sources=[live, RequestSource(schema=[Field("asked_at", Timestamp)])],
                        schema=[Field("asked_ms", Int64)])
def asked(inputs):
    return {"asked_ms": [None if t is None else round(t.timestamp() * 1000) for t in inputs["asked_at"]]}
"""
# A source whose event time is an integer column of epoch milliseconds.
CLOCK = """
clock = FeatureView(name="clock", entities=[driver], ttl=timedelta(days=30),
    source=FileSource(name="clock_src", path="data/clock.parquet", timestamp_field="ts_ms"),
    schema=[Field(name="tick", dtype=Int64)])
"""


def _ms(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def tables(now: datetime) -> dict[str, pa.Table]:
    """Drivers 1001..1003; 1002's score is NaN, 1003's rate infinite, 1001's scores hold a NaN; the
    clock source's event time is an integer column of epoch milliseconds."""
    ids = [1001, 1002, 1003]
    return {
        "stats": pa.table({
            "driver_id": pa.array(ids, pa.int64()),
            "ts": pa.array([now - timedelta(minutes=5)] * 3, TS),
            "trips": pa.array([10, 20, 30], pa.int64()),
            "rate": pa.array([0.5, 0.25, math.inf], pa.float32()),
            "score": pa.array([1.5, math.nan, 3.5], pa.float64()),
            "scores": pa.array([[1.0, math.nan], [2.0], None], pa.list_(pa.float64())),
        }),
        "live": pa.table({"driver_id": pa.array([1001], pa.int64()), "ts": pa.array([now - timedelta(hours=2)], TS),
                          "speed": pa.array([1.5]), "ratio": pa.array([0.5], pa.float32()),
                          "seen": pa.array([now], TS), "tag": pa.array([b"x"])}),
        "clock": pa.table({"driver_id": pa.array(ids, pa.int64()),
                           "ts_ms": pa.array([_ms(now - timedelta(minutes=i)) for i in range(3)], pa.int64()),
                           "tick": pa.array([1, 2, 3], pa.int64())}),
    }


def _build(path: Path, online_store: str, registry: str, now: datetime) -> FeatureStore:
    store = FeatureStore(write_repo(path, CODE, online_store=online_store, registry=registry, tables=tables(now)))
    store.apply()
    store.materialize(now - timedelta(days=3), now + timedelta(seconds=1), progress=False)
    return store


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request, tmp_path) -> Iterator[tuple[FeatureStore, datetime]]:
    """(store, now): SQLite online store and registry, or Redis online store and PostgreSQL registry."""
    now = datetime.now(UTC).replace(microsecond=0)
    if request.param == "sqlite":
        store = _build(tmp_path / "repo", "{type: sqlite, path: data/online.db}", "sqlite:///data/registry.db", now)
    else:
        redis_url = request.getfixturevalue("redis_url")
        registry = request.getfixturevalue("fresh_postgres_db")
        online = f"{{type: redis, url: '{redis_url}', key_prefix: 'in{uuid.uuid4().hex[:10]}'}}"
        store = _build(tmp_path / "repo", online, registry, now)
    try:
        yield store, now
    finally:
        try:
            for view in ("stats", "live"):
                store.online_store.delete_view(view)
        finally:
            store.close()


def _push(client, df: dict, source: str = "live_push", to: str = "online"):
    return client.post("/push", json={"push_source_name": source, "df": df, "to": to})


def _lookup(client, features: list[str], entities: dict):
    return client.post("/get-online-features", json={"features": features, "entities": entities})


def _column(body: dict, name: str) -> dict:
    return body["results"][body["metadata"]["feature_names"].index(name)]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


# ------------------------------------------------------------------------------ time: one rule


@pytest.mark.parametrize("bad", [1_700_000_000_000_000_000, 9_000_000_000_000_000_000, 9e18])
def test_a_push_with_an_epoch_ns_or_9e18_time_is_422_and_the_entity_still_serves(backend, bad):
    store, now = backend
    client = TestClient(create_app(store))
    assert _push(client, {"driver_id": [7], "ts": [_iso(now)], "speed": [1.0]}).status_code == 200
    for to in ("online", "offline", "online_and_offline"):
        message = _error(_push(client, {"driver_id": [7], "ts": [bad], "speed": [2.0]}, to=to), 422)
        assert "'ts'" in message
    with pytest.raises(InvalidInputError, match="'ts'"):
        store.push("live_push", {"driver_id": [7], "ts": [bad], "speed": [2.0]})
    # Nothing was written: the entity serves its value, alone and in a batch, by REST and SDK.
    body = _lookup(client, ["live:speed"], {"driver_id": [7, 8, 1001]}).json()
    assert _column(body, "speed")["values"][:2] == [1.0, None]
    assert _column(body, "speed")["statuses"][:2] == ["PRESENT", "NOT_FOUND"]
    assert store.get_online_features(["live:speed"], {"driver_id": [7]}).to_dict()["speed"] == [1.0]
    assert store.offline_store.appends.files("live") == []  # no offline row either
    # A newer push still replaces the row (the event-time monotonic path was not poisoned).
    assert _push(client, {"driver_id": [7], "ts": [_iso(now + timedelta(seconds=1))], "speed": [3.0]}).json()[
        "online_written"] == 1
    assert store.get_online_features(["live:speed"], {"driver_id": [7]}).to_dict()["speed"] == [3.0]


def test_integer_times_are_epoch_milliseconds_on_every_path(backend):
    store, now = backend
    client = TestClient(create_app(store))
    ms = _ms(now) - 1234  # not a whole second: a unit mistake cannot round to the right answer
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    # Direct push, REST and SDK: the event time and a Timestamp feature.
    assert _push(client, {"driver_id": [21], "ts": [ms], "seen": [ms - 60_000]}).status_code == 200
    store.push("live_push", {"driver_id": [22], "ts": [ms], "seen": [ms - 60_000]})
    body = _lookup(client, ["live:seen"], {"driver_id": [21, 22]}).json()
    assert _column(body, "seen")["statuses"] == ["PRESENT", "PRESENT"]  # not a 1970 row, OUTSIDE_MAX_AGE
    assert _column(body, "seen")["event_timestamps"] == [_iso(t)] * 2
    assert _column(body, "seen")["values"] == [_iso(t - timedelta(minutes=1))] * 2
    # A Kafka message (the stream job's parser, also what a push to a Kafka-topic push source is
    # checked with) reads the same integer as the same instant.
    columns = [EventColumn("driver_id", "driver_id", Int64, True), EventColumn("ts", "ts", Timestamp, True)]
    assert events.parse(json.dumps({"driver_id": 21, "ts": ms}), columns) == [21, events.time_text(t)]
    # Request data of an on-demand view.
    body = _lookup(client, ["asked:asked_ms"], {"driver_id": [21, 22], "asked_at": [ms, _iso(t)]}).json()
    assert _column(body, "asked_ms")["values"] == [ms, ms]
    assert "asked_at" in _error(_lookup(client, ["asked:asked_ms"], {"driver_id": [21], "asked_at": [9e18]}), 422)
    assert "asked_at" in _error(_lookup(client, ["asked:asked_ms"],
                                        {"driver_id": [21], "asked_at": [1_700_000_000_000_000_000]}), 422)


@pytest.mark.parametrize("value, reason", [
    (1_700_000_000_000_000_000, RANGE), (253_402_300_799_999, RANGE), (-9_500_000_000_000, RANGE),
    ("1500-01-01T00:00:00Z", RANGE), (True, "true/false are not timestamps"), (1.7e12, "should be a timestamp"),
])
def test_kafka_messages_take_the_same_times_or_are_dead_lettered_naming_the_field(value, reason):
    columns = [EventColumn("ts", "ts", Timestamp, True)]
    assert events.parse(json.dumps({"ts": 1_700_000_000_000}), columns) == ["2023-11-14 22:13:20.000000"]
    with pytest.raises(events.EventError, match="'ts'") as err:
        events.parse(json.dumps({"ts": value}), columns)
    assert reason in str(err.value)


def test_a_push_to_a_kafka_topic_push_source_is_checked_by_the_same_rules(backend):
    """Refused before the broker (port 1, never reached) is contacted: a 422 naming the column."""
    store, now = backend
    client = TestClient(create_app(store))
    for df in ({"driver_id": [1], "ts": [1_700_000_000_000_000_000], "speed": [1.0], "ratio": [1.0]},
               {"driver_id": [True], "ts": [_iso(now)], "speed": [1.0], "ratio": [1.0]},
               {"driver_id": [1], "ts": [_iso(now)], "speed": [1.0], "ratio": [1e39]}):
        message = _error(_push(client, df, source="stream_push"), 422)
        assert any(f"'{c}'" in message for c in df), message


def test_a_source_integer_time_column_is_epoch_milliseconds(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    store = FeatureStore(write_repo(tmp_path, CODE + CLOCK, tables=tables(now)))
    store.apply()
    store.materialize(now - timedelta(days=3), now + timedelta(seconds=1), ["clock"], progress=False)
    clock = store.get_online_features(["clock:tick"], {"driver_id": [1001, 1002]})
    assert clock.to_dict()["tick"] == [1, 2]
    assert [_iso(x) for x in clock.event_timestamps["tick"]] == [_iso(now), _iso(now - timedelta(minutes=1))]
    entity = pa.table({"driver_id": [1003], "event_timestamp": pa.array([now], TS)})
    assert store.get_historical_features(entity, ["clock:tick"]).to_arrow().column("tick").to_pylist() == [3]


def test_out_of_range_source_and_entity_times_are_errors_naming_the_column(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    data = tables(now)
    bad_ms = data["clock"].set_column(1, "ts_ms", pa.array([_ms(now), 1_700_000_000_000_000_000, _ms(now)]))
    bad_ts = data["stats"].set_column(1, "ts", pa.array([now, datetime(1600, 1, 1, tzinfo=UTC), now], TS))
    store = FeatureStore(write_repo(tmp_path, CODE + CLOCK, tables={**data, "clock": bad_ms, "stats": bad_ts}))
    store.apply()
    with pytest.raises(InvalidInputError, match=r"'ts_ms' has 1700000000000000000 \(epoch milliseconds\)"):
        store.materialize(None, now + timedelta(seconds=1), ["clock"], progress=False)
    with pytest.raises(InvalidInputError, match="'stats_src' column 'ts' has 1600-01-01"):
        store.materialize(None, now + timedelta(seconds=1), ["stats"], progress=False)
    # An interval without those rows materializes.
    assert store.materialize(now - timedelta(days=1), now + timedelta(seconds=1), ["stats"], progress=False).rows == 2
    entity = pa.table({"driver_id": [1001], "event_timestamp": pa.array([datetime(3000, 1, 1)], pa.timestamp("us"))})
    with pytest.raises(InvalidInputError, match="entity_df column 'event_timestamp' has 3000-01-01"):
        store.get_historical_features(entity, ["stats:trips"]).to_arrow()


# ------------------------------------------------------------------------------ values


def test_bool_and_float_are_not_integer_keys_in_pushes(backend):
    store, now = backend
    client = TestClient(create_app(store))
    for key in (True, 1.0):
        assert "driver_id" in _error(_push(client, {"driver_id": [key], "ts": [_iso(now)], "speed": [1.0]}), 422)
        with pytest.raises(InvalidInputError, match="driver_id"):
            store.push("live_push", {"driver_id": [key], "ts": [now], "speed": [1.0]})
    assert "'speed'" in _error(_push(client, {"driver_id": [1], "ts": [_iso(now)], "speed": [True]}), 422)
    assert store.get_online_features(["live:speed"], {"driver_id": [1]}).statuses["speed"] == ["NOT_FOUND"]


def test_a_column_mixing_true_false_with_numbers_is_refused_not_read_as_zero(backend):
    """Found by the property suite: Arrow reads ``[0.0, false]`` as ``[0.0, 0.0]`` before the type rules
    see the values, so the kinds are checked first."""
    store, now = backend
    client = TestClient(create_app(store))
    body = {"driver_id": [8, 8], "ts": [_iso(now)] * 2, "speed": [0.5, False]}
    assert "'df.speed' mixes number and true/false" in _error(_push(client, body), 422)
    with pytest.raises(InvalidInputError, match="'speed' mixes number and true/false"):
        store.push("live_push", {"driver_id": [8, 8], "ts": [now, now], "speed": [0.5, False]})
    with pytest.raises(InvalidInputError, match="'driver_id' mixes number and str"):
        store.push("live_push", {"driver_id": [8, "8"], "ts": [now, now], "speed": [0.5, 0.5]})
    assert store.get_online_features(["live:speed"], {"driver_id": [8]}).statuses["speed"] == ["NOT_FOUND"]


@pytest.mark.parametrize("key", ["1001", "١٠٠١", "1_001", " 1001 ", True, 1.0])
def test_lookup_keys_for_an_integer_join_key_must_be_json_integers(backend, key):
    store, _ = backend
    app = create_app(store)
    body = {"features": ["stats:trips"], "entities": {"driver_id": [1001, key]}}
    with _server(app, "127.0.0.1") as url:  # a real server: the fast path and the full route
        import httpx

        r = httpx.post(f"{url}/get-online-features", json=body, timeout=10)
        assert "driver_id" in _error(r, 422)
        ok = httpx.post(f"{url}/get-online-features", json={**body, "entities": {"driver_id": [1001]}}, timeout=10)
        assert _column(ok.json(), "trips")["values"] == [10]
    with pytest.raises(InvalidInputError, match="driver_id"):
        store.get_online_features(["stats:trips"], {"driver_id": [1001, key]})


def test_float32_range_nan_and_infinities(backend):
    store, now = backend
    client = TestClient(create_app(store))
    ts = _iso(now)
    assert "'ratio'" in _error(_push(client, {"driver_id": [5], "ts": [ts], "ratio": [1e39]}), 422)
    assert "'ratio'" in _error(_push(client, {"driver_id": [5], "ts": [ts], "ratio": [-3.5e38]}), 422)
    for token in ("NaN", "Infinity", "-Infinity"):  # what Python's json writes for them
        raw = '{"push_source_name": "live_push", "df": {"driver_id": [5], "ts": ["%s"], "speed": [%s]}}' % (ts, token)
        r = client.post("/push", content=raw, headers={"content-type": "application/json"})
        assert "'speed'" in _error(r, 422)
    with pytest.raises(InvalidInputError, match="'speed'"):
        store.push("live_push", {"driver_id": [5], "ts": [now], "speed": [math.nan]})
    with pytest.raises(InvalidInputError, match="'ratio'"):
        store.push("live_push", pa.table({"driver_id": [5], "ts": pa.array([now], TS),
                                          "ratio": pa.array([math.inf], pa.float32())}))
    assert store.get_online_features(["live:speed"], {"driver_id": [5]}).statuses["speed"] == ["NOT_FOUND"]
    # The largest Float32 is accepted; a pandas NaN means missing (pandas' own convention).
    import pandas as pd

    assert _push(client, {"driver_id": [5], "ts": [ts], "ratio": [3.4028235e38]}).status_code == 200
    store.push("live_push", pd.DataFrame({"driver_id": [6], "ts": [now], "speed": [math.nan]}))
    body = _lookup(client, ["live:ratio", "live:speed"], {"driver_id": [5, 6]}).json()
    assert _column(body, "ratio")["values"][0] == pytest.approx(3.4028234663852886e38)
    assert _column(body, "speed")["statuses"] == ["NULL_VALUE", "NULL_VALUE"]
    # Stream messages: dead letters naming the field.
    columns = [EventColumn("rate", "rate", Float32, False), EventColumn("score", "score", Float64, False)]
    for raw, field in (('{"rate": 1e39, "score": 1}', "rate"), ('{"rate": 1, "score": NaN}', "score"),
                       ('{"rate": -Infinity, "score": 1}', "rate")):
        with pytest.raises(events.EventError, match=f"'{field}'"):
            events.parse(raw, columns)
    # A batch source's NaN and infinities are missing values: null online.
    body = _lookup(client, ["stats:rate", "stats:score", "stats:scores"], {"driver_id": [1001, 1002, 1003]}).json()
    assert _column(body, "score")["values"] == [1.5, None, 3.5]
    assert _column(body, "score")["statuses"] == ["PRESENT", "NULL_VALUE", "PRESENT"]
    assert _column(body, "rate")["statuses"] == ["PRESENT", "PRESENT", "NULL_VALUE"]
    assert _column(body, "scores")["values"][0] == [1.0, None]


def test_the_python_client_sends_what_the_rules_take(backend):
    """NaN in a dict is refused naming the column (only a DataFrame's NaN means missing); bytes travel as
    base64."""
    import pandas as pd

    from serving.client import FeatureClient

    store, now = backend
    with _server(create_app(store), "127.0.0.1") as url, FeatureClient(url, timeout=10) as fc:
        with pytest.raises(InvalidInputError, match="'speed'"):
            fc.push("live_push", {"driver_id": [31], "ts": [now], "speed": [math.nan]})
        fc.push("live_push", pd.DataFrame({"driver_id": [31], "ts": [now], "speed": [math.nan], "tag": [b"\x00\xff"]}))
        fc.push("live_push", {"driver_id": [32], "ts": [_ms(now)], "speed": [1.0], "tag": ["AP8="]})
        got = fc.get_online_features(["live:speed", "live:tag"], entities={"driver_id": [31, 32]})
        assert got.to_dict()["speed"] == [None, 1.0]
        assert got.to_dict()["tag"] == ["AP8=", "AP8="]
    assert store.get_online_features(["live:tag"], {"driver_id": [31, 32]}).to_dict()["tag"] == [b"\x00\xff"] * 2


# ------------------------------------------------------------------------------ who may push where


def test_a_batch_views_name_cannot_be_pushed_to(backend):
    store, now = backend
    client = TestClient(create_app(store))
    df = {"driver_id": [1001], "ts": [_iso(now)], "trips": [999]}
    message = _error(_push(client, df, source="stats"), 422)
    assert "'stats'" in message and "PushSource" in message
    with pytest.raises(InvalidInputError, match="PushSource"):
        store.push("stats", df)
    assert store.get_online_features(["stats:trips"], {"driver_id": [1001]}).to_dict()["trips"] == [10]
    # A view fed by a push source may still be pushed to by its own name.
    assert _push(client, {"driver_id": [9], "ts": [_iso(now)], "speed": [1.0]}, source="live").status_code == 200


def _other_address() -> str | None:
    """This machine's address on its non-loopback interface, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.254", 9))  # no packet is sent: this only picks the route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@contextmanager
def _server(app, host: str) -> Iterator[str]:
    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_without_api_keys_only_local_clients_may_push(tmp_path):
    import httpx

    now = datetime.now(UTC).replace(microsecond=0)
    store = _build(tmp_path / "repo", "{type: sqlite, path: data/online.db}", "sqlite:///data/registry.db", now)
    push = {"push_source_name": "live_push", "df": {"driver_id": [1], "ts": [_iso(now)], "speed": [1.0]}}
    read = {"features": ["live:speed"], "entities": {"driver_id": [1001]}}
    try:
        app = create_app(store)
        for client, status in ((("203.0.113.9", 4000), 403), (("2001:db8::1", 4000), 403),
                               (("127.0.0.1", 4000), 200), (("::1", 4000), 200), (("::ffff:127.0.0.1", 4000), 200),
                               (("testclient", 50000), 200)):
            c = TestClient(app, client=client)
            r = c.post("/push", json=push)
            assert r.status_code == status, (client, r.text)
            assert c.post("/get-online-features", json=read).status_code == 200  # reads stay open
        assert "--allow-remote-writes" in TestClient(app, client=("203.0.113.9", 1)).post("/push", json=push).text
        opened = TestClient(create_app(store, allow_remote_writes=True), client=("203.0.113.9", 1))
        assert opened.post("/push", json=push).status_code == 200
        keyed = TestClient(create_app(store, api_keys={"w": {"read", "write"}}), client=("203.0.113.9", 1))
        assert keyed.post("/push", json=push, headers={"X-API-Key": "w"}).status_code == 200
        assert keyed.post("/push", json=push).status_code == 401
        # Over TCP: a client reaching the server through a non-loopback address is refused.
        address = _other_address()
        if address is None:
            pytest.skip("no non-loopback interface to connect through")
        with _server(app, address) as url:
            r = httpx.post(f"{url}/push", json=push, timeout=10)
            assert r.status_code == 403 and "--allow-remote-writes" in r.text, r.text
            assert httpx.post(f"{url}/get-online-features", json=read, timeout=10).status_code == 200
        with _server(app, "127.0.0.1") as url:
            assert httpx.post(f"{url}/push", json=push, timeout=10).status_code == 200
    finally:
        store.close()


@pytest.mark.parametrize("flag, status", [([], 403), (["--allow-remote-writes"], 200)])
def test_serve_command_opens_anonymous_remote_writes_only_when_asked(tmp_path, flag, status):
    import httpx

    address = _other_address()
    if address is None:
        pytest.skip("no non-loopback interface to connect through")
    now = datetime.now(UTC).replace(microsecond=0)
    store = _build(tmp_path / "repo", "{type: sqlite, path: data/online.db}", "sqlite:///data/registry.db", now)
    store.close()
    with socket.socket() as s:
        s.bind((address, 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "FEATURESTORE_API_KEYS"}
    proc = subprocess.Popen([sys.executable, "-m", "featurestore.cli", "--repo", str(store.repo_path), "serve",
                             "--host", address, "--port", str(port), "--log-level", "warning", *flag],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://{address}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        push = {"push_source_name": "live_push", "df": {"driver_id": [1], "ts": [_iso(now)], "speed": [1.0]}}
        assert httpx.post(f"{url}/push", json=push, timeout=10).status_code == status
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_the_spark_engine_reads_integer_source_times_as_the_local_engine_does(tmp_path):
    from featurestore.config import load_config

    now = datetime.now(UTC).replace(microsecond=0)
    data = tables(now)
    repo = write_repo(tmp_path, CODE + CLOCK, tables=data)
    local = FeatureStore(repo)
    local.apply()
    spark = FeatureStore(repo, config=load_config(repo).model_copy(update={"engine": {
        "type": "spark", "master": "local[1]", "conf": {"spark.sql.shuffle.partitions": "1"}}}))
    # Rows at now (1001), now - 1 min (1002), now - 2 min (1003): entity times on both sides of them.
    entity = pa.table({"driver_id": pa.array([1001, 1002, 1003, 1003], pa.int64()), "event_timestamp": pa.array(
        [now, now - timedelta(minutes=2), now, now - timedelta(minutes=3)], TS)})
    expected = [1, None, 3, None]
    assert local.get_historical_features(entity, ["clock:tick"]).to_arrow().column("tick").to_pylist() == expected
    assert spark.get_historical_features(entity, ["clock:tick"]).to_arrow().column("tick").to_pylist() == expected
    bad = data["clock"].set_column(1, "ts_ms", pa.array([_ms(now), 1_700_000_000_000_000_000, _ms(now)]))
    write_repo(tmp_path, CODE + CLOCK, tables={"clock": bad})
    with pytest.raises(Exception, match=r"'ts_ms' has 1700000000000000000 \(epoch milliseconds\)"):
        spark.get_historical_features(entity, ["clock:tick"]).to_arrow()
