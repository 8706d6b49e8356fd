"""uvicorn's httptools HTTP/1.1 protocol, with a response's writes coalesced into one socket write and
read deadlines for request headers and bodies.

uvicorn writes a response's status line and headers when the app sends ``http.response.start``, and the
body when it sends ``http.response.body``: two ``transport.write`` calls, which uvloop turns into two
``send`` system calls (and, with ``TCP_NODELAY``, two TCP segments the client must read). On the
feature server's hot path a response is small and both messages come within one event-loop iteration,
so the writes of an iteration are gathered and handed to the transport once, at the end of it
(``loop.call_soon``): one system call per response, the same bytes in the same order. Closing flushes
first. Everything else (reading, flow control, upgrades) is the transport's own.

``GuardedHttpToolsProtocol`` adds what uvicorn lacks against stalled or hostile clients: a request's
line and headers must arrive within ``header_timeout`` seconds -- counted from the connection's opening
for its first request, from the first byte for a later one (the idle wait between requests is uvicorn's
keep-alive timeout, 5 s) -- and within ``max_header_bytes``; its body within ``body_timeout`` seconds of
the headers' end. A deadline missed answers 408 (431 for headers too large) and closes the connection; a
connection that has not begun a request is closed without an answer (a client racing a new request
against it would read the 408 as its answer). Deadlines are checked by one sweep per event loop every
``SWEEP_SECONDS``, so a request costs a few attribute writes, not timers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose ``write`` calls within one loop iteration reach the real one as a single write."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # reading, flow control, extra info: the real transport's
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` writing through a ``CoalescingTransport`` (``uvicorn.Config(http=...)``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))


SWEEP_SECONDS = 0.25
_HEADERS, _BODY = "headers", "body"
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _error_response(status: int, type_: str, message: str) -> bytes:
    """A complete response in the app's error shape (``serving.errors``), closing the connection."""
    body = orjson.dumps({"error": {"type": type_, "message": message}})
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))) + body


class _Deadlines:
    """The guarded connections of one event loop, swept every ``SWEEP_SECONDS`` while there are any."""

    _of_loop: dict[int, "_Deadlines"] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: set[GuardedHttpToolsProtocol] = set()
        self.handle: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> "_Deadlines":
        deadlines = cls._of_loop.get(id(loop))
        if deadlines is None or deadlines.loop is not loop:
            deadlines = cls._of_loop[id(loop)] = cls(loop)
        return deadlines

    def add(self, protocol: "GuardedHttpToolsProtocol") -> None:
        self.connections.add(protocol)
        if self.handle is None:
            self.handle = self.loop.call_later(SWEEP_SECONDS, self.sweep)

    def sweep(self) -> None:
        now = self.loop.time()
        for protocol in [p for p in self.connections if p.deadline is not None and p.deadline <= now]:
            protocol.deadline_passed()
        if self.connections:
            self.handle = self.loop.call_later(SWEEP_SECONDS, self.sweep)
        else:
            self.handle = None
            if self._of_loop.get(id(self.loop)) is self:
                del self._of_loop[id(self.loop)]


class GuardedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """``CoalescingHttpToolsProtocol`` with header and body read deadlines and a header size limit
    (``serving.limits``); pass ``functools.partial(GuardedHttpToolsProtocol, header_timeout=...,
    body_timeout=..., max_header_bytes=...)`` as uvicorn's ``http``."""

    def __init__(self, *args: Any, header_timeout: float = 10.0, body_timeout: float = 30.0,
                 max_header_bytes: int = 65_536, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout, self.body_timeout, self.max_header_bytes = header_timeout, body_timeout, max_header_bytes
        self.deadline: float | None = None
        self._phase: str | None = None  # _HEADERS: awaiting or reading a request's headers; _BODY: its body
        self._begun = False  # bytes of the awaited request have arrived
        self._header_bytes = 0
        self._completed_in_chunk = False
        self._deadlines: _Deadlines | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()
        self._deadlines = _Deadlines.of(self.loop)
        self._deadlines.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._forget()  # the connection is the WebSocket protocol's from now on
        super().handle_websocket_upgrade()

    def _forget(self) -> None:
        self.deadline = None
        if self._deadlines is not None:
            self._deadlines.connections.discard(self)

    def _await_headers(self) -> None:
        self._phase, self._begun, self._header_bytes = _HEADERS, False, 0
        self.deadline = self.loop.time() + self.header_timeout

    def data_received(self, data: bytes) -> None:
        if self._phase is _HEADERS and self.deadline is None and (self.cycle is None or self.cycle.response_complete):
            self.deadline = self.loop.time() + self.header_timeout  # a keep-alive request's first byte
        self._completed_in_chunk = False
        super().data_received(data)
        # Still within a request's headers, and no request ended in this chunk: all of it was headers.
        if self._phase is _HEADERS and self._begun and not self._completed_in_chunk:
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, "RequestHeaderFieldsTooLarge",
                             f"request line and headers are over the limit of {self.max_header_bytes} bytes "
                             f"(max_header_bytes)")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase is None:  # pipelined behind a response still being sent: timed from its end
            self._phase, self.deadline = _HEADERS, None
        self._begun, self._header_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._phase, self.deadline = _BODY, self.loop.time() + self.body_timeout
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._completed_in_chunk = True
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
            self._await_headers()  # answered before its body ended: the next request is awaited now
        else:
            self._phase, self.deadline, self._begun = None, None, False

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if self.transport.is_closing() or pipelined:
            return  # closing, or the next request's headers are in and it starts now
        if self._phase is None:  # idle until the next request's first byte (uvicorn's keep-alive timeout)
            self._phase, self._begun, self._header_bytes, self.deadline = _HEADERS, False, 0, None
        elif self._phase is _HEADERS:  # a pipelined request's headers began during the response
            self.deadline = self.loop.time() + self.header_timeout

    def deadline_passed(self) -> None:
        """Called by the sweep once ``deadline`` is past: answer 408 if a request is under way, close."""
        phase, self.deadline = self._phase, None
        if self.transport.is_closing():
            return
        if phase is _HEADERS and not self._begun:
            self.transport.close()  # nothing asked on this connection: nothing to answer
        elif phase is _HEADERS:
            self._refuse(408, "RequestTimeout", f"request headers not received within {self.header_timeout:g} s "
                                                f"(header_timeout)")
        else:
            self._refuse(408, "RequestTimeout", f"request body not received within {self.body_timeout:g} s "
                                                f"(body_timeout)")

    def _refuse(self, status: int, type_: str, message: str) -> None:
        """Answer ``status`` and close, unless a response is under way on the connection (then only
        close); an app waiting for this request's body sees the client gone."""
        phase, cycle = self._phase, self.cycle
        self.deadline, self._phase = None, None
        answer = not self.pipeline
        if cycle is not None and not cycle.response_complete:
            if phase is _BODY:  # the cycle is this request's: its app must not answer as well
                answer = answer and not cycle.response_started
                cycle.disconnected = True
                cycle.message_event.set()
            else:  # the cycle is the previous request's, still answering
                answer = False
        if answer:
            self.transport.write(_error_response(status, type_, message))
        self.transport.close()
