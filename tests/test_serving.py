"""The REST feature server: Feast-shaped lookups and pushes, errors, auth, metrics, registry, the Python
client against a real uvicorn server, and the ``featurestore serve`` command.

No mocks: each test builds a repo on disk, applies it, materializes SQLite or a real Redis, and talks
to ``serving.app.create_app`` through FastAPI's TestClient or over TCP.
"""

from __future__ import annotations

import base64
import json
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
from featurestore.errors import (
    BackendUnavailableError,
    FeatureNotFound,
    FeatureViewNotFound,
    InvalidInputError,
)
from featurestore.ports.online_store import EventTimes
from serving.app import create_app
from serving.client import AuthenticationError, FeatureClient, PermissionDeniedError, RequestTooLargeError
from serving.http_protocol import CoalescingHttpToolsProtocol
from tests.repo_helpers import write_repo

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
EPOCH = "1970-01-01T00:00:00Z"

CODE = """
from datetime import timedelta
from featurestore import (Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource,
                          on_demand_feature_view)
from featurestore.types import Array, Bool, Bytes, Float32, Float64, Int64, String, Timestamp

driver = Entity(name="driver", join_keys=["driver_id"], description="a driver")
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=30),
    source=FileSource(name="stats_src", path="data/stats.parquet", timestamp_field="ts"),
    schema=[Field(name="rate", dtype=Float32), Field(name="trips", dtype=Int64),
            Field(name="label", dtype=String), Field(name="score", dtype=Float64),
            Field(name="active", dtype=Bool), Field(name="blob", dtype=Bytes),
            Field(name="seen", dtype=Timestamp), Field(name="hist", dtype=Array(Int64))])
short = FeatureView(name="short", entities=[driver], ttl=timedelta(hours=1),
    source=FileSource(name="short_src", path="data/short.parquet", timestamp_field="ts"),
    schema=[Field(name="hits", dtype=Int64)])
live_push = PushSource(name="live_push",
    batch_source=FileSource(name="live_src", path="data/live.parquet", timestamp_field="ts"))
live = FeatureView(name="live", entities=[driver], ttl=timedelta(days=1), source=live_push,
    schema=[Field(name="speed", dtype=Float64)])
svc = FeatureService(name="svc", features=[stats[["rate", "trips"]], short])

@on_demand_feature_view(sources=[stats, RequestSource(schema=[Field("bonus", Float64)])],
                        schema=[Field("boosted", Float64)])
def boost(inputs):
    return {"boosted": [None if s is None or b is None else s + b
                        for s, b in zip(inputs["score"], inputs["bonus"])]}

@on_demand_feature_view(sources=[stats], schema=[Field("boom", Float64)])
def broken(inputs):
    return {"boom": [1 / 0 for _ in inputs["trips"]]}

boosted_svc = FeatureService(name="boosted_svc", features=[stats[["trips"]], boost])
"""

N_DRIVERS = 20  # driver ids 1..20; driver 3 has a null label; 99 is unknown
STATS_FEATURES = ["rate", "trips", "label", "score", "active", "blob", "seen", "hist"]


def tables(now: datetime) -> dict[str, pa.Table]:
    ids = list(range(1, N_DRIVERS + 1))
    ts = [now - timedelta(minutes=5 + i) for i in ids]
    stats = pa.table({
        "driver_id": pa.array(ids, pa.int64()),
        "ts": pa.array(ts, TS),
        "rate": pa.array([i / 8 for i in ids], pa.float32()),
        "trips": pa.array([i * 10 for i in ids], pa.int64()),
        "label": pa.array([None if i == 3 else f"l{i}" for i in ids], pa.string()),
        "score": pa.array([i + 0.25 for i in ids], pa.float64()),
        "active": pa.array([i % 2 == 0 for i in ids], pa.bool_()),
        "blob": pa.array([bytes([i, 0, 255]) for i in ids], pa.binary()),
        "seen": pa.array([now - timedelta(days=i) + timedelta(microseconds=i) for i in ids], TS),
        "hist": pa.array([[i, i + 1] for i in ids], pa.list_(pa.int64())),
    })
    short = pa.table({"driver_id": pa.array([1, 2], pa.int64()),
                      "ts": pa.array([now - timedelta(minutes=10), now - timedelta(minutes=90)], TS),
                      "hits": pa.array([5, 7], pa.int64())})
    live = pa.table({"driver_id": pa.array([1], pa.int64()), "ts": pa.array([now - timedelta(hours=2)], TS),
                     "speed": pa.array([1.5], pa.float64())})
    return {"stats": stats, "short": short, "live": live}


def redis_yaml(url: str) -> str:
    return f"{{type: redis, url: '{url}', key_prefix: 'srv{uuid.uuid4().hex[:10]}'}}"


