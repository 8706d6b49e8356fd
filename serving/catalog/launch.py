"""``featurestore ui``: the catalog of a repo on a free local port, opened in the user's browser."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import webbrowser
from typing import Callable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _answers(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/health")
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()


def open_when_up(host: str, port: int, url: str, say: Callable[[str], None], *, browser: bool = True,
                 timeout: float = 60.0) -> threading.Thread:
    """In a background thread: wait until the server at ``host:port`` answers, then open ``url`` in the
    default browser, or say the URL when there is none (or ``browser`` is False)."""

    def wait_and_open() -> None:
        deadline = time.monotonic() + timeout
        while not _answers(host, port):
            if time.monotonic() > deadline:
                say(f"The catalog did not answer within {timeout:.0f} s; see the log above.")
                return
            time.sleep(0.2)
        opened = False
        if browser:
            try:
                opened = webbrowser.open(url)
            except webbrowser.Error:
                opened = False
        note = "" if opened else ("  (open it in a browser)" if not browser else "  (no browser found: open it yourself)")
        say(f"Catalog: {url}{note}; Ctrl-C stops it.")

    thread = threading.Thread(target=wait_and_open, name="open-catalog", daemon=True)
    thread.start()
    return thread
