"""The registry's tables as they are after the newest migration.

Queries use these :class:`~sqlalchemy.Table` objects. The DDL that creates them lives in
``migrations.py``, frozen per step, so that changing a table here always goes with a new numbered
migration (``test_registry_store`` checks that the migrated database matches this module).

Every row is scoped by ``project``; one database can hold many projects.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, String, Table, Text
from sqlalchemy.types import TypeDecorator

NAME_LENGTH = 255

metadata = MetaData()


class UTCDateTime(TypeDecorator):
    """A timestamp that is always timezone-aware UTC in Python, on every backend.

    SQLite stores datetimes without an offset, so values are normalised to UTC on the way in and
    marked as UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to a UTC column")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # defensive: raw SQLite text
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _name() -> String:
    return String(NAME_LENGTH)


schema_migrations = Table(
    "fs_schema_migrations", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", _name(), nullable=False),
    Column("applied_at", UTCDateTime(), nullable=False),
)

# One row per project: the lock row writers take (FOR UPDATE) and the current registry version.
projects = Table(
    "fs_projects", metadata,
    Column("project", _name(), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# One row per committed write that changed something; ``summary`` is JSON:
# ``[{"kind": ..., "name": ..., "action": "create" | "update" | "delete"}, ...]``.
registry_versions = Table(
    "fs_registry_versions", metadata,
    Column("project", _name(), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UTCDateTime(), nullable=False),
    Column("summary", Text, nullable=False),
)

# The current objects; ``spec`` is canonical JSON.
objects = Table(
    "fs_objects", metadata,
    Column("project", _name(), primary_key=True),
    Column("kind", _name(), primary_key=True),
    Column("name", _name(), primary_key=True),
    Column("spec", Text, nullable=False),
    Column("object_version", Integer, nullable=False),
    Column("registry_version", Integer, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Every version of every object, deletes included (``spec`` NULL, ``deleted`` true).
object_versions = Table(
    "fs_object_versions", metadata,
    Column("project", _name(), primary_key=True),
    Column("kind", _name(), primary_key=True),
    Column("name", _name(), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("registry_version", Integer, nullable=False, index=True),
    Column("spec", Text, nullable=True),
    Column("deleted", Boolean, nullable=False),
    Column("applied_at", UTCDateTime(), nullable=False),
)

# Small per-project key/value state (e.g. materialization watermarks). Not versioned.
state = Table(
    "fs_state", metadata,
    Column("project", _name(), primary_key=True),
    Column("scope", _name(), primary_key=True),
    Column("key", _name(), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)
