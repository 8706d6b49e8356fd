"""Backends are plugins loaded by short name from entry-point groups.

Built-in backends are listed here as well, so a source checkout works without an installed
distribution; third-party packages add names through the same entry-point groups.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featurestore.errors import ConfigError, InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    from featurestore.ports.source_reader import SourceReader

GROUPS = {
    "offline_store": "featurestore.offline_stores",
    "online_store": "featurestore.online_stores",
    "engine": "featurestore.engines",
    "source_reader": "featurestore.source_readers",
}

# The built-in backends, the same table as the entry points in pyproject.toml (a test keeps the two
# equal), so a source checkout works without an installed distribution.
_BUILTIN = {
    "offline_store": {"parquet": "connectors.offline_delta:DeltaOfflineStore",  # Delta tables of Parquet files
                      "delta": "connectors.offline_delta:DeltaOfflineStore"},
    "online_store": {"sqlite": "connectors.online_sqlite:SqliteOnlineStore",
                     "redis": "connectors.online_redis:RedisOnlineStore"},
    "engine": {"local": "featurestore.engines.local:LocalEngine",
               "spark": "featurestore.engines.spark:SparkEngine"},
    "source_reader": {"file": "connectors.file_source:FileSourceReader",
                      "sql": "connectors.sql_source:SqlSourceReader",
                      "delta": "connectors.delta_source:DeltaSourceReader"},
}

_EXTRA_FOR_MODULE = {"redis": "redis", "pyspark": "spark", "psycopg": "postgres", "fastapi": "serving"}
_READERS: dict[tuple[str, str], Any] = {}


def available(kind: str) -> dict[str, str]:
    names = dict(_BUILTIN[kind])
    for ep in metadata.entry_points(group=GROUPS[kind]):
        names.setdefault(ep.name, ep.value)
    return names


def load(kind: str, name: str) -> Any:
    """The class registered as ``name`` for ``kind`` (e.g. ``load("online_store", "redis")``)."""
    names = available(kind)
    if name not in names:
        raise ConfigError(f"{kind}: unknown type {name!r}; available: {', '.join(sorted(names))}")
    module_name, _, attr = names[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in _EXTRA_FOR_MODULE:
            raise MissingDependencyError(missing, _EXTRA_FOR_MODULE[missing]) from exc
        raise
    return getattr(module, attr)


def config_class(cls: type) -> type:
    """A backend's pydantic config model: ``<Class>Config`` beside the class in its module."""
    module = importlib.import_module(cls.__module__)
    model = getattr(module, f"{cls.__name__}Config", None)
    if model is None:
        raise ConfigError(f"{cls.__module__}.{cls.__name__} has no {cls.__name__}Config model")
    return model


def source_reader(source: Any, repo_path: Path) -> "SourceReader":
    """The reader the table names for ``source.kind`` (one per kind and repo, kept)."""
    key = (source.kind, str(repo_path))
    reader = _READERS.get(key)
    if reader is None:
        try:
            cls = load("source_reader", source.kind)
        except ConfigError:
            raise InvalidInputError(f"source {source.name!r} of kind {source.kind!r} cannot be read in batch "
                                    f"(readers: {', '.join(sorted(available('source_reader')))})") from None
        reader = _READERS[key] = cls(repo_path)
    return reader
