"""Building small feature repos on disk for tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from featurestore import FeatureStore


def write_repo(path: Path, features_py: str, *, registry: str = "sqlite:///data/registry.db",
               tables: dict[str, pa.Table] | None = None, project: str = "test",
               online_store: str = "{type: sqlite, path: data/online.db}") -> Path:
    """A repo at ``path`` with ``features.py`` and Parquet files ``data/<name>.parquet``."""
    (path / "data").mkdir(parents=True, exist_ok=True)
    (path / "featurestore.yaml").write_text(
        f"project: {project}\nregistry: {registry}\n"
        f"offline_store: {{type: parquet, path: data/offline}}\nonline_store: {online_store}\n")
    (path / "features.py").write_text(textwrap.dedent(features_py))
    for name, table in (tables or {}).items():
        pq.write_table(table, path / "data" / f"{name}.parquet")
    return path


def store_for(path: Path, features_py: str, **kwargs) -> FeatureStore:
    return FeatureStore(repo_path=write_repo(path, features_py, **kwargs))
