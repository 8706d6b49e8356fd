"""Running the app on uvicorn (what ``featurestore serve`` calls).

With several workers, uvicorn's default is one listening socket bound by the parent and shared by all
spawned children. Two problems with that, both fixed here:

- asyncio does not recognise the inherited socket as TCP and so never sets ``TCP_NODELAY``: every
  response (headers and body are two writes) would wait ~40 ms for a delayed ACK. ``TCP_NODELAY`` is
  set on the listening socket, and Linux copies it to each accepted connection.
- every worker wakes for a new connection and the first to run accepts all that are queued, so a
  client opening its 8 keep-alive connections at once had 8 on one worker and 0 on the other (seen
  with ``ss`` during the benchmark: two workers served no more than one). Where the OS has
  ``SO_REUSEPORT`` (Linux), each worker instead binds its own socket to the same address in the
  child (``_ReusePortSocket``), and the kernel spreads connections over them by address hash; a
  worker that dies takes its socket with it, so no connection is routed to a socket nobody accepts on.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def run(repo: str, *, host: str = "127.0.0.1", port: int = 6566, workers: int = 1,
        access_log: bool = False, log_level: str = "info") -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from serving.app import REPO_ENV

    os.environ[REPO_ENV] = repo
    config = uvicorn.Config("serving.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                            access_log=access_log, log_level=log_level, http=_http_protocol())
    if workers <= 1:
        uvicorn.Server(config).run()
        return
    if hasattr(socket, "SO_REUSEPORT") and not config.uds and config.fd is None:
        _bind_reuse_port(host, port, config.backlog).close()  # the address is free: fail here, not in workers
        Multiprocess(config, sockets=_ReusePortSocket(host, port, config.backlog)).run()
        return
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()


def _http_protocol() -> Any:
    """httptools with one socket write per response (``serving.http_protocol``); uvicorn's choice
    without httptools."""
    try:
        from serving.http_protocol import CoalescingHttpToolsProtocol
    except ImportError:
        return "auto"
    return CoalescingHttpToolsProtocol


def _bind_reuse_port(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _bound_in_child(host: str, port: int, backlog: int) -> list[socket.socket]:
    return [_bind_reuse_port(host, port, backlog)]


class _ReusePortSocket(list):
    """The ``sockets`` uvicorn hands to each worker: empty in the parent, and unpickled in a spawned
    worker as a list holding a socket of its own, bound there with ``SO_REUSEPORT``."""

    def __init__(self, host: str, port: int, backlog: int) -> None:
        super().__init__()
        self.address = (host, port, backlog)

    def __reduce__(self):
        return _bound_in_child, self.address
