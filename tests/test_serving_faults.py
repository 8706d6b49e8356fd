"""The feature server while its Redis is down, killed or frozen: lookups answer 503 with a JSON error
within a bounded time, the server stays up, and the first request after Redis is back succeeds.

Each test runs its own throwaway redis-server (``redis_server_factory``) and stops it for real.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from featurestore.errors import BackendUnavailableError
from serving.app import create_app
from serving.client import FeatureClient
from tests.test_serving import build_store, column, error_of, lookup, redis_yaml, uvicorn_server

pytestmark = pytest.mark.redis

UTC = timezone.utc
BOUND_S = 2.0  # the store's socket timeout is 0.5 s; a 503 must come well within this


@pytest.fixture
def redis_backed(tmp_path, redis_server_factory):
    server = redis_server_factory()
    store = build_store(tmp_path / "repo", redis_yaml(server.url))
    yield server, store
    store.close()  # the server and its data are thrown away by the factory


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def test_lookups_are_fast_503s_while_redis_is_down_and_recover(redis_backed):
    server, store = redis_backed
    now = datetime.now(UTC).replace(microsecond=0)
    with TestClient(create_app(store)) as c:
        assert column(lookup(c, ["stats:trips"]).json(), "trips")["values"] == [10, 20, 30, None]
        server.stop()
        for _ in range(3):
            r, elapsed = timed(lambda: lookup(c, ["stats:trips"]))
            assert r.status_code == 503, r.text
            assert elapsed < BOUND_S
            err = error_of(r)
            assert err["type"] == "BackendUnavailableError" and err["message"]
            assert r.headers["retry-after"] == "1"
        r, elapsed = timed(lambda: c.get("/health"))
        assert r.status_code == 503 and r.json()["status"] == "unavailable" and elapsed < BOUND_S
        r = c.post("/push", json={"push_source_name": "live_push",
                                  "df": {"driver_id": [1], "ts": [now.isoformat()], "speed": [2.0]}})
        assert r.status_code == 503 and error_of(r)["type"] == "BackendUnavailableError"
        # the server itself still answers what does not need Redis
        assert c.get("/registry/feature-views/stats").status_code == 200
        metrics = c.get("/metrics").text
        assert 'featurestore_store_errors_total{kind="BackendUnavailableError"}' in metrics
        assert 'status="503"' in metrics

        server.start()  # same port, empty (no persistence)
        r = lookup(c, ["stats:trips"])
        assert r.status_code == 200, r.text
        assert column(r.json(), "trips")["statuses"] == ["NOT_FOUND"] * 4
        assert c.get("/health").status_code == 200
        store.materialize(now - timedelta(days=3), now + timedelta(seconds=1), progress=False)
        assert column(lookup(c, ["stats:trips"]).json(), "trips")["values"] == [10, 20, 30, None]


def test_frozen_redis_costs_one_socket_timeout_not_a_hang(redis_backed):
    server, store = redis_backed
    with TestClient(create_app(store)) as c:
        assert lookup(c, ["stats:trips"]).status_code == 200
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(2):
                r, elapsed = timed(lambda: lookup(c, ["stats:trips"]))
                assert r.status_code == 503 and elapsed < BOUND_S, (r.status_code, elapsed)
                assert error_of(r)["type"] == "BackendUnavailableError"
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        # a reply to the timed-out command may still arrive: it must not be read as this request's
        for _ in range(5):
            r = lookup(c, ["stats:trips", "stats:label"])
            assert r.status_code == 200, r.text
            assert column(r.json(), "trips")["values"] == [10, 20, 30, None]
            assert column(r.json(), "label")["values"] == ["l1", "l2", None, None]


def test_real_server_stays_up_through_a_redis_crash(redis_backed):
    server, store = redis_backed
    with uvicorn_server(create_app(store)) as url, FeatureClient(url, timeout=10) as fc:
        assert fc.get_online_features(["stats:trips"], entities={"driver_id": [1]}).to_dict()["trips"] == [10]
        server.kill()  # SIGKILL, as a crash would

        def one_lookup(_):
            start = time.perf_counter()
            with pytest.raises(BackendUnavailableError):
                fc.get_online_features(["stats:trips"], entities={"driver_id": [1]})
            return time.perf_counter() - start

        with ThreadPoolExecutor(8) as pool:  # concurrent requests during the outage
            durations = list(pool.map(one_lookup, range(16)))
        assert max(durations) < BOUND_S, durations
        health = fc.health()
        assert health["status"] == "unavailable" and health["error"]["type"] == "BackendUnavailableError"

        server.start()
        resp = fc.get_online_features(["stats:trips"], entities={"driver_id": [1]})
        assert resp.statuses()["trips"] == ["NOT_FOUND"]  # the restarted server is empty
        assert fc.health()["status"] == "ok"
        now = datetime.now(UTC)
        assert fc.push("live_push", {"driver_id": [1], "ts": [now], "speed": [4.5]})["online_written"] == 1
        assert fc.get_online_features(["live:speed"], entities={"driver_id": [1]}).to_dict()["speed"] == [4.5]


def test_frozen_redis_under_concurrent_lookups_stays_bounded(redis_backed):
    """Lookups run on the event loop while Redis answers; once it fails they go to the thread pool, so
    eight requests waiting on a frozen Redis time out side by side, not one socket timeout after another."""
    server, store = redis_backed
    with uvicorn_server(create_app(store)) as url, FeatureClient(url, timeout=10) as fc:
        assert fc.get_online_features(["stats:trips"], entities={"driver_id": [1]}).to_dict()["trips"] == [10]
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            def one_lookup(_):
                start = time.perf_counter()
                with pytest.raises(BackendUnavailableError):
                    fc.get_online_features(["stats:trips"], entities={"driver_id": [1]})
                return time.perf_counter() - start

            for _ in range(2):
                with ThreadPoolExecutor(8) as pool:
                    durations = list(pool.map(one_lookup, range(8)))
                assert max(durations) < BOUND_S, durations
            health, elapsed = timed(fc.health)
            assert health["status"] == "unavailable" and elapsed < BOUND_S
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        for _ in range(3):  # back on the fast path, with the right values
            assert fc.get_online_features(["stats:trips", "stats:label"],
                                          entities={"driver_id": [2, 3]}).to_dict() == \
                {"driver_id": [2, 3], "trips": [20, 30], "label": ["l2", None]}
