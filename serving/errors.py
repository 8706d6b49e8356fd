"""The HTTP face of the product's error tree, in one place.

Every error body is ``{"error": {"type": ..., "message": ...}}`` (validation errors add ``field`` and
``details``). The core raises :mod:`featurestore.errors`; this module decides the status:

========================================  ======
``NotFoundError`` (view, feature, ...)     404
``InvalidInputError``, ``DefinitionError``  422 (request validation too, naming the field)
``ConflictError``                           409
body over ``max_body_bytes``, too many rows 413
``BackendUnavailableError``                 503 (with ``Retry-After``)
``DamagedStateError``                       500 with the message: the damaged file or path and its repair
                                            (retrying does not help until someone repairs it)
``ConfigError``, ``MissingDependencyError``  500 with the message
anything unexpected                         500 naming only the error type (the traceback goes to the log)
========================================  ======
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from featurestore.errors import (
    BackendUnavailableError,
    ConfigError,
    ConflictError,
    DamagedStateError,
    DefinitionError,
    FeatureStoreError,
    InvalidInputError,
    MissingDependencyError,
    NotFoundError,
)
from serving.responses import JSONBytesResponse

if TYPE_CHECKING:
    from fastapi import FastAPI

    from serving.metrics import ServingMetrics

log = logging.getLogger("featurestore.serving")

_STATUS: dict[type, int] = {
    NotFoundError: 404,
    InvalidInputError: 422,
    DefinitionError: 422,
    ConflictError: 409,
    BackendUnavailableError: 503,
    DamagedStateError: 500,
    MissingDependencyError: 500,
    ConfigError: 500,
    FeatureStoreError: 500,
}

_HTTP_TYPES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
               405: "MethodNotAllowed", 413: "RequestTooLarge", 415: "UnsupportedMediaType",
               422: "ValidationError", 500: "InternalServerError", 503: "ServiceUnavailable"}


class ErrorDetail(BaseModel):
    type: str = Field(description="Error class, e.g. FeatureViewNotFound, ValidationError, RequestTooLarge")
    message: str
    field: str | None = Field(default=None, description="The offending request field (validation errors)")
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "The body cannot be parsed (not UTF-8 JSON)", 401: "Missing or invalid API key", 403: "The API key lacks the needed scope",
            404: "Unknown feature view, feature, service or push source", 409: "Conflict",
            413: "Request body or entity count over the limit", 422: "Invalid request (names the field)",
            500: "Server error: names the error type only, or, for damaged state (a store path or file), "
                 "the damaged path and what repairs it",
            503: "The online store (e.g. Redis) is unreachable"}
    return {s: {"model": ErrorResponse, "description": text[s]} for s in statuses}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error statuses a route can answer (plus 413/500 everywhere)."""
    return _responses(*sorted({*statuses, 413, 500}))


class RequestTooLarge(StarletteHTTPException):
    """413: the body is over ``max_body_bytes`` or a request has too many entity rows."""

    def __init__(self, message: str):
        super().__init__(status_code=413, detail=message)


def body(type_: str, message: str, **extra: Any) -> dict[str, Any]:
    err = {"type": type_, "message": message}
    err.update({k: v for k, v in extra.items() if v is not None})
    return {"error": err}


def status_for(exc: FeatureStoreError) -> int:
    for cls in type(exc).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 500


def store_error_response(exc: FeatureStoreError) -> JSONBytesResponse:
    status = status_for(exc)
    field = getattr(exc, "field", None) if isinstance(exc, DefinitionError) else None
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONBytesResponse(body(type(exc).__name__, str(exc), field=field), status_code=status,
                             headers=headers)


def unexpected_error_response(exc: BaseException) -> JSONBytesResponse:
    name = type(exc).__name__
    return JSONBytesResponse(body(name, f"internal error ({name}); the server log has the details"),
                             status_code=500)


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


def _union_value(error: dict[str, Any]) -> tuple | None:
    """The loc of the list element a union-member error is about, else None. Unions of the request
    models are list elements, so their locs end ``..., <index>, "<member tag>"``."""
    loc = tuple(error.get("loc", ()))
    if len(loc) >= 2 and isinstance(loc[-1], str) and isinstance(loc[-2], int):
        return loc[:-1]
    return None


def _collapse_unions(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic reports a value that fits no member of a union once per member
    (``entities.driver_id.0.constrained-int``, ``entities.driver_id.0.str``): one error on the value."""
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(errors):
        value = _union_value(errors[i])
        j = i + 1
        while value is not None and j < len(errors) and _union_value(errors[j]) == value:
            j += 1
        if j - i > 1:
            msgs = [e.get("msg", "").removeprefix("Input should be ") for e in errors[i:j]]
            out.append({"loc": value, "msg": "Input should be " + " or ".join(dict.fromkeys(msgs)),
                        "type": "union"})
        else:
            out.append(errors[i])
        i = j
    return out


def validation_error_response(errors: list[dict[str, Any]]) -> JSONBytesResponse:
    details = [{"field": _field(e.get("loc", ())), "message": e.get("msg", ""), "kind": e.get("type", "")}
               for e in _collapse_unions(list(errors))]
    if details:
        first = details[0]
        more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
        message = f"field {first['field']!r}: {first['message']}{more}"
    else:
        first, message = {"field": "body"}, "invalid request"
    return JSONBytesResponse(body("ValidationError", message, field=first["field"], details=details),
                             status_code=422)


def http_error_response(exc: StarletteHTTPException) -> JSONBytesResponse:
    status = exc.status_code
    type_ = _HTTP_TYPES.get(status, "HTTPError")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONBytesResponse(body(type_, message), status_code=status, headers=getattr(exc, "headers", None))


def handle_store_error(metrics: "ServingMetrics", method: str, path: str,
                       exc: FeatureStoreError) -> JSONBytesResponse:
    """What the app answers to an error the store raised: counted, logged when it is the server's."""
    metrics.store_error(type(exc).__name__)
    if status_for(exc) >= 500:
        log.warning("%s on %s %s: %s", type(exc).__name__, method, path, exc)
    return store_error_response(exc)


def install(app: "FastAPI", metrics: "ServingMetrics") -> None:
    """Register the handlers on ``app``; unexpected errors are caught by ``ServingMiddleware``."""
    from fastapi.exceptions import RequestValidationError  # noqa: TID253

    async def on_store_error(request, exc: FeatureStoreError):
        return handle_store_error(metrics, request.method, request.url.path, exc)

    async def on_validation_error(request, exc: RequestValidationError):
        return validation_error_response(list(exc.errors()))

    async def on_http_error(request, exc: StarletteHTTPException):
        return http_error_response(exc)

    app.add_exception_handler(FeatureStoreError, on_store_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
