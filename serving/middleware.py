"""One pure-ASGI middleware for what every request needs (cheaper than Starlette's BaseHTTPMiddleware):

- the body limit: a ``Content-Length`` over ``max_body_bytes`` is refused before the body is read, and
  the bytes actually received are counted too (chunked bodies, lying headers) -> 413;
- the request latency histogram by route template and status;
- the last line of defence: an exception nothing else handled becomes a 500 JSON body naming only
  its type (the traceback goes to the log), so the server never answers with a stack trace. A client
  gone before its body arrived (``ClientDisconnect``: it left, or missed the body deadline and got a
  408 from ``serving.http_protocol``) is not an error: nothing is answered or logged, and the request
  counts with status 499 (the client closed the request).
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any, Awaitable, Callable

from starlette.requests import ClientDisconnect

from serving.errors import RequestTooLarge, http_error_response, unexpected_error_response
from serving.metrics import ServingMetrics

log = logging.getLogger("featurestore.serving")

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]


_CLIENT_CLOSED = 499
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class ServingMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: ServingMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        limit = self.max_body_bytes
        state = {"status": 500, "started": False, "received": 0}

        async def send_tracking(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                state["status"] = message["status"]
            await send(message)

        async def receive_limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    raise RequestTooLarge(f"request body is over the limit of {limit} bytes")
            return message

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                raise RequestTooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes")
            await self.app(scope, receive_limited, send_tracking)
        except ClientDisconnect:
            if not state["started"]:
                state["status"] = _CLIENT_CLOSED
        except Exception as exc:  # noqa: BLE001 - the point of this block
            if state["started"]:
                raise  # too late for a clean answer; the server closes the connection
            if isinstance(exc, RequestTooLarge):
                response = http_error_response(exc)
                response.headers["Connection"] = "close"  # the rest of the body is not read
            else:
                log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
                response = unexpected_error_response(exc)
            await response(scope, receive, send_tracking)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            if method not in _METHODS:
                method = "OTHER"  # any token is a method to the HTTP parser: keep the label set bounded
            self.metrics.observe_request(path, method, state["status"], perf_counter() - start)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
