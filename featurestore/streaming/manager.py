"""Starting, inspecting and stopping stream jobs (``featurestore stream start|status|stop``).

Each view's job keeps its files in ``<repo>/<stream_engine.state_dir>/<view>/``::

    blueprint.json     what the job runs (``featurestore.streaming.blueprint``), rewritten by every start
    job.json           pid, start time and the checkpoint it resumed from, while it runs
    job.log            the job's output (PyFlink and Flink logs)
    checkpoints/       Flink's retained checkpoints (<job id>/chk-<n>/_metadata)
    status/*.json      counters each operator writes about once a second

``start`` launches ``featurestore.streaming.job`` with ``.venv-flink``'s Python in its own process
group (the PyFlink driver and its JVM stop together) and resumes from the newest retained checkpoint,
so a job that was stopped or killed carries on where its last checkpoint left it: the Kafka offsets
and every entity's state. ``stop`` sends SIGTERM to the group and SIGKILL after a timeout; either way
the next ``start`` resumes from the last checkpoint.

With ``stream_engine: {jobmanager: host:port}`` the job goes to that Flink cluster instead
(``flink run --detached`` from PyFlink's own client, resuming with ``-s <checkpoint>``), and status and
stop use the cluster's REST API with the job id ``start`` recorded. The cluster needs the
``flink-python`` jar in its ``lib/`` and this project installed in the Python its TaskManagers run
(``-pyexec``: this machine's ``.venv-flink`` unless ``python_executable`` is set), and ``state_dir``
must be a path the cluster's processes share with this machine (checkpoints and status files).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from connectors.kafka import KafkaClient, KafkaConfig
from featurestore.errors import ConflictError, FeatureStoreError, NotFoundError
from featurestore.streaming import env as flink_env
from featurestore.streaming import jars
from featurestore.streaming.blueprint import Blueprint, build_blueprint
from featurestore.streaming.config import stream_engine_config

JOB_MODULE = "featurestore.streaming.job"
BLUEPRINT_FILE = "blueprint.json"
FLINK_LOG_DIR = "flink-log"  # the job's JVM log (the previous run's is kept with a ``.previous`` suffix)

# Jobs this process started, by pid: their exit status can be read once they end (a job started by
# another process, e.g. an earlier CLI call, has no parent here to ask).
_children: dict[int, subprocess.Popen] = {}


@dataclass
class JobStatus:
    view: str
    running: bool
    pid: int | None = None
    cluster_job: str | None = None  # "<job id> on <jobmanager>" for a job on a Flink cluster
    started: float | None = None
    restored_from: str | None = None
    last_checkpoint: str | None = None
    last_checkpoint_time: float | None = None
    counters: dict[str, Any] = field(default_factory=dict)
    # Records not yet covered by a checkpoint (the job commits its Kafka offsets on each checkpoint);
    # None when the broker did not answer.
    lag: int | None = None
    log: str | None = None
    # How a job this process started ended: its exit code, or minus the signal that killed it.
    exit_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def streams_dir(store: Any) -> Path:
    cfg = stream_engine_config(store.config.stream_engine)
    base = Path(os.path.expanduser(cfg.state_dir))
    return base if base.is_absolute() else store.repo_path / base


def job_dir(store: Any, view: str) -> Path:
    return streams_dir(store) / view


def _alive(pid: int) -> bool:
    """True if ``pid`` is a running stream job (not a reused pid of another program, not a zombie)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and JOB_MODULE.encode() in cmdline


