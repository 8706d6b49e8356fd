"""``featurestore serve`` in a subprocess for tests about the server itself (memory, sockets, the event
loop), plus a redis-server with TLS or a unix socket for the online store."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

# Runs the CLI with hiredis unimportable (``import hiredis`` raises ImportError), as if not installed.
WITHOUT_HIREDIS = "import sys; sys.modules['hiredis'] = None; from featurestore.cli import main; sys.exit(main())"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    proc: subprocess.Popen
    host: str
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, method: str, path: str, body: object = None, timeout: float = 30.0,
                headers: dict | None = None) -> tuple[int, dict | str, float]:
        """(status, JSON body or text, seconds) of one request on a new connection."""
        start = time.perf_counter()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            conn.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
            r = conn.getresponse()
            raw = r.read()
        finally:
            conn.close()
        try:
            parsed: dict | str = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return r.status, parsed, time.perf_counter() - start

    def rss_bytes(self) -> int:
        """The server process's resident set (``VmRSS`` of /proc/<pid>/status)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def metric(self, name: str) -> float:
        status, text, _ = self.request("GET", "/metrics")
        assert status == 200
        for line in str(text).splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in /metrics")


@contextmanager
def serve(repo: Path, *args: str, env: dict | None = None, python_code: str | None = None,
          startup_timeout: float = 60.0) -> Iterator[Served]:
    """``featurestore --repo REPO serve --port <free> ARGS`` (one worker) until the block ends;
    ``python_code`` runs the CLI through ``python -c`` instead of ``-m featurestore.cli``."""
    port = free_port()
    launcher = ["-c", python_code] if python_code else ["-m", "featurestore.cli"]
    cmd = [sys.executable, *launcher, "--repo", str(repo), "serve", "--port", str(port),
           "--log-level", "warning", *args]
    log_path = repo / f"serve-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    served = Served(proc, "127.0.0.1", port, log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                served.request("GET", "/metrics", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError(f"server did not start: {served.log_text()[-3000:]}") from None
                time.sleep(0.2)
        yield served
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()


@dataclass
class PrivateRedis:
    """A redis-server of a test's own, reached at ``url`` (TLS or unix socket), frozen and thawed at will."""

    proc: subprocess.Popen
    url: str

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


@contextmanager
def private_redis(workdir: Path, *, tls: dict[str, str] | None = None,
                  unix_socket: Path | None = None) -> Iterator[PrivateRedis]:
    """A redis-server speaking only TLS (with the CI's test certificates: the ``redis_tls`` fixture) or
    only on a unix socket; stopped (and thawed first) when the block ends."""
    binary = os.environ.get("FS_REDIS_SERVER_BIN") or "redis-server"
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--save", "", "--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log")]
    if tls:
        port = free_port()
        ca = tls["ca"]
        args += ["--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port), "--tls-cert-file", tls["cert"],
                 "--tls-key-file", tls["key"], "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    else:
        assert unix_socket is not None
        args += ["--port", "0", "--unixsocket", str(unix_socket), "--unixsocketperm", "700"]
        url = f"unix://{unix_socket}"
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = PrivateRedis(proc, url)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with redis.Redis.from_url(url, socket_timeout=1) as client:
                    client.ping()
                break
            except (redis.exceptions.ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (workdir / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server did not come up at {url}:\n{log}") from None
                time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            server.thaw()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
