"""Create (idempotently) the virtual environment that holds Feast for the benchmark.

Feast pins its own versions of pyarrow, pandas and friends, so it lives in
``benchmarks/.venv-feast`` and never touches the project's environment.
Run directly (``python benchmarks/feast_env.py``) to install ahead of time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-feast"
# The duckdb extra pulls ibis-framework[duckdb], which Feast's DuckDB offline store is built on.
REQUIREMENTS = ["feast[duckdb]==0.67.0"]
MARKER = VENV / ".bench-installed"


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def _is_ready(venv: Path) -> bool:
    marker = venv / ".bench-installed"
    if not marker.exists() or marker.read_text().strip() != " ".join(REQUIREMENTS):
        return False
    probe = "import feast, ibis, duckdb; from feast.infra.offline_stores.duckdb import DuckDBOfflineStore"
    return subprocess.run([str(venv_python(venv)), "-c", probe], capture_output=True).returncode == 0


def ensure_feast_venv(venv: Path = VENV, quiet: bool = True) -> Path:
    """Return the venv's python, creating the venv and installing Feast if needed."""
    if _is_ready(venv):
        return venv_python(venv)
    if not venv_python(venv).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv_python(venv)), "-m", "pip"]
    q = ["-q"] if quiet else []
    subprocess.run(pip + ["install", *q, "--upgrade", "pip"], check=True)
    subprocess.run(pip + ["install", *q, *REQUIREMENTS], check=True)
    (venv / ".bench-installed").write_text(" ".join(REQUIREMENTS) + "\n")
    if not _is_ready(venv):
        raise RuntimeError(f"Feast venv at {venv} is still not importable after install")
    return venv_python(venv)


if __name__ == "__main__":
    print(ensure_feast_venv(quiet=False))
