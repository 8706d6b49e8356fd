"""One JSON response class for the whole app: orjson, with the product's JSON conventions.

orjson writes tz-aware datetimes as ISO 8601 (``OPT_UTC_Z`` gives the ``Z`` suffix, naive ones are taken
as UTC), NaN and infinities as ``null`` and lists natively; ``bytes`` become base64 text. That is
exactly what ``OnlineResponse.to_rest()`` produces, without a Python pass over every value.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from starlette.responses import JSONResponse, Response

OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    item = getattr(value, "item", None)  # numpy / Arrow scalars
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, default=_default, option=OPTIONS)


class JSONBytesResponse(JSONResponse):
    """``application/json`` rendered by orjson (FastAPI's ORJSONResponse is deprecated). A JSONResponse
    subclass, so FastAPI documents routes' response models in OpenAPI."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


class RawJSONResponse(Response):
    """Already-rendered JSON bytes."""

    media_type = "application/json"
