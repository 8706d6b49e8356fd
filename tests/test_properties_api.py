"""Property-based tests of the REST API (issue #13): Schemathesis over the app's OpenAPI document and
push-then-lookup sequences with hostile values, on an online SQLite store and on a real Redis.

- Every operation of the document, with generated valid and invalid requests: never a 5xx, and every
  answer conforms to the document (status code, content type, body schema).
- Schemathesis' state machine over the document as a client of this repo sees it (the push and lookup
  bodies narrowed to the repo's columns, integers over the whole int64 range, a link from a push to
  the lookup of the pushed entity): never a 5xx after any push.
- A Hypothesis state machine keeps a model of the online store by the shared input rules
  (``tests.test_properties_input``: epoch milliseconds, the accepted range, strict types) and of its
  event-time monotonic writes (a row older than or as old as the stored one is skipped), and checks
  after every step: a push answers 200 exactly when the rules accept every row (else 422, never a
  5xx), a refused push changes nothing, and a lookup answers 200 with each entity's newest accepted row
  (or 422 for a key the rules refuse).
"""

from __future__ import annotations

import copy
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from serving.app import create_app
from tests.test_properties_input import (
    EPOCH,
    FEATURES,
    FLOAT32_OVERFLOW,
    INT64,
    KEY,
    NO_EXPLAIN,
    PUSH_SOURCE,
    REFS,
    TIME,
    UTC,
    VIEW,
    Refused,
    Row,
    applied_store,
    column_values,
    hostile_values,
    join_key,
    judge,
    valid_iso,
    valid_ms,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture]


@dataclass
class Served:
    store: Any
    app: Any
    client: TestClient
    schema: Any


@pytest.fixture(scope="module", params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def served(request, tmp_path_factory):
    """The app over the repo of ``tests.test_properties_input`` (on Redis under a project of its own),
    a client of it and its OpenAPI document as Schemathesis reads it."""
    online = "{type: sqlite, path: data/online.db}"
    if request.param == "redis":
        online = f"{{type: redis, url: '{request.getfixturevalue('redis_url')}'}}"
    store = applied_store(tmp_path_factory.mktemp(f"props_api_{request.param}") / "repo", online_store=online,
                          project=f"props_{uuid.uuid4().hex[:10]}")
    app = create_app(store, max_entities=100)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Served(store, app, client, schemathesis.openapi.from_asgi("/openapi.json", app))
    finally:
        try:
            store.online_store.delete_view(VIEW)
        finally:
            store.close()


# ------------------------------------------------------------------------ Schemathesis: the document

OPERATIONS = [f"{method.upper()} {path}" for path, ops in create_app(None).openapi()["paths"].items()
              for method in ops]
CASES = [pytest.param(label, mode, id=f"{label}-{mode.value}") for label in OPERATIONS
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE or label.startswith("POST ")]


def _operation(schema, label: str):
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label == label:
            return operation
    raise LookupError(label)


@pytest.mark.parametrize("label, mode", CASES)
def test_every_operation_answers_as_documented(served, label, mode):
    operation = _operation(served.schema, label)
    seen: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=HEALTH)
    def run(case):
        response = case.call()
        seen.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    run()
    assert seen, "no request was generated"


