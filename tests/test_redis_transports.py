"""Lookups over every way to reach Redis -- TLS (``rediss://``), a unix socket (``unix://``) and plain TCP
without hiredis -- never block the feature server's event loop.

Each case runs ``featurestore serve`` in a subprocess on a Redis of the test's own (TLS with the CI's
test certificates, or a unix socket, or a throwaway TCP server), checks lookups, then freezes that Redis
(SIGSTOP): while lookups wait for it, ``/metrics``, ``/health`` and the registry (another store) must
still answer, and the waiting lookups must time out side by side, not one after another.
"""

from __future__ import annotations

import asyncio
import random
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import hiredis
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from connectors.redis_async import ReplyError, _PyReplyReader
from featurestore.errors import BackendUnavailableError
from serving.app import create_app
from tests.serve_helpers import WITHOUT_HIREDIS, private_redis, serve
from tests.test_serving import build_store, column, lookup

pytestmark = pytest.mark.redis

SOCKET_TIMEOUT = 1.0
LOOKUP = {"features": ["stats:trips", "stats:label"], "entities": {"driver_id": [2, 3, 99]}}


def redis_yaml(url: str) -> str:
    return f"{{type: redis, url: '{url}', key_prefix: 'transport', socket_timeout: {SOCKET_TIMEOUT}}}"


# ------------------------------------------------------------------------------ the reply parser


def test_python_reply_reader_parses_like_hiredis():
    """Without hiredis the async path parses replies with ``_PyReplyReader``: on RESP2 cut at random
    places it gives what hiredis gives, errors as exception objects."""
    replies = [b"+OK\r\n", b"-ERR wrong number of arguments\r\n", b":42\r\n", b"$-1\r\n", b"$7\r\nhe\r\nllo\r\n",
               b"*3\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n$0\r\n\r\n", b"*0\r\n", b"*-1\r\n",
               b"*2\r\n$3000\r\n" + b"x" * 3000 + b"\r\n$2\r\n\x00\xff\r\n"]
    stream = b"".join(random.Random(7).choices(replies, k=400))

    def normal(reply):
        if isinstance(reply, Exception):
            return ("error", str(reply))
        return [normal(r) for r in reply] if isinstance(reply, list) else reply

    for seed in range(20):
        rng = random.Random(seed)
        ours, theirs = _PyReplyReader(), hiredis.Reader()
        got, want = [], []
        pos = 0
        while pos < len(stream):
            chunk = stream[pos:pos + rng.randint(1, 700)]
            pos += len(chunk)
            for reader, out in ((ours, got), (theirs, want)):
                reader.feed(chunk)
                while (reply := reader.gets()) is not False:
                    out.append(reply)
        assert [normal(r) for r in got] == [normal(r) for r in want]
        assert any(isinstance(r, ReplyError) for r in got)


# ------------------------------------------------------------------------------ the CI's TLS Redis


def test_lookups_over_the_tls_redis_service(tmp_path, redis_tls):
    """The TLS-only Redis of .ci/services.sh: materialize, then REST lookups awaited over TLS."""
    store = build_store(tmp_path / "repo", redis_yaml(redis_tls["url"]))
    try:
        with TestClient(create_app(store)) as c:
            r = lookup(c, LOOKUP["features"], LOOKUP["entities"])
            assert r.status_code == 200, r.text
            assert column(r.json(), "trips")["values"] == [20, 30, None]
            assert column(r.json(), "label")["values"] == ["l2", None, None]
    finally:
        for view in ("stats", "short", "live"):
            store.online_store.delete_view(view)
        store.close()


# ------------------------------------------------------------------------------ frozen Redis


