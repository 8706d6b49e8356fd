"""The virtual environment the Flink job runs in (``.venv-flink``), and checks that it works.

PyFlink 2.2 (through apache-beam) caps pyarrow below 17, pandas below 2.3 and redis-py below 6, while
the main environment runs Spark 4 with pyarrow >= 18. So the stream job
runs in its own venv: PyFlink 2.2, this project (editable, so ``transforms/`` and ``connectors/`` are
the checkout's) with its redis and streaming extras, and the versions of the shared libraries that
PyFlink allows. Creating it is idempotent: a stamp file in the venv records what was installed, and
the install runs again only when that changes (``FLINK_REQUIREMENTS``, ``pyproject.toml``, Python).

Command line (from the main environment)::

    python -m featurestore.streaming.env ensure          # create or update; print the venv's python
    python -m featurestore.streaming.env check           # a tiny Table API job on a local mini-cluster
    python -m featurestore.streaming.env check --kafka 127.0.0.1:59092
                                                         # ... plus a bounded read of a fresh topic
                                                         #     through the Kafka connector jar

Settings: ``FS_FLINK_VENV`` (venv folder, default ``<checkout>/.venv-flink``), ``FS_FLINK_PYTHON``
(interpreter to base it on, default this one's base Python; PyFlink 2.2 ships wheels for 3.9-3.12),
``JAVA_HOME`` (else found from ``java`` on PATH; PyFlink starts a JVM).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from featurestore import jvm_jars
from featurestore.errors import BackendUnavailableError, FeatureStoreError
from featurestore.streaming import jars

FLINK_VERSION = "2.2.*"
# Shared libraries at versions PyFlink 2.2.x (apache-beam <= 2.61) accepts, within the project's own
# lower bounds. pip resolves the rest of the project's dependencies against these.
FLINK_REQUIREMENTS: tuple[str, ...] = (
    f"apache-flink=={FLINK_VERSION}",
    "pyarrow>=16,<17",
    "pandas>=2.0,<2.3",
    "redis[hiredis]>=5,<6",  # hiredis: the job reads aggregation states back from Redis every batch
)
PROJECT_EXTRAS = "redis,streaming"
STAMP_NAME = ".featurestore-flink.json"
# Modules the check imports in the venv; their versions go into the stamp and the report.
PROBE_MODULES = ("pyflink", "pyarrow", "pandas", "redis", "confluent_kafka", "pydantic", "featurestore")


class FlinkEnvError(FeatureStoreError):
    """The Flink virtual environment could not be created, or a check job failed."""


# ---------------------------------------------------------------- paths and settings


def _checkout() -> Path:
    root = jvm_jars.repo_root()
    if root is None:
        raise FlinkEnvError("featurestore.streaming.env manages a venv for a checkout of the repository "
                            "(no .ci/jvm/pom.xml found above this module)")
    return root


def venv_dir() -> Path:
    override = os.environ.get("FS_FLINK_VENV", "").strip()
    return Path(override).resolve() if override else _checkout() / ".venv-flink"


def venv_python(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "python"


def base_python() -> str:
    override = os.environ.get("FS_FLINK_PYTHON", "").strip()
    if override:
        return override
    # From inside a venv, base the new one on the interpreter the current venv was made from.
    return getattr(sys, "_base_executable", None) or sys.executable


def java_home() -> str | None:
    home = os.environ.get("JAVA_HOME", "").strip()
    if home and Path(home, "bin", "java").exists():
        return home
    java = shutil.which("java")
    if java is None:
        return None
    return str(Path(java).resolve().parent.parent)


def child_env() -> dict[str, str]:
    """Environment for processes in the Flink venv: JAVA_HOME set, no PYTHONPATH from the caller."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    home = java_home()
    if home is None:
        raise FlinkEnvError("no Java found (PyFlink needs a JDK 11+; set JAVA_HOME or put java on PATH)")
    env["JAVA_HOME"] = home
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wanted(root: Path | None = None) -> dict[str, Any]:
    """What the venv should hold; its hash is the stamp."""
    root = root or _checkout()
    pyproject = (root / "pyproject.toml").read_bytes()
    return {
        "requirements": list(FLINK_REQUIREMENTS),
        "project": f"{root}[{PROJECT_EXTRAS}]",
        "pyproject_sha256": hashlib.sha256(pyproject).hexdigest(),
        "base_python": str(Path(base_python()).resolve()),
    }


def _fingerprint(want: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(want, sort_keys=True).encode()).hexdigest()


