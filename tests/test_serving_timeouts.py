"""Stalled clients are timed out: raw sockets against a real ``featurestore serve``.

The server runs with a 1 s header timeout (from FEATURESTORE_HEADER_TIMEOUT), a 2 s body timeout (from
``--body-timeout``), a 4 KiB header limit (``--max-header-bytes``) and 12 connections at most. Unfinished headers, an unfinished
body, a trickle that never ends and oversized headers are answered 408 / 431 and closed within the
limit; a slow client that finishes in time is served, also for a second request on the same connection.
Last, the server (two workers, deadlines included) runs on the lowest uvicorn pyproject.toml allows.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from serving.limits import ServingLimits
from tests.serve_helpers import serve
from tests.test_serving import build_store, column

HEADER_TIMEOUT, BODY_TIMEOUT, MAX_HEADER_BYTES, MAX_CONNECTIONS = 1.0, 2.0, 4096, 12
SLACK = 0.8  # the deadline sweep runs every 0.25 s; the machine is shared
BODY = json.dumps({"features": ["stats:trips"], "entities": {"driver_id": [2, 99]}}).encode()
HEAD = (b"POST /get-online-features HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(BODY))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = build_store(tmp_path_factory.mktemp("timeouts") / "repo", "{type: sqlite, path: data/online.db}")
    store.close()
    with serve(store.repo_path, "--body-timeout", str(BODY_TIMEOUT), "--max-header-bytes", str(MAX_HEADER_BYTES),
               "--max-connections", str(MAX_CONNECTIONS), env={"FEATURESTORE_HEADER_TIMEOUT": str(HEADER_TIMEOUT)}) as served:
        yield served


def connect(server) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (perf_counter)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data, time.perf_counter()
        data += chunk


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """One complete response (status and JSON body) from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body)


def error_of(response: bytes) -> tuple[int, dict]:
    head, body = response.split(b"\r\n\r\n", 1)
    assert b"connection: close" in head.lower()
    return int(head.split()[1]), json.loads(body)["error"]


def test_unfinished_headers_are_408_within_the_header_timeout(server):
    with connect(server) as sock:
        start = time.perf_counter()
        sock.sendall(HEAD[:40])  # a request line and part of a header, then nothing
        response, closed = read_until_closed(sock)
    assert HEADER_TIMEOUT - 0.05 <= closed - start <= HEADER_TIMEOUT + SLACK
    status, error = error_of(response)
    assert status == 408 and error["type"] == "RequestTimeout"
    assert "header_timeout" in error["message"] and "1 s" in error["message"]


def test_a_silent_connection_is_closed_without_an_answer(server):
    with connect(server) as sock:
        start = time.perf_counter()
        response, closed = read_until_closed(sock)
    assert response == b""
    assert HEADER_TIMEOUT - 0.05 <= closed - start <= HEADER_TIMEOUT + SLACK


def test_a_header_trickle_that_never_ends_is_cut_at_the_deadline(server):
    """One header byte every 0.1 s keeps the connection busy but never finishes: the deadline counts
    from the start of the request, not from the last byte."""
    with connect(server) as sock:
        start = time.perf_counter()
        sock.sendall(b"POST /get-online-features HTTP/1.1\r\nX-Slow: ")
        sock.settimeout(0.1)
        response = b""
        while True:
            try:
                sock.send(b"a")
            except OSError:
                break
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            response += chunk
        closed = time.perf_counter()
    assert closed - start <= HEADER_TIMEOUT + SLACK
    assert error_of(response)[0] == 408


@pytest.mark.parametrize("path", ["/get-online-features", "/push"])
def test_unfinished_body_is_408_within_the_body_timeout(server, path):
    """The lookup fast path and a FastAPI route alike: 408, and the app sees the client gone (no
    error in the server's log)."""
    with connect(server) as sock:
        sock.sendall(HEAD.replace(b"/get-online-features", path.encode()))
        start = time.perf_counter()
        sock.sendall(BODY[:10])
        response, closed = read_until_closed(sock)
    assert BODY_TIMEOUT - 0.05 <= closed - start <= BODY_TIMEOUT + SLACK
    status, error = error_of(response)
    assert status == 408 and "body_timeout" in error["message"] and "2 s" in error["message"]
    time.sleep(0.3)
    assert "Traceback" not in server.log_text()


