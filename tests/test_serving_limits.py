"""A hostile read-only client cannot grow the server's memory past the documented bound
(``serving.limits.memory_bound_bytes``): request bodies, feature lists and the lookup plan cache are
bounded, in bytes, and oversized requests are refused naming the limit.

The main test runs ``featurestore serve`` in a subprocess on a repo with one 300-feature view, with
``--max-features 200`` and a 4 MB plan cache, and hammers it for 20 s from four connections with
distinct large valid feature lists (every one a cache miss), lists with duplicates in bodies of
~900 KB, lists over the limit and bodies over the limit, while reading the server's RSS from /proc and
the cache's size from /metrics.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import threading
import time
from dataclasses import fields
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from featurestore import FeatureStore
from featurestore.cli import main
from featurestore.cli import serve as serve_command
from featurestore.errors import ConfigError
from featurestore.online_read import plan_bytes
from serving.app import create_app
from serving.limits import ServingLimits, memory_bound_bytes
from tests.repo_helpers import write_repo
from tests.serve_helpers import serve

UTC = timezone.utc
N_FEATURES = 300
REFS = [f"wide:f{i:03d}" for i in range(N_FEATURES)]
CODE = f"""
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource
from featurestore.types import Float64

driver = Entity(name="driver", join_keys=["driver_id"])
wide = FeatureView(name="wide", entities=[driver], ttl=timedelta(days=30),
    source=FileSource(name="wide_src", path="data/wide.parquet", timestamp_field="ts"),
    schema=[Field(name=f"f{{i:03d}}", dtype=Float64) for i in range({N_FEATURES})])
"""


@pytest.fixture(scope="module")
def wide_repo(tmp_path_factory):
    """A SQLite-backed repo whose view has 300 features; driver 1 materialized."""
    now = datetime.now(UTC).replace(microsecond=0)
    table = pa.table({"driver_id": pa.array([1], pa.int64()),
                      "ts": pa.array([now - timedelta(minutes=1)], pa.timestamp("us", tz="UTC")),
                      **{f"f{i:03d}": pa.array([float(i)]) for i in range(N_FEATURES)}})
    store = FeatureStore(write_repo(tmp_path_factory.mktemp("limits") / "repo", CODE, tables={"wide": table}))
    store.apply()
    store.materialize(now - timedelta(days=1), now + timedelta(seconds=1), progress=False)
    yield store
    store.close()


def body_of(features, rows=(1, 2)) -> bytes:
    return json.dumps({"features": features, "entities": {"driver_id": list(rows)}}).encode()


def declared_too_big(server, length: int) -> tuple[int, dict]:
    """Headers declaring a ``length``-byte body, and the server's answer (given before any body)."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(b"POST /get-online-features HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n" % length)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def test_hostile_read_only_client_stays_within_the_memory_bound(wide_repo):
    limits = ServingLimits(max_features=200, shape_cache_bytes=4_000_000)
    clients = 4
    bound = memory_bound_bytes(limits, connections=clients + 1)  # + this test's /metrics reader
    repeated = REFS[:150] * 450  # ~880 KB of valid references, each listed 450 times
    assert 800_000 < len(body_of(repeated)) < limits.max_body_bytes
    with serve(wide_repo.repo_path, "--max-features", str(limits.max_features),
               "--shape-cache-bytes", str(limits.shape_cache_bytes)) as server:
        for i in range(20):  # warm up: imports, the registry, the store, a few plans
            status, body, _ = server.request("POST", "/get-online-features", body_of(REFS[i:i + 150]))
            assert status == 200, body
        baseline = server.rss_bytes()
        stop = time.monotonic() + 20
        outcomes: dict[str, list] = {"valid": [], "repeated_900kb": [], "duplicate": [], "too_many": [],
                                     "too_big": []}
        failures: list[str] = []
        peak = [baseline]

        def hammer(seed: int) -> None:
            rng = random.Random(seed)
            conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
            try:
                while time.monotonic() < stop and not failures:
                    roll = rng.random()
                    if roll < 0.60:
                        kind, payload = "valid", body_of(rng.sample(REFS, rng.randint(150, 200)))
                    elif roll < 0.80:  # the request: ~900 KB of valid references, repeated
                        kind, payload = "repeated_900kb", body_of(rng.choices(REFS[:150], k=len(repeated)))
                    elif roll < 0.85:
                        features = rng.sample(REFS, 150)
                        kind, payload = "duplicate", body_of(features + [features[7]])
                    elif roll < 0.95:
                        kind, payload = "too_many", body_of(rng.sample(REFS, rng.randint(201, N_FEATURES)))
                    else:  # declared over the limit: refused before the body is sent
                        outcomes["too_big"].append(declared_too_big(server, limits.max_body_bytes + 1))
                        continue
                    conn.request("POST", "/get-online-features", body=payload,
                                 headers={"content-type": "application/json"})
                    response = conn.getresponse()
                    answer = json.loads(response.read())
                    outcomes[kind].append((response.status, answer))
            except Exception as exc:  # noqa: BLE001 - reported by the main thread
                failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()

        threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(clients)]
        for t in threads:
            t.start()
        cache_sizes = []
        while any(t.is_alive() for t in threads):
            peak[0] = max(peak[0], server.rss_bytes())
            if peak[0] - baseline > bound:
                failures.append(f"RSS grew by {(peak[0] - baseline) / 2**20:.0f} MB")
                break
            cache_sizes.append(server.metric("featurestore_shape_cache_bytes"))
            time.sleep(0.2)
        for t in threads:
            t.join()
        cache_sizes.append(server.metric("featurestore_shape_cache_bytes"))

    assert not failures, failures
    grown = peak[0] - baseline
    print(f"RSS {baseline / 2**20:.0f} MB + {grown / 2**20:.0f} MB (bound {bound / 2**20:.0f} MB), cache peak {max(cache_sizes) / 2**20:.1f} MB, requests", {k: len(v) for k, v in outcomes.items()})
    assert grown <= bound, f"RSS grew by {grown / 2**20:.0f} MB, over the bound of {bound / 2**20:.0f} MB"
    assert max(cache_sizes) <= limits.shape_cache_bytes
    assert max(cache_sizes) > limits.shape_cache_bytes / 2  # the cache was full, not idle
    valid = outcomes["valid"]
    assert len(valid) > 50 and all(status == 200 for status, _ in valid)
    for status, answer in outcomes["repeated_900kb"] + outcomes["too_many"]:
        assert status == 413 and "at most 200 per request (the server's max_features)" in answer["error"]["message"]
    for status, answer in outcomes["duplicate"]:
        assert status == 422 and "is listed more than once" in answer["error"]["message"]
    for status, answer in outcomes["too_big"]:
        assert status == 413 and f"limit of {limits.max_body_bytes} bytes" in answer["error"]["message"]
    assert all(outcomes.values()), {kind: len(v) for kind, v in outcomes.items()}