@pytest.fixture(params=["tls", "unix", "tcp-without-hiredis", "tls-without-hiredis"])
def transport(request, redis_server_factory):
    """(Redis URL, freeze, thaw, python -c code to run the server with or None) for one transport."""
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fs-redis-")))  # short: socket path
        without_hiredis = request.param.endswith("-without-hiredis")
        if request.param.startswith("tls"):
            server = stack.enter_context(private_redis(workdir, tls=request.getfixturevalue("redis_tls")))
            url, freeze, thaw = server.url, server.freeze, server.thaw
        elif request.param == "unix":
            server = stack.enter_context(private_redis(workdir, unix_socket=workdir / "redis.sock"))
            url, freeze, thaw = server.url, server.freeze, server.thaw
        else:
            tcp = redis_server_factory()
            url = tcp.url
            freeze = lambda: tcp.proc.send_signal(signal.SIGSTOP)  # noqa: E731
            thaw = lambda: tcp.proc.send_signal(signal.SIGCONT)  # noqa: E731
        yield url, freeze, thaw, WITHOUT_HIREDIS if without_hiredis else None


def _hiredis_loaded(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return "hiredis" in f.read()


def test_frozen_redis_never_blocks_the_event_loop(tmp_path, transport):
    url, freeze, thaw, python_code = transport
    store = build_store(tmp_path / "repo", redis_yaml(url))
    store.close()
    with serve(store.repo_path, python_code=python_code) as server:
        assert _hiredis_loaded(server.proc.pid) == (python_code is None)
        status, body, _ = server.request("POST", "/get-online-features", LOOKUP)
        assert status == 200, body
        assert column(body, "trips")["values"] == [20, 30, None]

        freeze()
        try:
            with ThreadPoolExecutor(8) as pool:
                lookups = [pool.submit(server.request, "POST", "/get-online-features", LOOKUP) for _ in range(4)]
                time.sleep(0.2)  # the lookups are waiting for Redis now
                others = []
                while not all(f.done() for f in lookups):
                    others.append(server.request("GET", "/metrics"))
                    others.append(server.request("GET", "/registry/feature-views/stats"))
                    time.sleep(0.05)
                health = pool.submit(server.request, "GET", "/health")
                results = [f.result() for f in lookups]
                health_status, health_body, health_seconds = health.result()
            # Answered while the lookups waited: the loop was free.
            assert len(others) >= 4
            assert all(status == 200 for status, _, _ in others), others
            assert max(seconds for _, _, seconds in others) < 0.5, [s for _, _, s in others]
            # The four lookups waited side by side: one socket timeout, not four.
            assert all(status == 503 for status, _, _ in results), results
            assert max(seconds for _, _, seconds in results) < 2 * SOCKET_TIMEOUT + 0.5, results
            assert health_status == 503 and health_body["status"] == "unavailable"
            assert health_seconds < 2 * SOCKET_TIMEOUT + 0.5
        finally:
            thaw()
        deadline = time.monotonic() + 10
        while True:  # the next lookups reconnect and answer
            status, body, _ = server.request("POST", "/get-online-features", LOOKUP)
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200, body
        assert column(body, "label")["values"] == ["l2", None, None]



def test_a_connection_the_loop_cannot_make_is_read_in_the_thread_pool(tmp_path, redis_server_factory):
    """Settings the async path cannot honour (OCSP checks, a custom connection class; forced here) fall
    back to the blocking read in the loop's thread pool, never on the loop: it keeps running while
    the read waits for a frozen Redis."""
    tcp = redis_server_factory()
    store = build_store(tmp_path / "repo", redis_yaml(tcp.url))
    try:
        online = store.online_store
        online._async = None  # what for_pool gives for such settings
        reads = [("stats", ["driver_id"], [(2,)], ["trips"], {"trips": pa.int64()})]

        async def read_while_ticking() -> tuple[object, int]:
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            try:
                return await online.read_many_async(reads), ticks
            except Exception as exc:  # noqa: BLE001 - returned for the assertions
                return exc, ticks
            finally:
                ticker.cancel()

        result, _ = asyncio.run(read_while_ticking())
        assert result[0].values == {"trips": [20]}
        tcp.proc.send_signal(signal.SIGSTOP)
        try:
            start = time.perf_counter()
            result, ticks = asyncio.run(read_while_ticking())
            waited = time.perf_counter() - start
        finally:
            tcp.proc.send_signal(signal.SIGCONT)
        assert isinstance(result, BackendUnavailableError)
        assert waited >= SOCKET_TIMEOUT * 0.9 and ticks >= SOCKET_TIMEOUT / 0.01 / 3
    finally:
        store.close()
