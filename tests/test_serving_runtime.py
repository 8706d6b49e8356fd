"""The pieces ``featurestore serve`` runs the app with, on their own: the transport that coalesces a
response's writes (``serving.http_protocol``) and the accept-one-at-a-time loop of several workers
(``serving.balanced_accept``). The app on a real server is tested in ``test_serving.py``."""

from __future__ import annotations

import asyncio
import socket

from serving.balanced_accept import OneAtATimeServer, loop_factory
from serving.http_protocol import CoalescingTransport


class _RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 1) if name in ("sockname", "peername") else default


def test_coalescing_transport_writes_once_per_loop_iteration_and_flushes_on_close():
    async def scenario() -> tuple[list[bytes], list[bytes], bool]:
        real = _RecordingTransport()
        t = CoalescingTransport(real, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"body")
        assert real.writes == [] and t.get_write_buffer_size() == 23
        await asyncio.sleep(0)
        first = list(real.writes)
        t.write(b"last")
        t.close()  # pending bytes go out before the close
        return first, real.writes, real.closed

    first, writes, closed = asyncio.run(scenario())
    assert first == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"last"] and closed
    assert CoalescingTransport(_RecordingTransport(), None).get_extra_info("peername") == ("127.0.0.1", 1)


def test_balanced_accept_loop_serves_a_bound_socket_one_connection_at_a_time():
    """``create_server(sock=...)`` on the balanced loop listens, hands each accepted connection to the
    protocol, and stops accepting when closed; other create_server calls are uvloop's own."""
    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data.upper())

    async def scenario() -> list[bytes]:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(Echo, sock=sock, backlog=16)
        assert isinstance(server, OneAtATimeServer) and server.sockets == (sock,)
        port = sock.getsockname()[1]
        answers = []
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        for i, (reader, writer) in enumerate(streams):
            writer.write(b"hi%d" % i)
            answers.append(await asyncio.wait_for(reader.read(10), 5))
            writer.close()
        server.close()
        await server.wait_closed()
        assert not server.is_serving()
        plain = await loop.create_server(Echo, "127.0.0.1", 0)  # not a bound socket: uvloop's server
        assert not isinstance(plain, OneAtATimeServer)
        plain.close()
        sock.close()
        return answers

    loop = loop_factory()
    try:
        assert loop.run_until_complete(scenario()) == [b"HI%d" % i for i in range(5)]
    finally:
        loop.close()
