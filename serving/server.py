"""Running the app on uvicorn (what ``featurestore serve`` calls).

With several workers, uvicorn's default is one listening socket bound by the parent and shared by all
spawned children. Two problems with that, both fixed here:

- asyncio does not recognise the inherited socket as TCP and so never sets ``TCP_NODELAY``: every
  response (headers and body are two writes) would wait for the client's delayed ACK. ``TCP_NODELAY``
  is set on the listening socket, and Linux copies it to each accepted connection.
- every worker wakes for a new connection and the first to run accepts all that are queued, so a
  client opening its keep-alive connections at once gets all of them on one worker. Each worker's
  loop therefore accepts one connection per wakeup (``serving.balanced_accept``): an idle worker comes
  back for the next connection at once, a busy one after its request. (One ``SO_REUSEPORT`` socket per
  worker spreads connections by address hash instead, which leaves them unevenly spread.)
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.limits import ServingLimits

log = logging.getLogger("featurestore.serving")


def run(repo: str, *, host: str = "127.0.0.1", port: int = 6566, workers: int = 1,
        access_log: bool = False, log_level: str = "info", limits: "ServingLimits | None" = None) -> None:
    """Serve ``repo`` until interrupted. ``limits`` (default: ``ServingLimits.from_env()``) reach the
    workers' apps as ``FEATURESTORE_*`` variables, the HTTP protocol as arguments and uvicorn as
    ``limit_concurrency``."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from serving.app import REPO_ENV
    from serving.limits import ServingLimits

    limits = limits or ServingLimits.from_env()
    os.environ[REPO_ENV] = repo
    os.environ.update(limits.to_env())
    config = uvicorn.Config("serving.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                            access_log=access_log, log_level=log_level, http=_http_protocol(limits),
                            limit_concurrency=limits.max_connections)
    if workers <= 1:
        uvicorn.Server(config).run()
        return
    if _balanced_loop_available():
        config.loop = "serving.balanced_accept:loop_factory"
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()  # no target: uvicorn >= 0.51 (pyproject's lower bound)


def _http_protocol(limits: "ServingLimits") -> Any:
    """httptools with one socket write per response and read deadlines (``serving.http_protocol``);
    uvicorn's choice without httptools (``uvicorn[standard]`` has it), which has no deadlines."""
    try:
        from serving.http_protocol import GuardedHttpToolsProtocol
    except ImportError:
        log.warning("httptools is not installed: request header and body timeouts are off "
                    "(pip install 'uvicorn[standard]')")
        return "auto"
    return functools.partial(GuardedHttpToolsProtocol, header_timeout=limits.header_timeout,
                             body_timeout=limits.body_timeout, max_header_bytes=limits.max_header_bytes)


def _balanced_loop_available() -> bool:
    try:
        import serving.balanced_accept  # noqa: F401  (needs uvloop)
    except ImportError:
        return False
    return True
