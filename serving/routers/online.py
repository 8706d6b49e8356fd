"""``POST /get-online-features``: Feast's request and response shape.

The endpoint is ``async``. A store that can read without blocking (``CAP_ASYNC_READ``: Redis, over
TCP, TLS or a unix socket) is awaited on the event loop. Any other store is called through
``ServingState.store_calls``: inline on the event loop while it is healthy (a thread-pool hop per
request costs more than the lookup's own Python and, with the GIL handed between the loop and the
workers, gives long tails under concurrency), in the thread pool while it is failing, so that requests
waiting on it time out side by side, not one after another.

A lookup names at most ``max_features`` references (413 beyond), each once (422 naming the one listed
twice, as Feast refuses colliding names): the server caches a plan per distinct list
(``featurestore.online_read.ShapeCache``), and neither length nor repetition can inflate one.

The response is rendered by orjson straight from the store's columns (timestamps, bytes, NaN handled
by :mod:`serving.responses`), equal to ``OnlineResponse.to_rest()`` without a Python pass per value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, Request  # noqa: TID253
from fastapi.exceptions import RequestValidationError  # noqa: TID253
from pydantic import ValidationError

from featurestore.errors import InvalidInputError, NotFoundError
from featurestore.online_read import PRESENT
from featurestore.ports.online_store import CAP_ASYNC_READ, EventTimes
from serving.errors import RequestTooLarge, error_responses
from serving.models import GetOnlineFeaturesRequest, OnlineFeaturesResponse
from serving.responses import RawJSONResponse, dumps
from serving.state import state_of

if TYPE_CHECKING:
    from featurestore.online_read import OnlineResponse

router = APIRouter(tags=["online"])

EPOCH = "1970-01-01T00:00:00Z"  # Feast's event timestamp for "no value"


def rest_json(response: "OnlineResponse") -> bytes:
    """``response.to_rest()`` as JSON bytes.

    Features of one view share their entities' event timestamps (one ``EventTimes``, or equal lists of
    the same datetime objects), so each distinct sequence is rendered once and embedded as an
    ``orjson.Fragment``.
    """
    values, statuses, stamps = response.values, response.statuses, response.event_timestamps
    rendered: list[tuple[list, orjson.Fragment]] = []
    results = []
    for name in response.feature_names:
        ts = stamps[name]
        # The features of one view share one EventTimes object; lists (entity columns, on-demand
        # features, other stores) are compared with ==, which tests identity first per element.
        fragment = next((f for source, f in rendered if source is ts), None)
        if fragment is None and not isinstance(ts, EventTimes):
            fragment = next((f for source, f in rendered
                             if not isinstance(source, EventTimes) and source == ts), None)
        if fragment is None:
            if isinstance(ts, EventTimes):
                ts_list = ts.naive()  # rendered by orjson exactly as the tz-aware datetimes
            else:
                ts_list = ts
            fragment = orjson.Fragment(dumps([EPOCH if t is None else t for t in ts_list] if None in ts_list
                                             else ts_list))
            rendered.append((ts, fragment))
        sts = statuses[name]
        if sts.count(PRESENT) == len(sts):  # the usual column: a cached rendering
            sts = _all_present(len(sts))
        results.append({"values": values[name], "statuses": sts, "event_timestamps": fragment})
    return dumps({"metadata": {"feature_names": response.feature_names}, "results": results})


_ALL_PRESENT: dict[int, orjson.Fragment] = {}
_ALL_PRESENT_MAX_ROWS = 1_000  # larger renderings are not kept: 256 of 10,000 rows would hold 28 MB


def _all_present(n: int) -> orjson.Fragment:
    """``["PRESENT", ...]`` (n times) as JSON, rendered once per n (up to 1,000)."""
    fragment = _ALL_PRESENT.get(n)
    if fragment is None:
        fragment = orjson.Fragment(orjson.dumps([PRESENT] * n))
        if n <= _ALL_PRESENT_MAX_ROWS:
            if len(_ALL_PRESENT) > 256:
                _ALL_PRESENT.clear()
            _ALL_PRESENT[n] = fragment
    return fragment


# The body is parsed by pydantic straight from the bytes (``model_validate_json``), cheaper per request
# than FastAPI's json.loads + validate + dependency solving; the schema is documented by hand.
_REQUEST_BODY = {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/GetOnlineFeaturesRequest"}}}}
# Components the app adds to its OpenAPI document (see ``serving.app``).
OPENAPI_SCHEMAS = {"GetOnlineFeaturesRequest": GetOnlineFeaturesRequest.model_json_schema(
    ref_template="#/components/schemas/{model}")}


async def parse_body(request: Request) -> GetOnlineFeaturesRequest:
    try:
        return GetOnlineFeaturesRequest.model_validate_json(await request.body())
    except ValidationError as exc:  # the same 422 as FastAPI's own body validation
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None


@router.post("/get-online-features", response_model=OnlineFeaturesResponse,
             responses=error_responses(401, 403, 404, 422, 503), openapi_extra={"requestBody": _REQUEST_BODY},
             summary="Latest feature values for entities (Feast-compatible)")
async def get_online_features(request: Request) -> RawJSONResponse:
    body = await parse_body(request)
    state = state_of(request)
    rows = max(map(len, body.entities.values()), default=0)
    if rows > state.max_entities:
        raise RequestTooLarge(f"entities: {rows} rows, at most {state.max_entities} per request")
    if body.feature_service is not None:
        if ":" in body.feature_service:  # the core would read a "view:feature" string as a reference
            raise NotFoundError(f"feature service {body.feature_service!r} is not in the registry")
        features = body.feature_service
    else:
        features = body.features
        check_feature_list(features, state.max_features)
    if CAP_ASYNC_READ in state.store.online_store.capabilities:
        return RawJSONResponse(await _lookup_async(state, features, body, rows))
    return RawJSONResponse(await state.store_calls.run(_lookup, state, features, body, rows))


def check_feature_list(features: list[str], limit: int) -> None:
    """A list of at most ``limit`` references, none twice (413 / 422 naming the problem)."""
    if len(features) > limit:
        raise RequestTooLarge(f"features: {len(features)} references, at most {limit} per request "
                              f"(the server's max_features)")
    if len(set(features)) != len(features):
        seen: set[str] = set()
        twice = next(f for f in features if f in seen or seen.add(f))
        raise InvalidInputError(f"features: {twice!r} is listed more than once")


def _lookup(state, features, body: GetOnlineFeaturesRequest, rows: int) -> bytes:
    store = state.store
    response = store.get_online_features(features, body.entities, body.full_feature_names)
    return respond(state, features, body.full_feature_names, rows, response)


async def _lookup_async(state, features, body: GetOnlineFeaturesRequest, rows: int) -> bytes:
    store = state.store
    response = await store.online_reader.read_async(features, body.entities, body.full_feature_names)
    return respond(state, features, body.full_feature_names, rows, response)


def respond(state, features, full_feature_names: bool, rows: int, response: "OnlineResponse") -> bytes:
    """The JSON body of a successful lookup; counts it in the metrics."""
    content = rest_json(response)
    state.metrics.lookup(rows, _newest_by_view(state.store, features, full_feature_names, response))
    for view, invalid in response.invalid_rows.items():
        state.metrics.invalid_rows(view, invalid)
    return content


def _newest_by_view(store, features, full_feature_names: bool, response: "OnlineResponse") -> dict:
    shape = store.online_reader.shape(features, full_feature_names)  # cached per registry version
    newest = {}
    for req in shape.requests:
        features = req.all_features  # incl. on-demand inputs
        stamps = response.event_timestamps.get(shape.names.get((req.name, features[0]))) if features else None
        if isinstance(stamps, EventTimes):
            newest[req.name] = stamps.newest()
        elif stamps:
            newest[req.name] = max((t for t in stamps if t is not None), default=None)
    return newest
