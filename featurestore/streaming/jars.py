"""Where the Flink Kafka connector jar is, and fetching it from Maven Central when it is not.

The jars are listed in ``.ci/jvm/pom.xml`` (one Maven profile per classpath) and copied by
``mvn dependency:copy-dependencies`` into ``.ci/cache/jars/<profile>/``, next to a ``.stamp`` file that
holds the pom's sha256 (``.ci/services.sh jars <profile>`` does the same and writes the same stamp).
A stamp that does not match the pom means "fetch again".

``FS_FLINK_KAFKA_CONNECTOR_JAR`` names a jar to use instead (e.g. outside a checkout of this repository).

Command line::

    python -m featurestore.streaming.jars            # fetch if needed, print the connector jar's path
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from featurestore.errors import BackendUnavailableError, NotFoundError

CONNECTOR_PROFILE = "flink-kafka"
CONNECTOR_GLOB = "flink-sql-connector-kafka-*.jar"
CONNECTOR_ENV = "FS_FLINK_KAFKA_CONNECTOR_JAR"


def repo_root() -> Path | None:
    """The checkout this module lives in (the folder holding ``.ci/jvm/pom.xml``), if any."""
    for parent in Path(__file__).resolve().parents:
        if (parent / ".ci" / "jvm" / "pom.xml").is_file():
            return parent
    return None


def _root(root: Path | None) -> Path:
    found = root or repo_root()
    if found is None:
        raise NotFoundError(f"no .ci/jvm/pom.xml above {Path(__file__).parent}: set {CONNECTOR_ENV} "
                            "to the path of flink-sql-connector-kafka-<version>.jar")
    return found


def pom_path(root: Path | None = None) -> Path:
    return _root(root) / ".ci" / "jvm" / "pom.xml"


def pom_hash(root: Path | None = None) -> str:
    return hashlib.sha256(pom_path(root).read_bytes()).hexdigest()


def jars_dir(profile: str, root: Path | None = None) -> Path:
    return _root(root) / ".ci" / "cache" / "jars" / profile


def is_fetched(profile: str, root: Path | None = None) -> bool:
    stamp = jars_dir(profile, root) / ".stamp"
    return stamp.is_file() and stamp.read_text().strip() == pom_hash(root)


def fetch(profile: str, root: Path | None = None, timeout: float = 900) -> Path:
    """Copy a profile's jars into its cache folder unless the stamp says they are there; return the folder."""
    target = jars_dir(profile, root)
    if is_fetched(profile, root):
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise NotFoundError("mvn (Maven) is not installed: apt-get install maven, or run `make jars`")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{profile}.", dir=target.parent))
    log = target.parent / f"{profile}.mvn.log"
    cmd = [mvn, "-q", "-B", "-f", str(pom_path(root)), "-P", profile, "dependency:copy-dependencies",
           f"-DoutputDirectory={tmp}"]
    try:
        with log.open("wb") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout, check=False)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise BackendUnavailableError(f"mvn could not fetch profile {profile} (log {log}):\n{tail}")
        if not any(tmp.glob("*.jar")):
            raise BackendUnavailableError(f"mvn fetched no jars for profile {profile} (log {log})")
        (tmp / ".stamp").write_text(pom_hash(root) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def connector_jar(root: Path | None = None, fetch_missing: bool = True) -> Path:
    """The Flink SQL Kafka connector jar (a shaded jar: the only one a Kafka table needs)."""
    override = os.environ.get(CONNECTOR_ENV, "").strip()
    if override:
        path = Path(override)
        if not path.is_file():
            raise NotFoundError(f"{CONNECTOR_ENV}={override}: no such file")
        return path.resolve()
    if fetch_missing:
        folder = fetch(CONNECTOR_PROFILE, root)
    elif is_fetched(CONNECTOR_PROFILE, root):
        folder = jars_dir(CONNECTOR_PROFILE, root)
    else:
        raise NotFoundError(f"the Flink Kafka connector is not fetched: run `make jars` "
                            f"(or .ci/services.sh jars {CONNECTOR_PROFILE})")
    found = sorted(folder.glob(CONNECTOR_GLOB))
    if len(found) != 1:
        raise NotFoundError(f"expected one {CONNECTOR_GLOB} in {folder}, found {[p.name for p in found]}")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["fetch"]):
        print("usage: python -m featurestore.streaming.jars [fetch]", file=sys.stderr)
        return 2
    print(connector_jar())
    return 0


if __name__ == "__main__":
    sys.exit(main())
