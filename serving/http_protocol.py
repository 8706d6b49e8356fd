"""uvicorn's httptools HTTP/1.1 protocol, with a response's writes coalesced into one socket write.

uvicorn writes a response's status line and headers when the app sends ``http.response.start``, and the
body when it sends ``http.response.body``: two ``transport.write`` calls, which uvloop turns into two
``send`` system calls (and, with ``TCP_NODELAY``, two TCP segments the client must read). On the
feature server's hot path a response is small and both messages come within one event-loop iteration,
so the writes of an iteration are gathered and handed to the transport once, at the end of it
(``loop.call_soon``): one system call per response, the same bytes in the same order. Closing flushes
first. Everything else (reading, flow control, upgrades) is the transport's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

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