def _read_job(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "job.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest completed checkpoint (a ``chk-<n>`` folder with its ``_metadata``) under ``directory``."""
    found = []
    for meta in directory.glob("checkpoints/*/chk-*/_metadata"):
        try:
            if meta.stat().st_size > 0:
                found.append((meta.stat().st_mtime, int(meta.parent.name.split("-", 1)[1]), meta.parent))
        except (FileNotFoundError, ValueError):
            continue
    return max(found)[2] if found else None


def start(store: Any, view: str, *, fresh: bool = False, wait_seconds: float = 0.0) -> JobStatus:
    """Launch the view's stream job in the background; resume from its newest checkpoint unless
    ``fresh``. With ``wait_seconds``, wait that long for the job to report its first counters."""
    cfg = stream_engine_config(store.config.stream_engine)
    directory = job_dir(store, view)
    current = _read_job(directory)
    if current and _job_running(current):
        raise ConflictError(f"the stream job of {view!r} is already running ({_where(current)}); "
                            f"`featurestore stream stop {view}` first")
    blueprint = build_blueprint(store, view)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / BLUEPRINT_FILE).write_text(blueprint.to_json())
    python = flink_env.ensure()
    jars.connector_jar()
    restore = None if fresh else latest_checkpoint(directory)
    for stale in (directory / "status").glob("*.json"):
        stale.unlink()
    if cfg.jobmanager:
        return _submit(store, view, directory, cfg, str(python), restore)
    cmd = [str(python), "-m", JOB_MODULE, str(directory / BLUEPRINT_FILE)]
    if restore is not None:
        cmd += ["--restore", str(restore)]
    with open(directory / "job.log", "ab") as log:
        log.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')} start {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=store.repo_path, env=_job_env(directory), start_new_session=True)
    _children[proc.pid] = proc
    job = {"pid": proc.pid, "started": time.time(), "restored_from": str(restore) if restore else None,
           "command": cmd}
    (directory / "job.json").write_text(json.dumps(job))
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline and proc.poll() is None and not any((directory / "status").glob("*.json")):
        time.sleep(0.5)
    if proc.poll() is not None:
        raise ConflictError(f"the stream job of {view!r} exited at once with code {proc.returncode}; "
                            f"see {directory / 'job.log'}:\n{_tail(directory / 'job.log')}")
    return status_of(store, view)


def _job_env(directory: Path) -> dict[str, str]:
    """The Flink venv's environment, with the JVM's log in the job's folder (PyFlink's default is one
    file inside the venv, shared by every job and rewritten by each start)."""
    logs = directory / FLINK_LOG_DIR
    logs.mkdir(exist_ok=True)
    for old in logs.glob("*.log"):
        old.replace(old.with_name(old.name + ".previous"))
    env = flink_env.child_env()
    env["FLINK_LOG_DIR"] = str(logs)
    return env


def _exit_code(pid: int | None) -> int | None:
    proc = _children.get(pid) if pid else None
    return proc.poll() if proc is not None else None


def _pyflink_home(python: str) -> str:
    out = subprocess.run([python, "-c", "import os, pyflink; print(os.path.dirname(pyflink.__file__))"],
                         capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.strip()


def _submit(store: Any, view: str, directory: Path, cfg: Any, python: str, restore: Path | None) -> JobStatus:
    """``flink run --detached`` the job on the configured cluster; record its job id."""
    home = _pyflink_home(python)
    worker_python = cfg.python_executable or python
    cmd = ["bash", os.path.join(home, "bin", "flink"), "run", "--detached", "--jobmanager", cfg.jobmanager,
           "-pyexec", worker_python, "-pyclientexec", python, "-pym", JOB_MODULE]
    if restore is not None:
        cmd += ["--fromSavepoint", str(restore)]
    cmd.append(str(directory / BLUEPRINT_FILE))
    env = {**flink_env.child_env(), "FLINK_HOME": home}
    env.pop("FLINK_CONF_DIR", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=store.repo_path, env=env, timeout=600,
                          stdin=subprocess.DEVNULL)
    with open(directory / "job.log", "a") as log:
        log.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')} submit {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    found = re.search(r"JobID ([0-9a-f]{32})", proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        raise ConflictError(f"submitting the stream job of {view!r} to {cfg.jobmanager} failed (exit "
                            f"{proc.returncode}); see {directory / 'job.log'}:\n{_tail(directory / 'job.log')}")
    job = {"jobmanager": cfg.jobmanager, "job_id": found.group(1), "started": time.time(),
           "restored_from": str(restore) if restore else None, "command": cmd}
    (directory / "job.json").write_text(json.dumps(job))
    return status_of(store, view)


