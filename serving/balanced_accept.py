"""Spreading connections over ``featurestore serve --workers N``: one shared socket, one accept at a time.

All workers listen on one socket inherited from the parent (one kernel accept queue). uvloop would accept
every queued connection as soon as its worker wakes, so a client opening its 8 keep-alive connections at
once could find all 8 on one worker; ``SO_REUSEPORT`` sockets (one queue per worker) avoid that but
spread connections by address hash, and 8 connections often land 6:2 or 7:1 (measured: two workers
then serve no more than one). Here each worker's event loop accepts at most one connection per
readiness callback, then returns to its loop: an idle worker comes back for the next connection at
once, a busy one only after the request at hand, so connections go where there is time to serve them.

``loop_factory`` is passed to uvicorn as its loop (``Config(loop="serving.balanced_accept:loop_factory")``):
uvloop's loop, whose ``create_server`` on an already-bound TCP socket without TLS serves it this way.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvloop

_ACCEPT_RETRY_SECONDS = 1.0


class OneAtATimeServer:
    """What uvicorn needs of an ``asyncio.Server`` (``close``, ``wait_closed``, ``sockets``), accepting one
    connection per readiness callback of the listening socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol_factory,
                 backlog: int) -> None:
        self._loop = loop
        self._sock = sock
        self._protocol_factory = protocol_factory
        self._serving = True
        self._tasks: set[asyncio.Task] = set()
        sock.setblocking(False)
        sock.listen(backlog)
        loop.add_reader(sock.fileno(), self._accept_one)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self._sock,)

    def _accept_one(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the client gave up: nothing to do
        except OSError:  # out of file descriptors (EMFILE) or the like: pause, as asyncio does
            self._loop.remove_reader(self._sock.fileno())
            self._loop.call_later(_ACCEPT_RETRY_SECONDS, self._resume)
            return
        conn.setblocking(False)
        task = self._loop.create_task(self._connect(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._protocol_factory, conn)
        except OSError:
            conn.close()

    def _resume(self) -> None:
        if self._serving:
            self._loop.add_reader(self._sock.fileno(), self._accept_one)

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        if self._serving:
            self._serving = False
            self._loop.remove_reader(self._sock.fileno())

    async def wait_closed(self) -> None:
        return None


class BalancedAcceptLoop(uvloop.Loop):
    """uvloop's loop; ``create_server(sock=<a bound TCP socket>)`` without TLS accepts one at a time."""

    async def create_server(self, protocol_factory, host=None, port=None, *, sock=None, ssl=None,
                            **kwargs: Any):
        if sock is None or ssl is not None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return await super().create_server(protocol_factory, host, port, sock=sock, ssl=ssl, **kwargs)
        return OneAtATimeServer(self, sock, protocol_factory, kwargs.get("backlog") or 100)


def loop_factory() -> asyncio.AbstractEventLoop:
    return BalancedAcceptLoop()
