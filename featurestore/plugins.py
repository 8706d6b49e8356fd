"""Backends are plugins loaded by short name from entry-point groups.

Built-in backends are listed here as well, so a source checkout works without an installed
distribution; third-party packages add names through the same entry-point groups.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from featurestore.errors import ConfigError, MissingDependencyError

GROUPS = {
    "offline_store": "featurestore.offline_stores",
    "online_store": "featurestore.online_stores",
    "engine": "featurestore.engines",
}

# The built-in backends, the same table as the entry points in pyproject.toml (a test keeps the two
# equal), so a source checkout works without an installed distribution.
_BUILTIN = {
    "offline_store": {"parquet": "connectors.offline_parquet:ParquetOfflineStore"},
    "online_store": {"sqlite": "connectors.online_sqlite:SqliteOnlineStore",
                     "redis": "connectors.online_redis:RedisOnlineStore"},
    "engine": {"local": "featurestore.engines.local:LocalEngine",
               "spark": "featurestore.engines.spark:SparkEngine"},
}

_EXTRA_FOR_MODULE = {"redis": "redis", "pyspark": "spark", "psycopg": "postgres", "fastapi": "serving"}


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