def build_store(path: Path, online_store: str, now: datetime | None = None) -> FeatureStore:
    """A repo at ``path``, applied and materialized up to ``now``."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    store = FeatureStore(write_repo(path, CODE, online_store=online_store, tables=tables(now)))
    store.apply()
    store.materialize(now - timedelta(days=3), now + timedelta(seconds=1), progress=False)
    return store


def drop_store(store: FeatureStore) -> None:
    try:
        for view in ("stats", "short", "live"):
            store.online_store.delete_view(view)
    finally:
        store.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn_server(app) -> Iterator[str]:
    """``app`` on a real uvicorn server in a thread, on a free loopback port; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, http=CoalescingHttpToolsProtocol))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def lookup(client, features=None, entities=None, **extra):
    body = {"entities": entities if entities is not None else {"driver_id": [1, 2, 3, 99]}, **extra}
    if features is not None:
        body["features"] = features
    return client.post("/get-online-features", json=body)


def column(response_json: dict, name: str) -> dict:
    return response_json["results"][response_json["metadata"]["feature_names"].index(name)]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("redis_cluster", marks=pytest.mark.redis_cluster)])
def store(request, tmp_path) -> Iterator[FeatureStore]:
    if request.param == "sqlite":
        yaml = "{type: sqlite, path: data/online.db}"
    elif request.param == "redis":
        yaml = redis_yaml(request.getfixturevalue("redis_url"))
    else:
        yaml = redis_yaml(request.getfixturevalue("redis_cluster_url"))[:-1] + ", cluster: true}"
    s = build_store(tmp_path / "repo", yaml)
    yield s
    drop_store(s)


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[FeatureStore]:
    s = build_store(tmp_path / "repo", "{type: sqlite, path: data/online.db}")
    yield s
    drop_store(s)


@pytest.fixture
def client(store) -> Iterator[TestClient]:
    with TestClient(create_app(store)) as c:
        yield c


# ------------------------------------------------------------------------------------------- lookups


def test_lookup_equals_store_response(store, client):
    refs = [f"stats:{f}" for f in STATS_FEATURES] + ["short:hits"]
    entities = {"driver_id": [1, 2, 3, 99, 1]}
    for full in (False, True):
        r = lookup(client, refs, entities, full_feature_names=full)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        expected = store.get_online_features(refs, entities, full_feature_names=full).to_rest()
        assert r.json() == expected
    body = r.json()
    assert body["metadata"]["feature_names"][:3] == ["driver_id", "stats__rate", "stats__trips"]
    assert set(body["results"][0]) == {"values", "statuses", "event_timestamps"}


def test_lookup_of_many_entities_equals_store_response(store, client):
    """From 8 keys on rows are decoded as one numpy array and event times stay numbers until rendered
    (``EventTimes``): found, expired (OUTSIDE_MAX_AGE) and unknown keys all answer as the row-by-row
    path does, and the Python response holds tz-aware datetimes."""
    refs = ["short:hits", "stats:trips", "stats:rate"]
    entities = {"driver_id": [2, 1, 99, 3, 4, 5, 6, 7, 8, 9, 1]}
    r = lookup(client, refs, entities)
    assert r.status_code == 200, r.text
    response = store.get_online_features(refs, entities)
    assert r.json() == response.to_rest()
    hits = column(r.json(), "hits")
    assert hits["values"][:3] == [None, 5, None] and hits["values"][-1] == 5
    assert hits["statuses"][:4] == ["OUTSIDE_MAX_AGE", "PRESENT", "NOT_FOUND", "NOT_FOUND"]
    assert hits["event_timestamps"][2] == EPOCH and hits["event_timestamps"][1] != EPOCH
    stamps = response.event_timestamps["hits"]
    assert isinstance(stamps, EventTimes)  # the columnar path was taken
    assert len(stamps) == 11 and stamps[2] is None and stamps[3] is None
    assert stamps[1].tzinfo is not None and stamps[1] == stamps[-1]
    assert list(stamps) == [stamps[i] for i in range(11)]
    trips = column(r.json(), "trips")
    assert trips["values"][:3] == [20, 10, None] and trips["statuses"][2] == "NOT_FOUND"


def test_fast_path_takes_only_int64_and_string_entity_values():
    """Anything else (an integer outside int64, a bool, a float, null) is left to the full route, which
    answers it with its own errors."""
    from serving.fast_path import parse

    def body(values) -> bytes:
        return json.dumps({"features": ["stats:trips"], "entities": {"driver_id": values}}).encode()

    for ok in ([1, 2, 3], [-(2**63), 2**63 - 1], ["7", 8], [], ["a"]):
        parsed = parse(body(ok))
        assert parsed is not None and parsed.entities == {"driver_id": ok}, ok
    for refused in ([1, 2**63], [-(2**63) - 1], [1, True], [1.5], [None], [[1]]):
        assert parse(body(refused)) is None, refused


