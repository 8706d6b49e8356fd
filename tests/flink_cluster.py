"""A standalone Flink cluster (one JobManager, one TaskManager) built from PyFlink's own distribution,
for tests of ``stream_engine: {jobmanager: ...}``: a Flink home in a temporary folder with PyFlink's
``bin/`` and ``lib/`` plus the ``flink-python`` jar (which a cluster needs to run Python functions),
and a config on free loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG = """\
env:
  java:
    opts:
      all: {java_opts}
jobmanager:
  bind-host: 127.0.0.1
  rpc: {{address: 127.0.0.1, port: {rpc}}}
  memory: {{process: {{size: 1024m}}}}
taskmanager:
  bind-host: 127.0.0.1
  host: 127.0.0.1
  numberOfTaskSlots: 2
  memory: {{process: {{size: 1536m}}}}
rest:
  address: 127.0.0.1
  bind-address: 127.0.0.1
  port: {rest}
blob: {{server: {{port: "{blob}"}}}}
parallelism: {{default: 1}}
"""


class FlinkCluster:
    def __init__(self, python: Path, home: Path):
        self.python = python
        self.home = home
        self.rest_port = _free_port()
        self.env: dict[str, str] = {}

    @property
    def jobmanager(self) -> str:
        return f"127.0.0.1:{self.rest_port}"

    def _build(self, child_env: dict[str, str]) -> None:
        out = subprocess.run([str(self.python), "-c", "import os, pyflink; print(os.path.dirname(pyflink.__file__))"],
                             capture_output=True, text=True, check=True)
        pyflink = Path(out.stdout.strip())
        shutil.copytree(pyflink / "bin", self.home / "bin")
        shutil.copytree(pyflink / "lib", self.home / "lib")
        shutil.copytree(pyflink / "opt", self.home / "opt")
        for jar in (pyflink / "opt").glob("flink-python-*.jar"):
            shutil.copy(jar, self.home / "lib")
        (self.home / "conf").mkdir()
        (self.home / "log").mkdir()
        for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties", "logback.xml"):
            if (pyflink / "conf" / name).exists():
                shutil.copy(pyflink / "conf" / name, self.home / "conf")
        java_opts = next((ln.split("all:", 1)[1].strip() for ln in (pyflink / "conf" / "config.yaml").read_text()
                          .splitlines() if ln.strip().startswith("all:")), "")
        (self.home / "conf" / "config.yaml").write_text(CONFIG.format(
            java_opts=java_opts, rpc=_free_port(), rest=self.rest_port, blob=_free_port()))
        self.env = {**child_env, "FLINK_HOME": str(self.home), "FLINK_CONF_DIR": str(self.home / "conf"),
                    "FLINK_LOG_DIR": str(self.home / "log"),
                    "PATH": f"{self.python.parent}{os.pathsep}{child_env.get('PATH', '')}"}

    def _daemon(self, script: str, action: str) -> None:
        subprocess.run(["bash", str(self.home / "bin" / script), action], env=self.env, check=True,
                       capture_output=True, timeout=120)

    def overview(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://{self.jobmanager}/overview", timeout=2) as resp:
                return json.loads(resp.read())
        except OSError:
            return None

    def jobs(self) -> list[dict]:
        with urllib.request.urlopen(f"http://{self.jobmanager}/jobs/overview", timeout=5) as resp:
            return json.loads(resp.read())["jobs"]

    def start(self, child_env: dict[str, str], timeout: float = 120) -> None:
        self._build(child_env)
        self._daemon("jobmanager.sh", "start")
        self._daemon("taskmanager.sh", "start")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.overview()
            if info and info.get("taskmanagers", 0) >= 1:
                return
            time.sleep(1)
        logs = "\n".join(p.read_text()[-3000:] for p in (self.home / "log").glob("*.log"))
        raise RuntimeError(f"the Flink cluster did not come up in {timeout} s:\n{logs}")

    def stop(self) -> None:
        for script in ("taskmanager.sh", "jobmanager.sh"):
            try:
                self._daemon(script, "stop-all")
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass
