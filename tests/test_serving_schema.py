"""Schemathesis against the server's own OpenAPI spec (in-process, through the ASGI app): generated
requests, valid (positive) and invalid (negative), never get a 5xx, per operation.

Schemathesis' pytest plugin (``schema.parametrize``) does not run under pytest 9, so this drives its
Python API: one Hypothesis test per operation over ``operation.as_strategy(mode)``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from serving.app import create_app
from tests.test_serving import build_store, drop_store, redis_yaml

EXAMPLES_PER_MODE = 25  # positive + negative: at most 50 generated requests per operation

# The operations, from the spec alone (rendering it does not touch the store).
OPERATIONS = [f"{method.upper()} {path}" for path, ops in create_app(None).openapi()["paths"].items()
              for method in ops]
# Negative data needs something to negate: the request bodies (GET routes take only string path
# parameters, which stay strings in a URL).
CASES = [pytest.param(label, mode, id=f"{label}-{mode.value}") for label in OPERATIONS
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE or label.startswith("POST ")]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    now = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    store = build_store(tmp_path_factory.mktemp("schema") / "repo", "{type: sqlite, path: data/online.db}", now)
    app = create_app(store, max_body_bytes=200_000, max_entities=1_000)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    store.close()


def _operation(schema, label: str):
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label == label:
            return operation
    raise LookupError(label)


def test_every_operation_is_covered(api_schema):
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert labels == set(OPERATIONS)
    assert {"POST /get-online-features", "POST /push", "GET /registry/feature-views/{name}"} <= labels


@pytest.mark.parametrize("label, mode", CASES)
def test_no_server_errors(api_schema, label, mode):
    operation = _operation(api_schema, label)
    seen: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def run(case):
        response = case.call()
        seen.append(response.status_code)
        assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
        case.validate_response(response, checks=[not_a_server_error])

    run()
    assert seen, "no request was generated"
    if mode is GenerationMode.NEGATIVE:
        assert all(400 <= status < 500 for status in seen), seen


# ------------------------------------------------------------------------------------------------------
# Random specs rarely hit a registered name, so the deeper paths (the store's validation, Arrow
# conversion, the online write) get their own generated requests with real names and random values.

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                     st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat()),
                     st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.5Z", "yesterday", ""]))
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3))
_refs = st.sampled_from(["stats:rate", "stats:trips", "stats:label", "stats:blob", "stats:seen", "stats:hist",
                         "short:hits", "live:speed", "boost:boosted", "stats:nope", "nope:rate", "rate", "stats:",
                         ":"])


@pytest.fixture(scope="module", params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def app_client(request, tmp_path_factory):
    from fastapi.testclient import TestClient

    yaml = ("{type: sqlite, path: data/online.db}" if request.param == "sqlite"
            else redis_yaml(request.getfixturevalue("redis_url")))
    now = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    store = build_store(tmp_path_factory.mktemp("deep") / "repo", yaml, now)
    with TestClient(create_app(store, max_entities=100)) as client:
        yield client
    drop_store(store)


@given(features=st.lists(_refs, min_size=1, max_size=4),
       ids=st.lists(st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=6)),
                    max_size=8),
       extra_key=st.sampled_from([None, "driver_id", "rider_id", "bonus"]),
       extra=st.lists(_values, max_size=8),
       full=st.booleans(), service=st.sampled_from([None, None, "svc", "nope"]))
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_lookups_with_real_names_never_500(app_client, features, ids, extra_key, extra, full, service):
    entities = {"driver_id": ids}
    if extra_key and extra_key != "driver_id":
        entities[extra_key] = (extra + [None] * len(ids))[:len(ids)] if extra_key == "bonus" else ids
    body = {"entities": entities, "full_feature_names": full}
    body.update({"feature_service": service} if service else {"features": features})
    r = app_client.post("/get-online-features", json=body)
    assert r.status_code in (200, 404, 422), r.text
    if r.status_code == 200:
        assert len(r.json()["results"][0]["values"]) == len(ids)


@st.composite
def _mostly_valid_rows(draw):
    """Rows that usually conform, each column sometimes off (a string id, a bad time, a text speed)."""
    n = draw(st.integers(0, 4))
    ids = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(0, 50)) | (st.text(max_size=3) if draw(
        st.integers(0, 9)) == 0 else st.nothing())
    times = st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat())
    if draw(st.integers(0, 9)) == 0:
        times = times | _scalars
    speeds = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-1000, 1000))
    if draw(st.integers(0, 9)) == 0:
        speeds = speeds | _values
    columns = {"driver_id": draw(st.lists(ids, min_size=n, max_size=n)),
               "ts": draw(st.lists(times, min_size=n, max_size=n))}
    if draw(st.booleans()):
        columns["speed"] = draw(st.lists(speeds, min_size=n, max_size=n))
    return columns


@given(columns=st.one_of(_mostly_valid_rows(),
                         st.dictionaries(st.sampled_from(["driver_id", "ts", "speed", "junk"]),
                                         st.lists(_values, min_size=0, max_size=4), max_size=4)),
       to=st.sampled_from(["online", "offline", "online_and_offline"]))
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_pushes_with_real_names_never_500(app_client, columns, to):
    r = app_client.post("/push", json={"push_source_name": "live_push", "df": columns, "to": to})
    assert r.status_code in (200, 422), r.text
