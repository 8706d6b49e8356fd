"""Running the app on uvicorn (what ``featurestore serve`` calls).

With several workers uvicorn binds the socket in the parent and hands it to spawned children, where
asyncio does not recognise it as TCP and so never sets ``TCP_NODELAY``: every response (headers and
body are two writes) then waits ~40 ms for a delayed ACK. Setting ``TCP_NODELAY`` on the listening
socket fixes that, because Linux copies it to each accepted connection.
"""

from __future__ import annotations

import os
import socket


def run(repo: str, *, host: str = "127.0.0.1", port: int = 6566, workers: int = 1,
        access_log: bool = False, log_level: str = "info") -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from serving.app import REPO_ENV

    os.environ[REPO_ENV] = repo
    config = uvicorn.Config("serving.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                            access_log=access_log, log_level=log_level)
    if workers <= 1:
        uvicorn.Server(config).run()
        return
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()
