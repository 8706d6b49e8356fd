"""The fast path of ``POST /get-online-features``: the common, well-formed lookup answered by the app
object itself (``serving.app.FeatureServerApp.__call__``), before Starlette's middleware stack,
routing and FastAPI's request machinery (they cost about as much CPU as the lookup itself: ~75% of a
1 x 10 request was plumbing).

Only the happy path lives here; anything else is handed, body and all, to the full FastAPI route, so
every error keeps its one definition there (422 naming the field, 404, 413, 401/403, 500):

- the body must be a JSON object of the plain shape: ``features`` a non-empty list of strings (or
  ``feature_service`` a string), ``entities`` an object of lists of int64 integers or strings,
  ``full_feature_names`` a boolean, no other key; otherwise -> the full route (pydantic decides);
- with API keys configured, the request must carry a key with the ``read`` scope (same header rules
  as ``serving.auth``); otherwise -> the full route (401/403);
- more entity rows or feature references than allowed, or a reference listed twice -> the full
  route (413, 422);
- the read itself is awaited without blocking the loop when the backend can (``read_many_async``:
  Redis); a backend that cannot is called inline as by the route, and while it is failing
  (``StoreCalls.degraded``) the request goes to the full route (thread pool);
- a lookup error other than the backend being unavailable (unknown view: 404, bad key: 422 ...) ->
  the full route, which looks up again and renders the error (lookups have no side effects);
- ``BackendUnavailableError`` is answered here, exactly as the app's handler does (503, counted in
  ``featurestore_store_errors_total``), so a down Redis costs one socket timeout, not two.

The body limit is the app's: a declared ``Content-Length`` over it, or more bytes received, go to the
full route (whose middleware answers 413). Metrics are the same: latency under the route template
``/get-online-features`` (as ``ServingMiddleware`` records it), lookups, entity rows and freshness.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson

from featurestore.errors import BackendUnavailableError
from featurestore.ports.online_store import CAP_ASYNC_READ
from serving.errors import handle_store_error
from serving.routers.online import _lookup, respond

if TYPE_CHECKING:
    from serving.auth import ApiKeyAuth
    from serving.state import ServingState

Receive = Any

PATH = "/get-online-features"
_KEYS = frozenset({"features", "feature_service", "entities", "full_feature_names"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_HEADERS_JSON = (b"content-type", b"application/json")


class FastBody:
    """The parts of a lookup body ``serving.routers.online._lookup`` uses (duck-types the model)."""

    __slots__ = ("features", "feature_service", "entities", "full_feature_names")

    def __init__(self, features, feature_service, entities, full_feature_names) -> None:
        self.features = features
        self.feature_service = feature_service
        self.entities = entities
        self.full_feature_names = full_feature_names


def parse(raw: bytes) -> FastBody | None:
    """The body when it has the plain shape the fast path serves, else None (the full route decides)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not data.keys() <= _KEYS:
        return None
    features = data.get("features")
    service = data.get("feature_service")
    full = data.get("full_feature_names", False)
    entities = data.get("entities")
    if type(full) is not bool or type(entities) is not dict:
        return None
    if features is not None:
        if service is not None or type(features) is not list or not features:
            return None
        for f in features:
            if type(f) is not str:
                return None
    elif type(service) is not str or not service or ":" in service:
        return None
    for values in entities.values():
        if type(values) is not list:
            return None
        kinds = set(map(type, values))
        if kinds == {int}:  # the usual column, checked without a Python loop
            if values and not (_INT64_MIN <= min(values) and max(values) <= _INT64_MAX):
                return None
            continue
        for v in values:
            t = type(v)
            if t is int:
                if not _INT64_MIN <= v <= _INT64_MAX:
                    return None
            elif t is not str:
                return None
    return FastBody(features, service, entities, full)


def _api_key(scope: dict) -> str | None:
    """The key as ``serving.auth`` sees it through FastAPI's security classes: the first ``X-API-Key``
    header if not empty, else the credentials of the first ``Authorization: Bearer`` header."""
    header = authorization = None
    for name, value in scope["headers"]:
        if name == b"x-api-key" and header is None:
            header = value.decode("latin-1")
        elif name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    if header:
        return header
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            return credentials
    return None


def authorized(auth: "ApiKeyAuth | None", scope: dict) -> bool:
    if auth is None:
        return True
    scopes = auth.scopes_of(_api_key(scope))
    return scopes is not None and "read" in scopes


async def serve(state: "ServingState", auth: "ApiKeyAuth | None", scope: dict, body: bytes,
                send) -> int | None:
    """Answer the lookup and return the HTTP status sent, or None (nothing sent) for the full route."""
    if not authorized(auth, scope):
        return None
    parsed = parse(body)
    if parsed is None:
        return None
    rows = max(map(len, parsed.entities.values()), default=0)
    if rows > state.max_entities:
        return None
    if parsed.features is not None and (len(parsed.features) > state.max_features
                                        or len(set(parsed.features)) != len(parsed.features)):
        return None
    features: Any = parsed.feature_service if parsed.features is None else parsed.features
    store = state.store
    try:
        if CAP_ASYNC_READ in store.online_store.capabilities:
            # Awaiting the backend does not block the loop: no thread pool, no degraded mode needed.
            response = await store.online_reader.read_async(features, parsed.entities, parsed.full_feature_names)
            content = respond(state, features, parsed.full_feature_names, rows, response)
        elif state.store_calls.degraded:
            return None  # the full route calls a failing backend from the thread pool
        else:
            content = _lookup(state, features, parsed, rows)
    except BackendUnavailableError as exc:
        if CAP_ASYNC_READ not in store.online_store.capabilities:
            state.store_calls.degraded = True
        response = handle_store_error(state.metrics, scope.get("method", "POST"), PATH, exc)
        await response(scope, _no_receive, send)
        return response.status_code
    except Exception:  # noqa: BLE001 - the full route renders every other error
        return None
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(content)), _HEADERS_JSON]})
    await send({"type": "http.response.body", "body": content})
    return 200


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}


class FastLookup:
    """Tries the fast path for one request: ``await handle(scope, receive, send)`` returns None when it
    answered, else the ``receive`` the full app must use (it replays the body already read)."""

    def __init__(self, state: "ServingState", auth: "ApiKeyAuth | None") -> None:
        self.state, self.auth = state, auth

    async def handle(self, scope: dict, receive: Receive, send) -> Receive | None:
        start = perf_counter()
        limit = self.state.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    return receive  # the full app refuses it (413) or reads it as it can
                break
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            received += len(chunk)
            if received > limit:
                return _replay(chunks, receive, more=True)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        status = await serve(self.state, self.auth, scope, body, send)
        if status:
            self.state.metrics.observe_request(PATH, "POST", status, perf_counter() - start)
            return None
        return _replay([body], receive, more=False)


def _replay(chunks: list[bytes], receive: Receive, *, more: bool) -> Receive:
    """A ``receive`` that yields the chunks already read, then defers to the real one."""
    pending = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    if not more:
        pending[-1]["more_body"] = False
    pending.reverse()

    async def replay() -> dict:
        if pending:
            return pending.pop()
        return await receive()

    return replay
