"""``GET /health`` (does the online store answer? 200 / 503) and ``GET /metrics`` (Prometheus text).
Both stay open when API keys are configured."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
from fastapi import APIRouter, Request  # noqa: TID253
from starlette.responses import Response

from featurestore.errors import FeatureStoreError
from serving.errors import body, log
from serving.models import HealthResponse
from serving.responses import JSONBytesResponse
from serving.state import state_of

router = APIRouter(tags=["admin"])


def check_online_store(store) -> None:
    """Raise if the online store does not answer: a read of a key that need not exist from the first
    registered view with features (no views: nothing to check)."""
    online = store.online_store
    for view in store.online_reader.catalog().views.values():
        if not view.features:
            continue
        keys = view.entity_columns
        feature = view.features[0]
        online.read(view.name, [k.name for k in keys], [tuple(_probe_value(k.dtype.to_arrow()) for k in keys)],
                    [feature.name], {feature.name: feature.dtype.to_arrow()})
        return


def _probe_value(arrow_type: pa.DataType):
    if pa.types.is_integer(arrow_type):
        return -1
    if pa.types.is_floating(arrow_type):
        return -1.0
    if pa.types.is_boolean(arrow_type):
        return False
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return b"\x00health"
    if pa.types.is_timestamp(arrow_type):
        return datetime(1970, 1, 1, tzinfo=timezone.utc)
    return "\x00health"


def _online_store_name(store) -> str:
    return store.config.online_store.get("type", "unknown")


@router.get("/health", response_model=HealthResponse,
            responses={503: {"model": HealthResponse, "description": "The online store does not answer"}})
def health(request: Request) -> JSONBytesResponse:
    state = state_of(request)
    store = state.store
    try:
        version, _ = store.registry_snapshot()
        check_online_store(store)
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy", never a 500
        state.metrics.store_error(type(exc).__name__)
        message = str(exc) if isinstance(exc, FeatureStoreError) else f"{type(exc).__name__} (see the server log)"
        if not isinstance(exc, FeatureStoreError):
            log.warning("health check failed", exc_info=True)
        return JSONBytesResponse({"status": "unavailable", "online_store": _online_store_name(store),
                                  **body(type(exc).__name__, message)}, status_code=503)
    return JSONBytesResponse({"status": "ok", "online_store": _online_store_name(store),
                              "registry_version": version})


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
def metrics(request: Request) -> Response:
    m = state_of(request).metrics
    return Response(m.render(), media_type=m.content_type)
