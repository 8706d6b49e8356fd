"""Shared fixtures for tests that need real services.

The servers come from ``.ci/services.sh`` (``make test`` starts them and exports the variables):

- ``FS_TEST_POSTGRES_URL``  e.g. ``postgresql+psycopg://fs:fs@127.0.0.1:55432/fs_test``
- ``FS_TEST_REDIS_URL``     e.g. ``redis://127.0.0.1:56379/0``
- ``FS_REDIS_SERVER_BIN``   path of ``redis-server``, for tests that run their own throwaway server
- ``FS_TEST_REDIS_TLS_URL`` e.g. ``rediss://127.0.0.1:56380/0``, a Redis speaking only TLS, whose
  certificate ``FS_TEST_REDIS_TLS_CA`` signed (``FS_TEST_REDIS_TLS_CERT``/``_KEY`` start more such servers)
- ``FS_TEST_REDIS_CLUSTER_URL`` e.g. ``redis://127.0.0.1:46400``, a seed node of a six-node Redis Cluster
  (three masters with a replica each); tests that kill nodes or reshard use ``redis_cluster_factory``

Outside CI a missing variable skips the test. Under CI (``CI=true``) it fails instead, so a broken
service setup can never pass as a run of skipped tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster_helpers import ThrowawayCluster


def _running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _required_env(name: str, what: str) -> str:
    value = os.environ.get(name, "").strip()
    if value:
        return value
    message = f"{name} is not set: {what} (run the tests with `make test`, which starts the services)"
    if _running_in_ci():
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of the test PostgreSQL database (shared by all tests; use fresh_postgres_db to isolate)."""
    return _required_env("FS_TEST_POSTGRES_URL", "no PostgreSQL server for tests")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the shared test Redis server."""
    return _required_env("FS_TEST_REDIS_URL", "no Redis server for tests")


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    """URL of a seed node of the shared test Redis Cluster (read and write; never kill or reshard it)."""
    return _required_env("FS_TEST_REDIS_CLUSTER_URL", "no Redis Cluster for tests")


@pytest.fixture(scope="session")
def redis_tls() -> dict[str, str]:
    """The TLS-only test Redis: ``url`` (``rediss://...?ssl_ca_certs=<ca>``) and the files ``ca``,
    ``cert``, ``key`` (a test may start its own TLS redis-server with them)."""
    what = "no TLS Redis server for tests"
    files = {name: _required_env(f"FS_TEST_REDIS_TLS_{name.upper()}", what) for name in ("ca", "cert", "key")}
    return {"url": f"{_required_env('FS_TEST_REDIS_TLS_URL', what)}?ssl_ca_certs={files['ca']}", **files}


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """``host:port`` of the test Kafka broker (the KRaft broker ``.ci/services.sh`` starts)."""
    return _required_env("FS_TEST_KAFKA_BOOTSTRAP", "no Kafka broker for tests")


@pytest.fixture(scope="session")
def flink_python() -> Path:
    """The Flink venv's python; the venv is created here only under CI (outside CI a missing or stale
    venv skips the test: creating it downloads ~300 MB; ``make flink-env`` does it)."""
    from featurestore.streaming import env as flink_env

    if not flink_env.is_ready():
        if not _running_in_ci():
            pytest.skip(f"{flink_env.venv_dir()} missing or stale: run `make flink-env`")
        flink_env.ensure(verbose=True)
    return flink_env.venv_python()


@pytest.fixture
def fresh_postgres_db(postgres_url: str) -> Iterator[str]:
    """Create an empty, uniquely named database for one test; yield its URL; drop it afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ProgrammingError

    base = make_url(postgres_url)
    name = f"fs_t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            for attempt in range(10):
                try:
                    with admin.connect() as conn:
                        # FORCE ends connections the test left open (PostgreSQL 13+).
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    break
                except ProgrammingError as exc:
                    # An autovacuum worker (a superuser session) on the new database cannot be ended
                    # by FORCE; it finishes in moments.
                    if "pg_signal_backend" not in str(exc) or attempt == 9:
                        raise
                    time.sleep(0.5)
        finally:
            admin.dispose()


# ---------------------------------------------------------------- throwaway redis-server processes


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_pings(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on a loopback port; stop() and start() keep the same port."""

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "redis.log"
        options = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "save": "",  # no RDB snapshots
            "appendonly": "no",
            "daemonize": "no",
            "dir": str(self.workdir),
            "logfile": str(log),
        }
        args = [self.binary]
        for name, value in options.items():
            args += [f"--{name}", value]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _redis_pings(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
                raise RuntimeError(f"redis-server on port {self.port} did not come up:\n{tail}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def redis_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], RedisServer]]:
    """Factory for dedicated, started redis-server processes on free loopback ports.

    Each call returns a running ``RedisServer`` (``.url``, ``.port``, ``.stop()``, ``.start()``,
    ``.restart()``, ``.kill()``); all of them are stopped at teardown.
    """
    binary = os.environ.get("FS_REDIS_SERVER_BIN", "").strip() or shutil.which("redis-server") or ""
    if not binary:
        _required_env("FS_REDIS_SERVER_BIN", "no redis-server binary for throwaway servers")
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        last_error: Exception | None = None
        for _ in range(3):  # another process may grab the free port between probe and bind
            server = RedisServer(binary, _free_loopback_port(), tmp_path_factory.mktemp("redis"))
            try:
                server.start()
            except RuntimeError as exc:
                last_error = exc
                continue
            servers.append(server)
            return server
        raise RuntimeError(f"could not start a throwaway redis-server: {last_error}")

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def redis_cluster_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ThrowawayCluster]]:
    """Factory for throwaway Redis Clusters a test may abuse (kill a master, restart it, reshard).

    Each call starts six nodes (three masters, three replicas) on free loopback ports and returns the
    ``ThrowawayCluster`` once it is ok and every replica is linked; keyword arguments go to it (e.g.
    ``node_timeout_ms``, ``extra_args``). Every node and reshard is killed at teardown, pass or fail.
    """
    server = os.environ.get("FS_REDIS_SERVER_BIN", "").strip() or shutil.which("redis-server") or ""
    if not server:
        _required_env("FS_REDIS_SERVER_BIN", "no redis-server binary for throwaway clusters")
    cli = shutil.which("redis-cli") or str(Path(server).with_name("redis-cli"))
    if not Path(cli).is_file():
        message = f"no redis-cli on PATH or beside {server}, for throwaway clusters"
        if _running_in_ci():
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    clusters: list[ThrowawayCluster] = []

    def make(**options: object) -> ThrowawayCluster:
        # create() stops what it started when it fails, so only finished clusters need tracking.
        cluster = ThrowawayCluster.create(tmp_path_factory.mktemp("redis-cluster"), server, cli, **options)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop()


@pytest.fixture
def tmp_repo(tmp_path: Path) -> Path:
    """An empty directory to use as a feature repository."""
    repo = tmp_path / "repo"
    repo.mkdir()
    return repo


@pytest.fixture
def jobs() -> Iterator[list]:
    """(store, view) pairs of stream jobs a test started; each is stopped when the test ends."""
    from featurestore.streaming import manager

    started: list = []
    yield started
    for store, view in started:
        manager.stop(store, view, timeout=10)
