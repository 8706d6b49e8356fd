"""The SQLAlchemy registry: versioned definition specs per project (SQLite by default, PostgreSQL in
production). See :class:`Registry`."""

from featurestore.registry.migrations import RegistrySchemaTooNewError
from featurestore.registry.store import (
    ObjectVersion,
    Registry,
    RegistryObjectNotFound,
    RegistryReader,
    RegistryReadOnlyError,
    RegistryUnavailableError,
    RegistryUsageError,
    WriteTransaction,
    canonical_json,
)

__all__ = [
    "ObjectVersion",
    "Registry",
    "RegistryObjectNotFound",
    "RegistryReadOnlyError",
    "RegistryReader",
    "RegistrySchemaTooNewError",
    "RegistryUnavailableError",
    "RegistryUsageError",
    "WriteTransaction",
    "canonical_json",
]