def test_oversized_headers_are_431(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Pad: " + b"a" * (2 * MAX_HEADER_BYTES))
        response, _ = read_until_closed(sock)
    status, error = error_of(response)
    assert status == 431 and "max_header_bytes" in error["message"] and str(MAX_HEADER_BYTES) in error["message"]


def test_slow_client_within_the_limits_is_served_twice_on_one_connection(server):
    """Headers over 0.6 s, a body over 1.5 s, a pause, then the same again on the same connection:
    each deadline counts one request, and keep-alive resets it."""
    with connect(server) as sock:
        for _ in range(2):
            for i in range(0, len(HEAD), 20):
                sock.sendall(HEAD[i:i + 20])
                time.sleep(0.6 / (len(HEAD) / 20))
            for i in range(0, len(BODY), 8):
                sock.sendall(BODY[i:i + 8])
                time.sleep(1.5 / (len(BODY) / 8))
            status, body = read_response(sock)
            assert status == 200, body
            assert column(body, "trips")["values"] == [20, None]
            time.sleep(0.5)


def test_silent_connections_cannot_hold_the_connection_limit(server):
    """Connections that never send a request fill the limit (503) only until the header timeout closes
    them; then the server answers again."""
    idle = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        status, _, _ = server.request("GET", "/health")
        assert status == 503
        time.sleep(HEADER_TIMEOUT + SLACK)
        status, body, _ = server.request("GET", "/health")
        assert status == 200, body
        assert all(read_until_closed(sock)[0] == b"" for sock in idle)
    finally:
        for sock in idle:
            sock.close()


def test_defaults_suit_a_server_without_a_proxy():
    limits = ServingLimits()
    assert (limits.header_timeout, limits.body_timeout) == (10.0, 30.0)
    # a maximal body at 40 KB/s (a slow mobile link) arrives within the body timeout
    assert limits.max_body_bytes / 40_000 < limits.body_timeout


# ------------------------------------------------------------------------- uvicorn's lower bound


def _uvicorn_lower_bound() -> str:
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    return re.search(r'"uvicorn(?:\[[a-z,]+\])?>=([0-9.]+)', text).group(1)


@pytest.fixture(scope="module")
def lowest_uvicorn(request) -> Path:
    """The lowest uvicorn pyproject.toml allows, unpacked (pip download, cached in pytest's cache)."""
    version = _uvicorn_lower_bound()
    folder = Path(request.config.cache.mkdir(f"uvicorn-{version}"))
    if not (folder / "uvicorn" / "__init__.py").exists():
        wheels = folder / "wheel"
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "-q", "-d", str(wheels), f"uvicorn=={version}"], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            pytest.skip(f"cannot download uvicorn=={version}: {r.stderr.strip()[-300:]}")
        with zipfile.ZipFile(next(wheels.glob("uvicorn-*.whl"))) as wheel:
            wheel.extractall(folder)
    return folder


def test_server_runs_on_the_lowest_uvicorn_pyproject_allows(tmp_path, lowest_uvicorn):
    version = _uvicorn_lower_bound()
    env = {"PYTHONPATH": os.pathsep.join([str(lowest_uvicorn), os.getcwd()])}
    found = subprocess.run([sys.executable, "-c", "import uvicorn; print(uvicorn.__version__)"],
                           env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout.strip()
    assert Version(found) == Version(version)
    store = build_store(tmp_path / "repo", "{type: sqlite, path: data/online.db}")
    store.close()
    with serve(store.repo_path, "--workers", "2", "--header-timeout", "1", env=env) as served:
        status, body, _ = served.request("POST", "/get-online-features", BODY)
        assert status == 200 and column(body, "trips")["values"] == [20, None]
        with connect(served) as sock:
            sock.sendall(HEAD[:40])
            response, _ = read_until_closed(sock)
        assert error_of(response)[0] == 408