def repo_document(app) -> dict:
    """The app's document as a client of this repo reads it: ``/push`` takes one row of the repo's push
    source (the key and the event time as int64 integers, as a pandas client sends them; features by
    type, each nullable, the Timestamp one as an integer or date-time text), and a pushed row links to
    the lookup of its entity's features."""
    doc = copy.deepcopy(app.openapi())
    schemas = doc["components"]["schemas"]
    int64 = {"type": "integer", "minimum": INT64[0], "maximum": INT64[1]}
    time = {"anyOf": [int64, {"type": "string", "format": "date-time"}]}
    by_type = {"Float32": {"type": "number"}, "Float64": {"type": "number"}, "Int64": int64,
               "String": {"type": "string"}, "Bool": {"type": "boolean"}, "Timestamp": time}

    def one(item: dict) -> dict:
        return {"type": "array", "items": item, "minItems": 1, "maxItems": 1}

    columns = {KEY: one(int64), TIME: one(int64)}
    columns |= {name: one({"anyOf": [by_type[dtype], {"type": "null"}]}) for name, dtype in FEATURES.items()}
    push = schemas["PushRequest"]["properties"]
    push["push_source_name"] = {"type": "string", "enum": [PUSH_SOURCE]}
    push["df"] = {"type": "object", "properties": columns, "required": [KEY, TIME], "additionalProperties": False}
    lookup = doc["paths"]["/get-online-features"]["post"]
    doc["paths"]["/push"]["post"]["responses"]["200"]["links"] = {"LookUpThePushedEntity": {
        "operationId": lookup["operationId"],
        "requestBody": {"features": REFS, "entities": {KEY: f"$request.body#/df/{KEY}"}},
        "x-schemathesis": {"merge_body": False}}}
    return doc


def test_pushed_entities_can_be_looked_up(served):
    """Schemathesis' state machine over ``repo_document``: pushes with generated rows, each 200 followed
    by the lookup of its entity; no answer is a 5xx and every one conforms to the document."""
    store, app = served.store, served.app
    schema = schemathesis.openapi.from_dict(repo_document(app)).include(path=["/push", "/get-online-features"])
    schema.app = app
    schema.config.generation.update(modes=[GenerationMode.POSITIVE])
    calls: list[tuple[str, int]] = []
    scenario: list[str] = []

    class PushThenLookUp(schema.as_state_machine()):
        def setup(self) -> None:
            store.online_store.delete_view(VIEW)
            scenario.clear()

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            calls.append((case.operation.label, response.status_code))
            scenario.append(f"{case.operation.label} {json.dumps(case.body, default=str)[:300]} -> "
                            f"{response.status_code}")
            try:
                case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            except BaseException:  # Schemathesis' FailureGroup is a BaseExceptionGroup
                print("the failing scenario's requests:\n  " + "\n  ".join(scenario))  # shown with the failure
                raise

    PushThenLookUp.run(settings=settings(max_examples=150, stateful_step_count=6, deadline=None, database=None,
                                         suppress_health_check=list(HealthCheck)))
    assert ("POST /push", 200) in calls and ("POST /get-online-features", 200) in calls, sorted(set(calls))


# --------------------------------------------------------------- Hypothesis: the model of the store

GOOD_KEYS = [1, 2, 1001, 0, -1, INT64[0], INT64[1]]
# Keys a careless or hostile client sends for driver 1 or 1001 (none is an Int64 join key).
BAD_KEYS = [True, False, 1.0, 1001.0, "1001", "١٠٠١", "1_001", " 1001 ", "1001.0", "+1001", "1", 2**63,
            -(2**63) - 1]
TARGETS = ["online", "online", "online", "online_and_offline", "offline"]


def _kind(value: Any) -> type:
    return float if isinstance(value, int) and not isinstance(value, bool) else type(value)


# The values issue #13 names, and their kin, each in the column where it does harm.
NAMED_HOSTILE_CELLS = [
    *[(KEY, v) for v in (True, False, 1.0, "1001", "١٠٠١", " 1001 ", None, 2**63)],
    *[(TIME, v) for v in (1_700_000_000_000_000_000, 9 * 10**18, 1_700_000_000_000_000, INT64[0], INT64[1], True,
                          1.7e12, math.nan, "2262-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
                          "١٧٠٠٠٠٠٠٠٠٠٠٠", "1700000000000", None)],
    *[("speed", v) for v in (math.nan, math.inf, -math.inf, 1e39, 3.5e38, FLOAT32_OVERFLOW, True, "1.5")],
    *[("score", v) for v in (math.nan, math.inf, -math.inf, False, "2.5")],
    *[("trips", v) for v in (True, 1.0, "7", 2**63)],
    *[("label", v) for v in (5, 1.5, True)],
    *[("active", v) for v in (1, 0, "true")],
    *[("seen", v) for v in (9 * 10**18, 1_700_000_000_000_000_000, True, "9999-12-31T23:59:59Z")],
]