def test_fast_path_answers_like_the_full_route(store):
    """Plain lookups are answered by the app object itself (serving.fast_path); with it switched off the
    FastAPI route answers. Same bodies, statuses and metrics either way, for what the fast path serves
    and for what it hands over (request fields of on-demand views, errors)."""
    refs = [f"stats:{f}" for f in STATS_FEATURES] + ["short:hits"]
    bodies = [
        {"features": refs, "entities": {"driver_id": [1, 2, 3, 99, 1]}},
        {"features": refs, "entities": {"driver_id": ["1", 2]}, "full_feature_names": True},
        {"feature_service": "svc", "entities": {"driver_id": [1, 2, 99] * 4}},
        {"features": ["stats:rate"], "entities": {"driver_id": []}},
        {"features": ["stats:rate"], "entities": {"driver_id": [1], "unused": [1.5]}},  # handed over
        {"features": ["stats:rate"], "entities": {"driver_id": [1, "x"]}},  # 422 from the route
        {"features": ["nope:rate"], "entities": {"driver_id": [1]}},  # 404
        {"features": ["stats:rate"], "entities": {"driver_id": [1]}, "extra": 1},  # 422
    ]
    fast, full = create_app(store), create_app(store)
    full.fast_lookup = None
    with TestClient(fast) as a, TestClient(full) as b:
        for body in bodies:
            ra, rb = a.post("/get-online-features", json=body), b.post("/get-online-features", json=body)
            assert (ra.status_code, ra.json()) == (rb.status_code, rb.json()), body
            assert ra.headers["content-type"] == rb.headers["content-type"]
        metrics = [c.get("/metrics").text for c in (a, b)]

    def counted(text: str) -> list[str]:
        return sorted(line for line in text.splitlines() if "_created" not in line and (
            line.startswith(("featurestore_online", "featurestore_store_err"))
            or ("_count{" in line and "get-online-features" in line)))

    assert counted(metrics[0]) == counted(metrics[1])
    assert any('status="200"' in line for line in counted(metrics[0]))


def test_fast_path_admits_exactly_the_keys_the_route_admits(sqlite_store):
    keys = {"r": {"read"}, "w": {"write"}}
    fast, full = create_app(sqlite_store, api_keys=keys), create_app(sqlite_store, api_keys=keys)
    full.fast_lookup = None
    body = {"features": ["stats:trips"], "entities": {"driver_id": [2]}}
    header_sets = [[], [("x-api-key", "r")], [("x-api-key", "w")], [("x-api-key", "nope")],
                   [("authorization", "Bearer r")], [("authorization", "bearer   r  ")],
                   [("authorization", "Basic r")], [("x-api-key", ""), ("authorization", "Bearer r")],
                   [("x-api-key", "nope"), ("x-api-key", "r")], [("x-api-key", "w"), ("authorization", "Bearer r")]]
    with TestClient(fast) as a, TestClient(full) as b:
        for headers in header_sets:
            ra = a.post("/get-online-features", json=body, headers=headers)
            rb = b.post("/get-online-features", json=body, headers=headers)
            assert (ra.status_code, ra.json()) == (rb.status_code, rb.json()), headers
        assert a.post("/get-online-features", json=body, headers=[("x-api-key", "r")]).status_code == 200


def test_lookup_values_types_and_statuses(store, client):
    r = lookup(client, [f"stats:{f}" for f in STATS_FEATURES])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metadata"]["feature_names"] == ["driver_id", *STATS_FEATURES]
    assert column(body, "driver_id") == {"values": [1, 2, 3, 99], "statuses": ["PRESENT"] * 4,
                                         "event_timestamps": [EPOCH] * 4}
    assert column(body, "trips")["values"] == [10, 20, 30, None]
    assert column(body, "trips")["statuses"] == ["PRESENT", "PRESENT", "PRESENT", "NOT_FOUND"]
    assert column(body, "rate")["values"] == [0.125, 0.25, 0.375, None]
    assert column(body, "label")["values"] == ["l1", "l2", None, None]
    assert column(body, "label")["statuses"] == ["PRESENT", "PRESENT", "NULL_VALUE", "NOT_FOUND"]
    assert column(body, "active")["values"] == [False, True, False, None]
    assert column(body, "blob")["values"][0] == base64.b64encode(bytes([1, 0, 255])).decode()
    assert column(body, "hist")["values"][:2] == [[1, 2], [2, 3]]
    seen = datetime.fromisoformat(column(body, "seen")["values"][0].replace("Z", "+00:00"))
    assert seen.microsecond == 1 and column(body, "seen")["values"][0].endswith("Z")
    stamps = column(body, "trips")["event_timestamps"]
    assert stamps[3] == EPOCH and all(s.endswith("Z") for s in stamps)
    assert datetime.now(UTC) - datetime.fromisoformat(stamps[0].replace("Z", "+00:00")) < timedelta(hours=1)


