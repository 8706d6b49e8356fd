"""The FastAPI app factory.

>>> from featurestore import FeatureStore                      # doctest: +SKIP
>>> app = create_app(FeatureStore("path/to/repo"))           # doctest: +SKIP
>>> # uvicorn.run(app, port=6566)  or  featurestore serve --port 6566

Routes: ``POST /get-online-features``, ``POST /push``, ``GET /registry/...``, ``GET /health``,
``GET /metrics``, the web catalog under ``/ui`` (``serving.routers.ui``); OpenAPI at ``/openapi.json``, docs at ``/docs``. Lookups and pushes call the store
synchronously in Starlette's thread pool (the store's calls are blocking I/O).
"""

from __future__ import annotations

import copy
import logging
import os
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI  # noqa: TID253

from featurestore import __version__
from featurestore.store import FeatureStore
from serving import errors, fast_path
from serving.auth import ENV_VAR as API_KEYS_ENV
from serving.auth import REMOTE_WRITES_ENV, ApiKeyAuth, local_writes_only, parse_api_keys
from serving.fast_path import FastLookup
from serving.limits import ServingLimits
from serving.metrics import ServingMetrics
from serving.middleware import ServingMiddleware
from serving.responses import JSONBytesResponse
from serving.routers import admin, online, push, registry, ui
from serving.state import ServingState

log = logging.getLogger("featurestore.serving")

REPO_ENV = "FEATURESTORE_REPO"
DESCRIPTION = """Online feature lookups, pushes and a read-only registry view of one feature repo.

`/get-online-features` and `/push` take and return Feast's shapes. Errors are
`{"error": {"type": ..., "message": ...}}`. With API keys configured, send `X-API-Key: <key>` or
`Authorization: Bearer <key>`: lookups and the registry need the `read` scope, `/push` needs `write`.
Without keys, `/push` is answered only for clients on the server's machine (403 otherwise) unless the
server was started with `--allow-remote-writes`.
"""


class FeatureServerApp(FastAPI):
    """The FastAPI app, answering plain ``POST /get-online-features`` lookups itself before the
    middleware stack (``serving.fast_path``); every other request, and every lookup the fast path
    does not serve, takes the ordinary FastAPI route."""

    fast_lookup: FastLookup | None = None

    async def __call__(self, scope, receive, send) -> None:
        if (self.fast_lookup is not None and scope["type"] == "http" and scope["path"] == fast_path.PATH
                and scope["method"] == "POST" and not self.root_path):
            receive = await self.fast_lookup.handle(scope, receive, send)
            if receive is None:
                return
        await super().__call__(scope, receive, send)


_DEFAULTS = ServingLimits()


def create_app(store: "FeatureStore", *, api_keys: dict[str, set[str]] | None = None,
               max_body_bytes: int = _DEFAULTS.max_body_bytes, max_entities: int = _DEFAULTS.max_entities,
               max_features: int = _DEFAULTS.max_features, shape_cache_bytes: int | None = None,
               close_store: bool = False, allow_remote_writes: bool = False) -> FastAPI:
    """A FastAPI app serving ``store``.

    ``api_keys`` maps key -> scopes (``{"read"}``, ``{"read", "write"}``); None leaves reads open and
    answers ``/push`` only for clients on this machine, unless ``allow_remote_writes`` (see
    ``serving.auth``).
    ``max_body_bytes``, ``max_entities`` (entity rows of a lookup, rows of a push) and ``max_features``
    (references in a lookup) bound requests (413 beyond); ``shape_cache_bytes`` bounds the store's
    cache of lookup plans (None keeps ``store.online_cache_bytes``). See ``serving.limits``.
    ``close_store`` closes the store when the app shuts down.
    """
    ServingLimits(max_body_bytes=max_body_bytes, max_entities=max_entities, max_features=max_features,
                  shape_cache_bytes=_DEFAULTS.shape_cache_bytes if shape_cache_bytes is None else shape_cache_bytes)
    if shape_cache_bytes is not None:  # (the line above refuses limits that are not positive numbers)
        store.online_cache_bytes = shape_cache_bytes

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:  # warm up: registry snapshot and the online store connection, if they answer
            store.online_reader.catalog()
            store.online_store  # noqa: B018 - opens the backend
        except Exception as exc:  # noqa: BLE001 - a server must start even if a backend is down
            log.warning("warm-up failed (%s: %s); serving anyway", type(exc).__name__, exc)
        try:
            yield
        finally:
            if close_store:
                store.close()

    metrics = ServingMetrics()
    app = FeatureServerApp(title="featurestore feature server", version=__version__, description=DESCRIPTION,
                  default_response_class=JSONBytesResponse, lifespan=lifespan)
    app.state.serving = ServingState(store=store, metrics=metrics, max_entities=max_entities,
                                     max_body_bytes=max_body_bytes, max_features=max_features)
    metrics.watch_shape_cache(store)
    metrics.watch_quality(store)
    errors.install(app, metrics)
    read_deps, write_deps = [], []
    auth = None
    if api_keys is not None:
        auth = ApiKeyAuth(api_keys)
        read_deps, write_deps = [Depends(auth.require("read"))], [Depends(auth.require("write"))]
    elif not allow_remote_writes:
        write_deps = [Depends(local_writes_only)]
    app.include_router(online.router, dependencies=read_deps)
    app.include_router(push.router, dependencies=write_deps)
    app.include_router(registry.router, dependencies=read_deps)
    app.include_router(admin.router)
    app.state.catalog = ui.CatalogState(auth=auth)  # the web catalog checks keys itself (a login form too)
    app.include_router(ui.router)
    app.add_middleware(ServingMiddleware, max_body_bytes=max_body_bytes, metrics=metrics)
    app.fast_lookup = FastLookup(app.state.serving, auth)
    _add_openapi_schemas(app, online.OPENAPI_SCHEMAS, max_features)
    return app


def _add_openapi_schemas(app: FastAPI, schemas: dict, max_features: int) -> None:
    """Add component schemas of bodies a route parses itself (FastAPI only lists the ones it parses),
    with this app's limit on ``features``."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = generate()
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            components.update(copy.deepcopy(schemas))
            for variant in components["GetOnlineFeaturesRequest"]["properties"]["features"]["anyOf"]:
                if variant.get("type") == "array":
                    variant.update(maxItems=max_features, uniqueItems=True)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """The app ``featurestore serve`` runs (a factory, so each uvicorn worker opens its own store):
    the repo from ``FEATURESTORE_REPO``, API keys from ``FEATURESTORE_API_KEYS``, anonymous remote
    writes allowed when ``FEATURESTORE_ALLOW_REMOTE_WRITES=1``, limits from
    ``FEATURESTORE_MAX_BODY_BYTES`` and the others of ``serving.limits``."""
    limits = ServingLimits.from_env()
    store = FeatureStore(repo_path=os.environ.get(REPO_ENV, "."))
    return create_app(store, api_keys=parse_api_keys(os.environ.get(API_KEYS_ENV)),
                      max_body_bytes=limits.max_body_bytes, max_entities=limits.max_entities,
                      max_features=limits.max_features, shape_cache_bytes=limits.shape_cache_bytes,
                      close_store=True, allow_remote_writes=os.environ.get(REMOTE_WRITES_ENV) == "1")