@st.composite
def push_bodies(draw) -> dict[str, Any]:
    """A valid ``/push`` body of 1 to 3 rows (a time column holds one kind: ISO text or epoch ms); two
    times in three with one hostile cell: a value issue #13 names, or one from the column's hostile
    values (sometimes in a list); now and then without its key or time column."""
    n = draw(st.integers(1, 3))
    features = draw(st.one_of(st.just(list(FEATURES)), st.lists(st.sampled_from(list(FEATURES)), unique=True)))
    df = {KEY: draw(st.lists(st.sampled_from(GOOD_KEYS), min_size=n, max_size=n))}
    for name in [TIME, *features]:
        if name in (TIME, "seen"):
            values = draw(st.sampled_from([valid_ms, valid_iso]))
            values = values if name == TIME else st.one_of(values, values, st.none())
        else:
            values = column_values(FEATURES[name], hostile=False)
        df[name] = draw(st.lists(values, min_size=n, max_size=n))
    row, harm = draw(st.integers(0, n - 1)), draw(st.sampled_from(["none", "named", "generated"]))
    if harm == "named":
        name, value = draw(st.sampled_from(NAMED_HOSTILE_CELLS))
        df.setdefault(name, [None] * n)[row] = value
    elif harm == "generated":
        name = draw(st.sampled_from(list(df)))
        hostile = (st.sampled_from([*BAD_KEYS, None]) if name == KEY
                   else hostile_values("time" if name == TIME else FEATURES[name]))
        df[name][row] = draw(st.one_of(hostile, hostile, st.lists(hostile, max_size=2)))
    if harm != "none" and draw(st.integers(0, 9)) == 0:
        del df[draw(st.sampled_from([KEY, TIME]))]
    return {"push_source_name": PUSH_SOURCE, "df": df, "to": draw(st.sampled_from(TARGETS))}


def rows_of(df: dict[str, list]) -> list[dict[str, Any]]:
    n = len(next(iter(df.values())))
    return [{name: values[i] for name, values in df.items()} for i in range(n)]


def judge_push(df: dict[str, list]) -> tuple[list[Row] | None, str]:
    """The rows the rules make of a push, or None and the reason it is refused."""
    missing = [c for c in (KEY, TIME) if c not in df]
    if missing:
        return None, f"missing columns {missing}"
    try:
        return [judge(row) for row in rows_of(df)], ""
    except Refused as exc:
        return None, str(exc)


def mixes_kinds(df: dict[str, list]) -> bool:
    """A column whose values are of different JSON kinds (integers and floats count as one, numbers),
    say ISO text and epoch ms in one time column: the rules judge values, not columns, and leave it open
    whether a REST push takes such a column."""
    return any(len({_kind(v) for v in values if v is not None}) > 1 for values in df.values())