def read_stamp(venv: Path | None = None) -> dict[str, Any] | None:
    path = (venv or venv_dir()) / STAMP_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_ready(venv: Path | None = None) -> bool:
    venv = venv or venv_dir()
    stamp = read_stamp(venv)
    return (stamp is not None and venv_python(venv).exists()
            and stamp.get("fingerprint") == _fingerprint(wanted()))


# ---------------------------------------------------------------- creating the venv


@contextmanager
def _lock(venv: Path) -> Iterator[None]:
    """One creator at a time (e.g. two test processes): the others wait, then find it ready.

    The lock, the install log and a ``.gitignore`` of ``*`` live inside the venv folder, so git never
    lists any of it (Python 3.13's venv writes the same ``.gitignore``; 3.11 does not).
    """
    venv.mkdir(parents=True, exist_ok=True)
    (venv / ".gitignore").write_text("# created by featurestore.streaming.env\n*\n")
    with open(venv / ".featurestore-flink.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], what: str, timeout: float, env: Mapping[str, str] | None = None,
         log: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise FlinkEnvError(f"{what}: no result within {timeout:.0f}s") from exc
    if log is not None:
        with log.open("a") as out:
            out.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n(exit {proc.returncode})\n")
    if proc.returncode != 0:
        tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
        raise FlinkEnvError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


def ensure(verbose: bool = False, timeout: float = 1800) -> Path:
    """Create or update the Flink venv if its stamp is missing or stale; return its python."""
    venv = venv_dir()
    if is_ready(venv):
        return venv_python(venv)
    with _lock(venv):
        if is_ready(venv):  # made by whoever held the lock
            return venv_python(venv)
        root = _checkout()
        want = wanted(root)
        env = child_env()
        log = venv / "featurestore-install.log"
        log.write_text("")
        say = (lambda msg: print(f"[flink-env] {msg}", file=sys.stderr)) if verbose else (lambda msg: None)
        t0 = time.monotonic()
        (venv / STAMP_NAME).unlink(missing_ok=True)
        if not venv_python(venv).exists():
            say(f"creating {venv} from {want['base_python']}")
            _run([want["base_python"], "-m", "venv", str(venv)], "python -m venv", 300, env, log)
        py = str(venv_python(venv))
        say(f"pip install {' '.join(FLINK_REQUIREMENTS)} -e '{want['project']}' (log {log})")
        _run([py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
              *FLINK_REQUIREMENTS, "-e", want["project"]], "pip install into the Flink venv", timeout, env, log)
        versions = json.loads(_run([py, "-c", _PROBE], "importing PyFlink in the Flink venv", 300, env,
                                   log).stdout)
        stamp = {"fingerprint": _fingerprint(want), **want, "versions": versions,
                 "created_seconds": round(time.monotonic() - t0, 1)}
        (venv / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")
        say(f"ready in {stamp['created_seconds']}s: {versions}")
    return venv_python(venv)


_PROBE = f"""
import importlib, json, sys
out = {{"python": sys.version.split()[0]}}
for name in {PROBE_MODULES!r}:
    mod = importlib.import_module(name)
    out[name] = getattr(mod, "__version__", None) or getattr(getattr(mod, "version", None), "__version__", None)
if out.get("pyflink") is None:
    from importlib.metadata import version
    out["pyflink"] = version("apache-flink")
if out.get("confluent_kafka") is None:
    import confluent_kafka
    out["confluent_kafka"] = confluent_kafka.version()[0]
print(json.dumps(out))
"""


# ---------------------------------------------------------------- running jobs in the venv

# Runs inside the Flink venv: one SQL job on a local mini-cluster, rows out as JSON on the last line.
# argv[1]: {"statements": [DDL...], "query": "SELECT ...", "jars": ["file:///..."]}
_JOB = r"""
import json, sys
job = json.loads(sys.argv[1])
from pyflink.table import EnvironmentSettings, TableEnvironment
t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
conf = t_env.get_config()
conf.set("parallelism.default", "1")
if job.get("jars"):
    conf.set("pipeline.jars", ";".join(job["jars"]))
for statement in job.get("statements", []):
    t_env.execute_sql(statement)
result = t_env.execute_sql(job["query"])
names = result.get_table_schema().get_field_names()
rows = []
with result.collect() as results:
    for row in results:
        rows.append({n: row[i] for i, n in enumerate(names)})
print("FS-ROWS " + json.dumps(rows, default=str))
"""


def run_sql(query: str, statements: Sequence[str] = (), jar_paths: Sequence[Path] = (),
            timeout: float = 300) -> list[dict[str, Any]]:
    """Run ``statements`` then ``query`` on a Flink mini-cluster in the venv; return the rows collected.

    The query must be bounded (finite sources). Values come back through JSON (timestamps as strings).
    """
    py = ensure()
    job = {"statements": list(statements), "query": query,
           "jars": [Path(p).resolve().as_uri() for p in jar_paths]}
    proc = _run([str(py), "-c", _JOB, json.dumps(job)], "Flink job", timeout, child_env())
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("FS-ROWS "):
            return json.loads(line[len("FS-ROWS "):])
    raise FlinkEnvError(f"Flink job printed no rows:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def check_local(timeout: float = 300) -> list[int]:
    """A Table API job with no outside input: doubled VALUES must come back exactly."""
    rows = run_sql("SELECT x * 2 AS y FROM (VALUES (1), (2), (3)) AS t(x)", timeout=timeout)
    got = sorted(r["y"] for r in rows)
    if got != [2, 4, 6]:
        raise FlinkEnvError(f"Flink check job returned {rows}, expected y = 2, 4, 6")
    return got


def kafka_table_ddl(table: str, topic: str, bootstrap: str, columns: Mapping[str, str]) -> str:
    """``CREATE TABLE`` for a bounded JSON read of ``topic`` from the earliest to the latest offset."""
    cols = ",\n  ".join(f"`{name}` {sql_type}" for name, sql_type in columns.items())
    options = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": bootstrap,
        "properties.group.id": f"fs-check-{uuid.uuid4().hex[:12]}",
        "scan.startup.mode": "earliest-offset",
        "scan.bounded.mode": "latest-offset",
        "format": "json",
        "json.fail-on-missing-field": "true",
    }
    opts = ",\n  ".join(f"'{k}' = '{v}'" for k, v in options.items())
    return f"CREATE TABLE `{table}` (\n  {cols}\n) WITH (\n  {opts}\n)"


def read_kafka(bootstrap: str, topic: str, columns: Mapping[str, str], timeout: float = 300) -> list[dict]:
    """Read every JSON record now in ``topic`` through Flink's Kafka connector (a bounded job)."""
    ddl = kafka_table_ddl("src", topic, bootstrap, columns)
    select = ", ".join(f"`{c}`" for c in columns)
    return run_sql(f"SELECT {select} FROM src", [ddl], [jars.connector_jar()], timeout=timeout)


def check_kafka(bootstrap: str, rows: int = 20, timeout: float = 300) -> int:
    """Produce ``rows`` JSON records to a fresh topic, read them back through Flink, compare exactly."""
    from connectors.kafka import KafkaClient, KafkaConfig

    client = KafkaClient(KafkaConfig(bootstrap_servers=bootstrap))
    topic = f"fs-flink-check-{uuid.uuid4().hex[:12]}"
    try:
        client.create_topic(topic, partitions=2)
        sent = [{"id": i, "name": f"n{i}", "price": i / 4} for i in range(rows)]
        client.produce(topic, sent, key=lambda r: str(r["id"]))
        got = read_kafka(bootstrap, topic, {"id": "INT", "name": "STRING", "price": "DOUBLE"}, timeout)
    except BackendUnavailableError as exc:
        raise FlinkEnvError(f"Kafka at {bootstrap}: {exc}") from exc
    finally:
        try:
            client.delete_topic(topic)
        except BackendUnavailableError:
            pass
    if sorted(got, key=lambda r: r["id"]) != sent:
        raise FlinkEnvError(f"Flink read {len(got)} rows from {topic}, expected {len(sent)}: {got[:5]}")
    return len(got)


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m featurestore.streaming.env",
                                     description="Manage the PyFlink virtual environment")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ensure", help="create or update the venv; print its python")
    sub.add_parser("python", help="print the venv's python if the venv is ready (exit 1 if not)")
    check = sub.add_parser("check", help="run check jobs in the venv")
    check.add_argument("--kafka", metavar="BOOTSTRAP", help="also read a fresh topic through the connector")
    check.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "python":
            if not is_ready():
                print(f"{venv_dir()} is missing or stale: run `python -m featurestore.streaming.env ensure`",
                      file=sys.stderr)
                return 1
            print(venv_python())
        elif args.cmd == "ensure":
            print(ensure(verbose=True))
        else:
            ensure(verbose=True)
            t0 = time.monotonic()
            check_local(args.timeout)
            print(f"flink check: local Table API job OK ({time.monotonic() - t0:.1f}s)")
            if args.kafka:
                t0 = time.monotonic()
                n = check_kafka(args.kafka, timeout=args.timeout)
                print(f"flink check: {n} rows read back from Kafka through {jars.connector_jar().name} "
                      f"({time.monotonic() - t0:.1f}s)")
    except FeatureStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