def _rest(job: dict[str, Any], method: str = "GET", query: str = "") -> dict[str, Any] | None:
    """The cluster's REST answer about the job (None when the cluster does not answer)."""
    url = f"http://{job['jobmanager']}/jobs/{job['job_id']}{query}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as resp:
            body = resp.read()
            return json.loads(body) if body else {}
    except (urllib.error.URLError, OSError, ValueError):
        return None


_ACTIVE = {"INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING", "CANCELLING", "RECONCILING"}


def _job_running(job: dict[str, Any]) -> bool:
    if "job_id" in job:
        answer = _rest(job)
        return bool(answer) and answer.get("state") in _ACTIVE
    return bool(job.get("pid")) and _alive(job["pid"])


def _where(job: dict[str, Any]) -> str:
    return f"job {job['job_id']} on {job['jobmanager']}" if "job_id" in job else f"pid {job['pid']}"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    useful = [ln for ln in text if not ln.startswith(("\tat ", "WARNING"))]
    return "\n".join(useful[-lines:])


def _lag(directory: Path) -> int | None:
    try:
        kafka = Blueprint.from_json((directory / BLUEPRINT_FILE).read_text()).kafka
    except (FileNotFoundError, ValueError, KeyError, FeatureStoreError):
        return None
    client = KafkaClient(KafkaConfig(bootstrap_servers=kafka.bootstrap_servers, timeout_seconds=3))
    try:
        return sum(client.group_lag(kafka.group_id, kafka.topic).values())
    except (FeatureStoreError, ImportError):
        return None
    finally:
        client.close()


def status_of(store: Any, view: str, *, lag: bool = False) -> JobStatus:
    directory = job_dir(store, view)
    if not directory.is_dir():
        raise NotFoundError(f"no stream job was ever started for {view!r} (nothing in {directory})")
    job = _read_job(directory) or {}
    pid = job.get("pid")
    running = bool(job) and _job_running(job)
    counters: dict[str, Any] = {}
    for f in sorted((directory / "status").glob("*.json")):
        try:
            counters.update({k: v for k, v in json.loads(f.read_text()).items() if k != "updated"})
        except ValueError:
            continue
    ckpt = latest_checkpoint(directory)
    return JobStatus(view=view, running=running, pid=pid if running else None, started=job.get("started"),
                     cluster_job=f"{job['job_id']} on {job['jobmanager']}" if "job_id" in job else None,
                     restored_from=job.get("restored_from"), last_checkpoint=str(ckpt) if ckpt else None,
                     last_checkpoint_time=(ckpt / "_metadata").stat().st_mtime if ckpt else None,
                     counters=counters, lag=_lag(directory) if lag else None,
                     log=None if running else _tail(directory / "job.log"),
                     exit_code=None if running else _exit_code(job.get("pid")))


def status(store: Any, view: str | None = None, *, lag: bool = True) -> list[JobStatus]:
    if view is not None:
        return [status_of(store, view, lag=lag)]
    base = streams_dir(store)
    return [status_of(store, d.name, lag=lag) for d in sorted(base.iterdir()) if d.is_dir()] if base.is_dir() else []


def stop(store: Any, view: str, timeout: float = 30.0) -> bool:
    """Stop the view's job (SIGTERM to its process group, SIGKILL after ``timeout``). Returns whether
    a job was running. Its checkpoints stay: the next ``start`` resumes from the newest."""
    directory = job_dir(store, view)
    job = _read_job(directory)
    if not job or not _job_running(job):
        return False
    if "job_id" in job:
        _rest(job, "PATCH", "?mode=cancel")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _job_running(job):
            time.sleep(0.5)
        if _job_running(job):
            raise ConflictError(f"the stream job of {view!r} ({_where(job)}) did not stop in {timeout} s")
        (directory / "job.json").unlink(missing_ok=True)
        return True
    kill(job["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(job["pid"]):
        time.sleep(0.2)
    if _alive(job["pid"]):
        kill(job["pid"], signal.SIGKILL)
    (directory / "job.json").unlink(missing_ok=True)
    return True


def kill(pid: int, sig: int) -> None:
    """Signal the job's whole process group (the PyFlink driver, its JVM and Python workers)."""
    try:
        os.killpg(os.getpgid(pid), sig)
    except ProcessLookupError:
        pass