def newest_per_key(rows: list[Row]) -> dict[int, Row]:
    """Within one push the newest row per key wins (on a tie, the first)."""
    winners: dict[int, Row] = {}
    for row in rows:
        if row.key not in winners or row.at > winners[row.key].at:
            winners[row.key] = row
    return winners


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _post(client: TestClient, path: str, body: dict):
    """JSON as a client writes it (NaN and infinities as Python's json writes them)."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


class PushLookUpModel(RuleBasedStateMachine):
    """Pushes and lookups against the served store, checked against a model of what it holds."""

    client: TestClient
    store: Any

    def __init__(self) -> None:
        super().__init__()
        self.store.online_store.delete_view(VIEW)
        self.model: dict[int, Row] = {}

    def _looked_up(self, keys: list, features: list[str]):
        return _post(self.client, "/get-online-features", {"features": [f"{VIEW}:{f}" for f in features],
                                                             "entities": {KEY: keys}})

    def _check_lookup(self, keys: list, features: list[str], context: str) -> None:
        response = self._looked_up(keys, features)
        refused = [k for k in keys if not _accepted_key(k)]
        if refused:
            assert response.status_code == 422, f"{context}lookup of keys {keys!r} ({refused!r} are not Int64 " \
                                                 f"join keys): {response.status_code} {response.text[:300]}"
            return
        assert response.status_code == 200, f"{context}lookup of {keys}: {response.status_code} {response.text[:300]}"
        body = response.json()
        assert body["metadata"]["feature_names"] == [KEY, *features], body["metadata"]
        results = dict(zip(body["metadata"]["feature_names"], body["results"]))
        assert results[KEY]["values"] == keys, results[KEY]
        for name in features:
            got = results[name]
            for i, key in enumerate(keys):
                row = self.model.get(key)
                want = None if row is None else row.values[name]
                status = "NOT_FOUND" if row is None else "PRESENT" if want is not None else "NULL_VALUE"
                value, stamp = got["values"][i], _time(got["event_timestamps"][i])
                if FEATURES[name] == "Timestamp" and isinstance(value, str):
                    value = _time(value)
                same = type(value) is type(want) and value == want  # True is not 1, 1 is not 1.0
                assert same and (got["statuses"][i], stamp) == (status, EPOCH if row is None else row.at), (
                    f"{context}driver {key} feature {name!r}: served {value!r} {got['statuses'][i]} at {stamp}, "
                    f"the newest accepted push has {want!r} {status} at {None if row is None else row.at}")

    @rule(body=push_bodies())
    def push(self, body: dict) -> None:
        df = body["df"]
        rows, reason = judge_push(df)
        response = _post(self.client, "/push", body)
        pushed_keys = [k for k in df.get(KEY, []) if _accepted_key(k)]
        status = response.status_code
        assert status in (200, 422), f"push {body}: {status} {response.text[:300]}"
        if rows is None:
            if status == 200:
                probe = self._looked_up(sorted(set(pushed_keys)) or [1], list(FEATURES))
                pytest.fail(f"push {body} answered 200, but the rules refuse it ({reason}); a lookup of its keys "
                            f"now answers {probe.status_code} {probe.text[:200]}")
            self._check_lookup(sorted(set(pushed_keys)) or [1], list(FEATURES), f"after the refused push {body}: ")
            return
        if status == 422 and mixes_kinds(df):
            return  # left open by the rules (see mixes_kinds)
        assert status == 200, f"push {body} answered {status}, the rules accept it: {response.text[:300]}"
        written = 0
        if body["to"] != "offline":
            for key, row in newest_per_key(rows).items():
                if key not in self.model or row.at > self.model[key].at:
                    self.model[key] = row
                    written += 1
        assert response.json()["online_written"] == written, (body, response.json())

    @rule(keys=st.lists(st.sampled_from(GOOD_KEYS), max_size=3), bad=st.sampled_from(BAD_KEYS), at=st.integers(0, 3),
          features=st.lists(st.sampled_from(list(FEATURES)), min_size=1, unique=True))
    def look_up_with_a_bad_key(self, keys: list, bad: Any, at: int, features: list[str]) -> None:
        """A key that is not an Int64 among good ones: the whole lookup is a 422."""
        self._check_lookup(keys[:at] + [bad] + keys[at:], features, "")

    @invariant()
    def every_entity_is_served_its_newest_accepted_row(self) -> None:
        self._check_lookup(GOOD_KEYS, list(FEATURES), "")


def _accepted_key(key: Any) -> bool:
    try:
        join_key(key)
        return True
    except Refused:
        return False


def test_push_lookup_sequences_serve_the_newest_accepted_row(served):
    machine = type("PushLookUp", (PushLookUpModel,), {"client": served.client, "store": served.store})
    # One failure is shrunk and reported: a sequence replays many requests, so shrinking several at once
    # takes minutes (the input rules' tests report each broken column on its own).
    run_state_machine_as_test(machine, settings=settings(max_examples=50, stateful_step_count=12, deadline=None,
                                                         database=None, report_multiple_bugs=False,
                                                         phases=NO_EXPLAIN,
                                                         suppress_health_check=HEALTH))

