"""JVM jars by Maven profile: where each profile's jars are, and fetching them from Maven Central.

The jars are listed in ``.ci/jvm/pom.xml`` (one Maven profile per classpath: the Kafka broker, the
Flink Kafka connector, delta-spark) and copied by ``mvn dependency:copy-dependencies`` into
``.ci/cache/jars/<profile>/``, next to a ``.stamp`` file that holds the pom's sha256
(``.ci/services.sh jars <profile>`` does the same and writes the same stamp). A stamp that does not
match the pom means "fetch again".

Outside a checkout of this repository there is no pom: ``profile_jars`` then takes the jars from an
environment variable its caller names.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from featurestore.errors import BackendUnavailableError, NotFoundError


def repo_root() -> Path | None:
    """The checkout this module lives in (the folder holding ``.ci/jvm/pom.xml``), if any."""
    for parent in Path(__file__).resolve().parents:
        if (parent / ".ci" / "jvm" / "pom.xml").is_file():
            return parent
    return None


def _root(root: Path | None) -> Path:
    found = root or repo_root()
    if found is None:
        raise NotFoundError(f"no .ci/jvm/pom.xml above {Path(__file__).parent}: this is not a checkout of "
                            "the repository, so its Maven profiles cannot be fetched")
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


def profile_jars(profile: str, override_env: str, *, root: Path | None = None,
                 fetch_missing: bool = True) -> list[Path]:
    """A profile's jars, sorted: the paths in ``override_env`` (separated by ``os.pathsep`` or commas)
    when it is set, else the profile's cache folder, fetched first when ``fetch_missing``."""
    override = os.environ.get(override_env, "").strip()
    if override:
        paths = [Path(p.strip()) for p in override.replace(",", os.pathsep).split(os.pathsep) if p.strip()]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise NotFoundError(f"{override_env}: no such file {', '.join(missing)}")
        return [p.resolve() for p in paths]
    if repo_root() is None and root is None:
        raise NotFoundError(f"set {override_env} to the jar(s) of Maven profile {profile} "
                            "(outside a checkout there is no .ci/jvm/pom.xml to fetch them with)")
    if fetch_missing:
        folder = fetch(profile, root)
    elif is_fetched(profile, root):
        folder = jars_dir(profile, root)
    else:
        raise NotFoundError(f"the jars of Maven profile {profile} are not fetched: run `make jars` "
                            f"(or .ci/services.sh jars {profile})")
    return sorted(folder.glob("*.jar"))