def test_plan_cache_is_bounded_in_bytes_and_keeps_what_is_used(wide_repo):
    """In process: distinct lists fill the cache to its byte cap, never past it; the least recently
    used plans go first, so a list looked up all along stays cached."""
    reader = wide_repo.online_reader
    cap = 1_000_000
    app = create_app(wide_repo, shape_cache_bytes=cap)
    rng = random.Random(3)
    hot = REFS[:100]
    with TestClient(app) as c:
        for _ in range(60):
            assert c.post("/get-online-features", content=body_of(rng.sample(REFS, 150))).status_code == 200
            assert c.post("/get-online-features", content=body_of(hot)).status_code == 200
            assert reader.shape_cache_bytes <= cap
        assert reader.shape_cache_bytes > cap / 2
        hot_plan = reader.shape(hot, False)
        assert reader._shapes.get((tuple(hot), False)) is hot_plan  # still cached
        assert plan_bytes((tuple(hot), False), hot_plan) > 100 * 50  # the sizes are real sizes
        metrics = c.get("/metrics").text
        assert f"featurestore_shape_cache_bytes {float(reader.shape_cache_bytes)}" in metrics


def test_feature_list_limits_name_the_limit(wide_repo):
    app = create_app(wide_repo, max_features=10)
    with TestClient(app) as c:
        r = c.post("/get-online-features", content=body_of(REFS[:11]))
        assert r.status_code == 413
        assert r.json()["error"]["message"] == \
            "features: 11 references, at most 10 per request (the server's max_features)"
        r = c.post("/get-online-features", content=body_of(["wide:f001", "wide:f002", "wide:f001"]))
        assert r.status_code == 422
        assert r.json()["error"]["message"] == "features: 'wide:f001' is listed more than once"
        assert c.post("/get-online-features", content=body_of(REFS[:10])).status_code == 200
        schema = c.get("/openapi.json").json()["components"]["schemas"]["GetOnlineFeaturesRequest"]
        features = schema["properties"]["features"]["anyOf"][0]
        assert features["maxItems"] == 10 and features["uniqueItems"] is True


def test_limits_from_the_environment():
    limits = ServingLimits.from_env({"FEATURESTORE_MAX_FEATURES": "50", "FEATURESTORE_BODY_TIMEOUT": "2.5",
                                     "FEATURESTORE_SHAPE_CACHE_BYTES": "8_000_000"})
    assert (limits.max_features, limits.body_timeout, limits.shape_cache_bytes) == (50, 2.5, 8_000_000)
    assert limits.max_body_bytes == ServingLimits().max_body_bytes
    with pytest.raises(ConfigError, match="FEATURESTORE_MAX_FEATURES='many'"):
        ServingLimits.from_env({"FEATURESTORE_MAX_FEATURES": "many"})
    with pytest.raises(ConfigError, match="max_entities must be a positive number"):
        ServingLimits.from_env({"FEATURESTORE_MAX_ENTITIES": "0"})


def test_serve_flags_state_the_defaults_and_the_variables():
    """``featurestore serve --help`` gives each limit's default as ``ServingLimits`` has it (its help
    cannot import the heavy default itself), and each flag reads its FEATURESTORE_* variable."""
    text = " ".join(CliRunner().invoke(main, ["serve", "--help"]).output.split())
    defaults = ServingLimits()
    for f in fields(ServingLimits):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        if f.name == "shape_cache_bytes":
            assert value == 16 * 2**20
            shown = "16 MiB"
        assert re.search(re.escape(flag) + r" [^\[]*\[default: " + re.escape(shown) + r"\]", text), flag
        option = next(p for p in serve_command.params if p.name == f.name)
        assert option.envvar == ServingLimits.env_var(f.name)