def test_feature_service_and_ttl_statuses(store, client):
    r = client.post("/get-online-features", json={"feature_service": "svc", "entities": {"driver_id": [1, 2, 99]}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metadata"]["feature_names"] == ["driver_id", "rate", "trips", "hits"]
    assert body == store.get_online_features("svc", {"driver_id": [1, 2, 99]}).to_rest()
    hits = column(body, "hits")
    assert hits["values"] == [5, None, None]
    assert hits["statuses"][0] == "PRESENT" and hits["statuses"][2] == "NOT_FOUND"
    # driver 2's hit is 90 minutes old against a 1 hour TTL: never served. SQLite keeps the row and
    # reports it expired; Redis may have let the key expire already.
    expected = {"OUTSIDE_MAX_AGE"} if store.config.online_store["type"] == "sqlite" else {"OUTSIDE_MAX_AGE",
                                                                                          "NOT_FOUND"}
    assert hits["statuses"][1] in expected


def test_outside_max_age_over_http(sqlite_store):
    with TestClient(create_app(sqlite_store)) as c:
        r = lookup(c, ["short:hits"], {"driver_id": [1, 2]})
    assert column(r.json(), "hits") == {
        "values": [5, None], "statuses": ["PRESENT", "OUTSIDE_MAX_AGE"],
        "event_timestamps": column(r.json(), "hits")["event_timestamps"]}
    assert column(r.json(), "hits")["event_timestamps"][1] != EPOCH


def test_on_demand_features_with_request_fields(store, client):
    entities = {"driver_id": [1, 2, 99], "bonus": [0.5, None, 1.0]}
    r = lookup(client, ["stats:trips", "boost:boosted"], entities)
    assert r.status_code == 200, r.text
    assert r.json() == store.get_online_features(["stats:trips", "boost:boosted"], entities).to_rest()
    assert column(r.json(), "boosted")["values"] == [1.75, None, None]
    r = client.post("/get-online-features", json={"feature_service": "boosted_svc", "entities": entities})
    assert r.json()["metadata"]["feature_names"] == ["driver_id", "trips", "boosted"]
    r = lookup(client, ["boost:boosted"], {"driver_id": [1]})  # the request field is missing
    assert r.status_code == 422 and "'bonus'" in error_of(r)["message"]
    for bad in ("abc", [1.0]):  # a request field of the wrong type is the client's error, not the view's
        r = lookup(client, ["boost:boosted"], {"driver_id": [1], "bonus": [bad]})
        assert r.status_code == 422 and "'bonus'" in error_of(r)["message"], r.text
    r = lookup(client, ["broken:boom"], {"driver_id": [1]})  # the user's function fails: named, no trace
    assert r.status_code == 500
    err = error_of(r)
    assert err["type"] == "OnDemandFeatureError" and "broken" in err["message"]
    text = client.get("/metrics").text
    assert 'featurestore_feature_freshness_seconds{view="stats"}' in text


def test_text_for_an_integer_join_key_is_refused_and_empty_entities_are_fine(client):
    r = lookup(client, ["stats:trips"], {"driver_id": ["1", 2]})  # text is never a number
    assert r.status_code == 422 and "driver_id" in r.json()["error"]["message"]
    r = lookup(client, ["stats:trips"], {"driver_id": []})
    assert r.status_code == 200 and column(r.json(), "trips")["values"] == []


# -------------------------------------------------------------------------------------------- errors


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"type", "message"} <= set(body["error"])
    assert "Traceback" not in response.text
    return body["error"]


def test_unknown_view_feature_and_service_are_404_naming_them(client):
    r = lookup(client, ["nope:rate"])
    assert r.status_code == 404
    err = error_of(r)
    assert err["type"] == "FeatureViewNotFound" and "'nope'" in err["message"]
    r = lookup(client, ["stats:nope"])
    assert r.status_code == 404
    err = error_of(r)
    assert err["type"] == "FeatureNotFound" and "'nope'" in err["message"] and "'stats'" in err["message"]
    for name in ("no_such_service", "stats:rate"):
        r = client.post("/get-online-features", json={"feature_service": name, "entities": {"driver_id": [1]}})
        assert r.status_code == 404 and name in error_of(r)["message"]


@pytest.mark.parametrize("body, field", [
    ({"features": ["stats:rate"], "entities": {"driver_id": [{"id": 1}]}}, "entities.driver_id.0"),
    ({"features": ["stats:rate"], "entities": {"driver_id": [1, [2, {}]]}}, "entities.driver_id.1"),
    ({"features": ["stats:rate"], "entities": {"driver_id": 1}}, "entities.driver_id"),
    ({"features": ["stats:rate"]}, "entities"),
    ({"features": "stats:rate", "entities": {"driver_id": [1]}}, "features"),
    ({"features": [], "entities": {"driver_id": [1]}}, "features"),
    ({"features": ["stats:rate"], "entities": {"driver_id": [1]}, "full_feature_names": "yes"},
     "full_feature_names"),
    ({"features": ["stats:rate"], "entities": {"driver_id": [1]}, "extra": 1}, "extra"),
])
def test_malformed_lookup_is_422_naming_the_field(client, body, field):
    r = client.post("/get-online-features", json=body)
    assert r.status_code == 422, r.text
    err = error_of(r)
    assert err["type"] == "ValidationError"
    assert err["field"] == field and f"'{field}'" in err["message"]


def test_semantic_input_errors_are_422_naming_the_problem(client):
    r = client.post("/get-online-features", json={"entities": {"driver_id": [1]}})
    assert r.status_code == 422 and "feature_service" in error_of(r)["message"]
    r = client.post("/get-online-features", json={"features": ["stats:rate"], "feature_service": "svc",
                                                  "entities": {"driver_id": [1]}})
    assert r.status_code == 422 and "exactly one" in error_of(r)["message"]
    r = lookup(client, ["stats:rate"], {"rider_id": [1]})
    assert r.status_code == 422 and "driver_id" in error_of(r)["message"]
    for bad in ("abc", 1.5, True, 2**70, None):  # the store names the join key and the value
        r = lookup(client, ["stats:rate"], {"driver_id": [1, bad]})
        assert r.status_code == 422 and "driver_id" in error_of(r)["message"], (bad, r.text)
    r = lookup(client, ["rate"])
    assert r.status_code == 422 and "'rate'" in error_of(r)["message"]
    r = client.post("/get-online-features", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and error_of(r)["type"] == "ValidationError"


def test_oversized_requests_are_413(store):
    app = create_app(store, max_body_bytes=2_000, max_entities=5)
    with TestClient(app) as c:
        r = lookup(c, ["stats:rate"], {"driver_id": list(range(1000))})  # Content-Length over the limit
        assert r.status_code == 413 and error_of(r)["type"] == "RequestTooLarge"

        def chunks():  # no Content-Length: the streamed bytes are counted
            yield b'{"features": ["stats:rate"], "entities": {"driver_id": ['
            for _ in range(500):
                yield b"1, 2, 3, 4, 5, 6, 7, 8, "
            yield b"1]}}"

        r = c.post("/get-online-features", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and error_of(r)["type"] == "RequestTooLarge"
        r = lookup(c, ["stats:rate"], {"driver_id": [1, 2, 3, 4, 5, 6]})
        assert r.status_code == 413 and "6 rows" in error_of(r)["message"]
        r = c.post("/push", json={"push_source_name": "live_push",
                                  "df": {"driver_id": list(range(6)), "ts": ["2024-01-01T00:00:00Z"] * 6}})
        assert r.status_code == 413
        assert lookup(c, ["stats:rate"], {"driver_id": [1, 2, 3, 4, 5]}).status_code == 200


def test_unknown_route_and_method_use_the_error_body(client):
    r = client.get("/nope")
    assert r.status_code == 404 and error_of(r)["type"] == "NotFound"
    r = client.get("/get-online-features")
    assert r.status_code == 405 and error_of(r)["type"] == "MethodNotAllowed"


def test_unexpected_error_is_500_naming_only_the_type(store):
    app = create_app(store)

    def boom():
        raise ZeroDivisionError("secret internals")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500
    err = error_of(r)
    assert err["type"] == "ZeroDivisionError" and "secret" not in r.text


def test_config_error_is_500_with_its_message(tmp_path, redis_url):
    s = build_store(tmp_path / "repo", redis_yaml(redis_url))
    try:
        bad = FeatureStore(s.repo_path)  # same registry, broken online store section
        bad.config.online_store["socket_timeoutt"] = 1
        with TestClient(create_app(bad)) as c:
            r = lookup(c, ["stats:rate"])
            assert r.status_code == 500
            err = error_of(r)
            assert err["type"] == "ConfigError" and "socket_timeoutt" in err["message"]
            assert c.get("/health").status_code == 503
    finally:
        drop_store(s)


# ---------------------------------------------------------------------------------------------- push


def test_push_then_lookup_sees_it_and_older_events_do_not_overwrite(store, client):
    now = datetime.now(UTC).replace(microsecond=0)
    newer, older = now - timedelta(minutes=1), now - timedelta(minutes=30)
    r = client.post("/push", json={"push_source_name": "live_push", "to": "online",
                                   "df": {"driver_id": [1, 7], "ts": [newer.isoformat(), newer.isoformat()],
                                          "speed": [42.5, 7.0]}})
    assert r.status_code == 200, r.text
    assert r.json() == {"push_source_name": "live_push", "to": "online", "views": ["live"], "rows": 2,
                        "online_written": 2, "online_skipped": 0}
    body = lookup(client, ["live:speed"], {"driver_id": [1, 7, 8]}).json()
    assert column(body, "speed")["values"] == [42.5, 7.0, None]
    assert column(body, "speed")["event_timestamps"][0] == newer.isoformat().replace("+00:00", "Z")

    r = client.post("/push", json={"push_source_name": "live_push",
                                   "df": {"driver_id": [1], "ts": [older.isoformat()], "speed": [-1.0]}})
    assert r.status_code == 200 and r.json()["online_skipped"] == 1 and r.json()["online_written"] == 0
    assert column(lookup(client, ["live:speed"], {"driver_id": [1]}).json(), "speed")["values"] == [42.5]


def test_push_offline_and_feast_fields(store, client):
    now = datetime.now(UTC).replace(microsecond=0)
    r = client.post("/push", json={"push_source_name": "live_push", "to": "online_and_offline",
                                   "allow_registry_cache": True,
                                   "df": {"driver_id": [5], "ts": [now.isoformat()], "speed": [3.25]}})
    assert r.status_code == 200, r.text
    assert column(lookup(client, ["live:speed"], {"driver_id": [5]}).json(), "speed")["values"] == [3.25]


@pytest.mark.parametrize("body, status, needle", [
    ({"push_source_name": "nope", "df": {"driver_id": [1], "ts": ["2024-01-01T00:00:00Z"]}}, 404, "nope"),
    ({"push_source_name": "live_push", "df": {"driver_id": [1], "ts": ["2024-01-01T00:00:00Z"],
                                              "bogus": [1]}}, 422, "bogus"),
    ({"push_source_name": "live_push", "df": {"driver_id": [1], "speed": [1.0]}}, 422, "ts"),
    ({"push_source_name": "live_push", "df": {"driver_id": [1, 2], "ts": ["2024-01-01T00:00:00Z"]}}, 422,
     "lengths"),
    ({"push_source_name": "live_push", "df": {"driver_id": [1, "x"], "ts": ["2024-01-01T00:00:00Z"] * 2}}, 422,
     "driver_id"),
    ({"push_source_name": "live_push", "df": {"driver_id": [1], "ts": ["2024-01-01T00:00:00Z"],
                                              "speed": ["fast"]}}, 422, "speed"),
    ({"push_source_name": "live_push", "df": {"driver_id": [1], "ts": ["2024-01-01T00:00:00Z"]},
      "to": "nowhere"}, 422, "to"),
])
def test_push_errors(client, body, status, needle):
    r = client.post("/push", json=body)
    assert r.status_code == status, r.text
    assert needle in error_of(r)["message"]


# ---------------------------------------------------------------------------------------------- auth


def test_api_keys_and_scopes(store):
    app = create_app(store, api_keys={"reader": {"read"}, "writer": {"read", "write"}})
    push_body = {"push_source_name": "live_push",
                 "df": {"driver_id": [1], "ts": [datetime.now(UTC).isoformat()], "speed": [1.0]}}
    with TestClient(app) as c:
        r = lookup(c, ["stats:rate"])
        assert r.status_code == 401 and error_of(r)["type"] == "Unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        r = c.post("/get-online-features", json={"features": ["stats:rate"], "entities": {"driver_id": [1]}},
                   headers={"X-API-Key": "wrong"})
        assert r.status_code == 401
        for headers in ({"X-API-Key": "reader"}, {"Authorization": "Bearer reader"}):
            r = c.post("/get-online-features", json={"features": ["stats:rate"], "entities": {"driver_id": [1]}},
                       headers=headers)
            assert r.status_code == 200, r.text
        assert c.get("/registry/feature-views").status_code == 401
        assert c.get("/registry/feature-views", headers={"X-API-Key": "reader"}).status_code == 200
        assert c.post("/push", json=push_body).status_code == 401
        r = c.post("/push", json=push_body, headers={"X-API-Key": "reader"})
        assert r.status_code == 403 and "write" in error_of(r)["message"]
        assert c.post("/push", json=push_body, headers={"Authorization": "Bearer writer"}).status_code == 200
        assert c.get("/health").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/openapi.json").json()["components"]["securitySchemes"]


def test_api_keys_from_env_spec():
    from featurestore.errors import ConfigError
    from serving.auth import parse_api_keys

    assert parse_api_keys("k1:read, k2:read+write") == {"k1": {"read"}, "k2": {"read", "write"}}
    assert parse_api_keys("") is None and parse_api_keys(None) is None
    with pytest.raises(ConfigError):
        parse_api_keys("k1:admin")
    with pytest.raises(ConfigError):
        parse_api_keys("k1")


# ----------------------------------------------------------------------------------- metrics, health


def test_metrics_expose_latency_errors_freshness_and_lookups(store, client):
    assert lookup(client, ["stats:rate", "short:hits"]).status_code == 200
    assert lookup(client, ["nope:rate"]).status_code == 404
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    for name in ("featurestore_http_request_duration_seconds_bucket", "featurestore_store_errors_total",
                 "featurestore_feature_freshness_seconds", "featurestore_online_lookups_total",
                 "featurestore_online_entity_rows_total"):
        assert name in text, name
    assert 'route="/get-online-features"' in text and 'status="200"' in text and 'status="404"' in text
    assert 'featurestore_store_errors_total{kind="FeatureViewNotFound"} 1.0' in text
    fresh = [line for line in text.splitlines() if line.startswith('featurestore_feature_freshness_seconds{view="stats"}')]
    assert fresh and 0 < float(fresh[0].split()[-1]) < 3600
    assert "featurestore_online_entity_rows_total 4.0" in text


def test_two_apps_have_separate_metrics(store):
    with TestClient(create_app(store)) as a, TestClient(create_app(store)) as b:
        lookup(a, ["stats:rate"])
        assert "featurestore_online_lookups_total 1.0" in a.get("/metrics").text
        assert "featurestore_online_lookups_total 0.0" in b.get("/metrics").text


def test_health(store, client):
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["online_store"] == store.config.online_store["type"]


# ------------------------------------------------------------------------------------------ registry


def test_registry_endpoints(store, client):
    summary = client.get("/registry").json()
    assert summary["project"] == "test" and summary["feature_views"] == ["live", "short", "stats"]
    assert summary["feature_services"] == ["boosted_svc", "svc"] and summary["entities"] == ["driver"]
    assert summary["on_demand_feature_views"] == ["boost", "broken"]
    odfv = client.get("/registry/on-demand-feature-views/boost").json()
    assert odfv["name"] == "boost" and odfv["sources"] == ["stats"]
    assert [v["name"] for v in client.get("/registry/on-demand-feature-views").json()["on_demand_feature_views"]] \
        == ["boost", "broken"]
    assert [e["name"] for e in client.get("/registry/entities").json()["entities"]] == ["driver"]
    views = client.get("/registry/feature-views").json()["feature_views"]
    assert [v["name"] for v in views] == ["live", "short", "stats"]
    view = client.get("/registry/feature-views/stats").json()
    assert view == store.registry.get("feature_view", "stats")
    assert [f["name"] for f in view["schema"]] == STATS_FEATURES and view["ttl_seconds"] == 30 * 86400
    assert client.get("/registry/feature-services/svc").json()["name"] == "svc"
    assert client.get("/registry/entities/driver").json()["join_keys"] == ["driver_id"]
    assert "live_push" in [s["name"] for s in client.get("/registry/data-sources").json()["data_sources"]]
    r = client.get("/registry/feature-views/nope")
    assert r.status_code == 404 and "'nope'" in error_of(r)["message"]
    assert client.post("/registry/feature-views").status_code == 405  # read-only


def test_openapi_documents_routes_and_models(client):
    spec = client.get("/openapi.json").json()
    for path in ("/get-online-features", "/push", "/registry/feature-views/{name}", "/health", "/metrics"):
        assert path in spec["paths"], path
    lookup_op = spec["paths"]["/get-online-features"]["post"]
    assert "OnlineFeaturesResponse" in str(lookup_op["responses"]["200"])
    assert {"404", "422", "413", "503"} <= set(lookup_op["responses"])
    assert "ErrorResponse" in str(lookup_op["responses"]["404"])
    assert "additionalProperties" in str(spec["components"]["schemas"]["GetOnlineFeaturesRequest"])
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------------ real server and the client


@pytest.mark.redis
def test_client_against_real_uvicorn_server(tmp_path, redis_url):
    s = build_store(tmp_path / "repo", redis_yaml(redis_url))
    try:
        app = create_app(s, api_keys={"r": {"read"}, "rw": {"read", "write"}})
        with uvicorn_server(app) as url, FeatureClient(url, api_key="rw", timeout=5) as fc:
            assert fc.health()["status"] == "ok"
            resp = fc.get_online_features(features=["stats:trips", "stats:label"],
                                          entity_rows=[{"driver_id": 1}, {"driver_id": 3}, {"driver_id": 99}])
            assert resp == s.get_online_features(["stats:trips", "stats:label"], {"driver_id": [1, 3, 99]}).to_rest()
            assert resp.to_dict() == {"driver_id": [1, 3, 99], "trips": [10, 30, None], "label": ["l1", None, None]}
            assert resp.statuses()["label"] == ["PRESENT", "NULL_VALUE", "NOT_FOUND"]
            assert fc.get_online_features("svc", entities={"driver_id": [1]}).feature_names == \
                ["driver_id", "rate", "trips", "hits"]
            now = datetime.now(UTC)
            out = fc.push("live_push", {"driver_id": [11], "ts": [now], "speed": [9.5]})
            assert out["online_written"] == 1
            assert fc.get_online_features(["live:speed"], entities={"driver_id": [11]}).to_dict()["speed"] == [9.5]
            with pytest.raises(FeatureViewNotFound, match="nope"):
                fc.get_online_features(["nope:x"], entities={"driver_id": [1]})
            with pytest.raises(FeatureNotFound):
                fc.get_online_features(["stats:x"], entities={"driver_id": [1]})
            with pytest.raises(InvalidInputError, match="driver_id"):
                fc.get_online_features(["stats:trips"], entities={"driver_id": [1.5]})
            assert "featurestore_online_lookups_total" in fc.metrics()
            assert fc.registry("feature-views", "stats")["name"] == "stats"
            with FeatureClient(url, api_key="r") as reader:
                with pytest.raises(PermissionDeniedError):
                    reader.push("live_push", {"driver_id": [11], "ts": [now], "speed": [1.0]})
            with FeatureClient(url) as anonymous:
                with pytest.raises(AuthenticationError):
                    anonymous.get_online_features(["stats:trips"], entities={"driver_id": [1]})
        with pytest.raises(BackendUnavailableError):  # the server is gone
            FeatureClient(url, timeout=1).health()
    finally:
        drop_store(s)


def test_client_push_pandas_and_413(sqlite_store):
    import pandas as pd

    app = create_app(sqlite_store, max_entities=3)
    with uvicorn_server(app) as url, FeatureClient(url) as fc:
        now = pd.Timestamp.now(tz="UTC").floor("s")
        df = pd.DataFrame({"driver_id": [1, 2], "ts": [now, now], "speed": [1.25, float("nan")]})
        assert fc.push("live_push", df)["online_written"] == 2
        resp = fc.get_online_features(["live:speed"], entities={"driver_id": [1, 2]})
        assert resp.to_dict()["speed"] == [1.25, None]
        assert resp.statuses()["speed"] == ["PRESENT", "NULL_VALUE"]
        with pytest.raises(RequestTooLargeError):
            fc.get_online_features(["live:speed"], entities={"driver_id": [1, 2, 3, 4]})


def test_real_server_answers_keep_alive_requests_and_large_bodies_through_the_coalescing_protocol(store):
    """Many requests on one keep-alive connection, and a response far larger than the socket buffers
    (flow control), come back complete and in order."""
    import http.client

    app = create_app(store)
    with uvicorn_server(app) as url:
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
        try:
            for i in range(30):
                ids = [1 + i % N_DRIVERS, 99]
                conn.request("POST", "/get-online-features", body=json.dumps(
                    {"features": ["stats:trips"], "entities": {"driver_id": ids}}),
                    headers={"content-type": "application/json"})
                r = conn.getresponse()
                body = json.loads(r.read())
                assert r.status == 200 and column(body, "trips")["values"] == [(1 + i % N_DRIVERS) * 10, None]
            conn.request("GET", "/openapi.json")
            r = conn.getresponse()
            spec = r.read()
            assert r.status == 200 and json.loads(spec)["paths"]
            big = {"features": ["stats:trips", "stats:label"], "entities": {"driver_id": [1, 2, 3] * 3000}}
            conn.request("POST", "/get-online-features", body=json.dumps(big),
                         headers={"content-type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200 and len(body) == int(r.getheader("content-length")) > 200_000
            assert column(json.loads(body), "trips")["values"] == [10, 20, 30] * 3000
        finally:
            conn.close()


def test_featurestore_serve_command(tmp_path, sqlite_store):
    port = free_port()
    env = {**os.environ, "FEATURESTORE_API_KEYS": "k:read"}
    proc = subprocess.Popen([sys.executable, "-m", "featurestore.cli", "--repo", str(sqlite_store.repo_path),
                             "serve", "--port", str(port), "--workers", "2", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        with FeatureClient(f"http://127.0.0.1:{port}", api_key="k", timeout=5) as fc:
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert fc.health()["status"] == "ok"
                    break
                except BackendUnavailableError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            for _ in range(5):  # both workers answer, each with its own store
                assert fc.get_online_features(["stats:trips"], entities={"driver_id": [2]}).to_dict() == \
                    {"driver_id": [2], "trips": [20]}
            start = time.perf_counter()
            for _ in range(20):
                fc.get_online_features(["stats:trips"], entities={"driver_id": [2]})
            # no ~40 ms delayed-ACK stall per response with several workers (TCP_NODELAY)
            assert (time.perf_counter() - start) / 20 < 0.03
            # connections opened at once spread over both workers (each accepts one per wakeup,
            # serving.balanced_accept), not all to whichever woke first
            workers = _children(proc.pid)
            assert len(workers) == 2
            bursts = []
            for _ in range(5):  # a worker still starting up takes none: give it a few chances
                before = {pid: _socket_count(pid) for pid in workers}
                conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(16)]
                try:
                    for conn in conns:
                        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    for conn in conns:
                        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
                    bursts.append({pid: _socket_count(pid) - before[pid] for pid in workers})
                finally:
                    for conn in conns:
                        conn.close()
                if all(g >= 1 for g in bursts[-1].values()):
                    break
                time.sleep(0.5)
            assert all(g >= 1 for g in bursts[-1].values()), bursts
        with FeatureClient(f"http://127.0.0.1:{port}", timeout=5) as anonymous:
            with pytest.raises(AuthenticationError):
                anonymous.get_online_features(["stats:trips"], entities={"driver_id": [2]})
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _children(pid: int) -> list[int]:
    """The uvicorn workers of a ``featurestore serve`` process (not multiprocessing's resource tracker)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid and b"resource_tracker" not in cmdline:
                out.append(int(entry))
    return out


def _socket_count(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def test_serve_command_rejects_bad_api_key_spec(sqlite_store):
    r = subprocess.run([sys.executable, "-m", "featurestore.cli", "--repo", str(sqlite_store.repo_path), "serve"],
                       env={**os.environ, "FEATURESTORE_API_KEYS": "k:admin"}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "scopes" in r.stderr
