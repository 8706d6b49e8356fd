"""Numbered schema migrations for the registry database.

Each step is applied once, in order, in its own transaction, and recorded in
``fs_schema_migrations``. The DDL of every step is frozen here (its own ``Table`` objects), so a
later change to ``schema.py`` never rewrites what an earlier step did; add a new step instead.

Two processes may open the same registry at once. Each step runs under a database-wide lock
(``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and re-reads what is applied
after taking it, so only one process applies a step and the other finds it done. On other backends a
lost race shows up as an integrity error on the bookkeeping row and is treated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DatabaseError

from featurestore.errors import ConflictError
from featurestore.registry.schema import UTCDateTime, schema_migrations

# Any constant works; it only has to be the same in every process ("fs_reg" in ASCII).
_PG_LOCK_KEY = 0x66735F726567

SQLITE_BEGIN_OPTION = "fs_sqlite_begin"
"""Execution option read by the registry engine's ``begin`` hook on SQLite (``DEFERRED``/``IMMEDIATE``)."""


class RegistrySchemaTooNewError(ConflictError):
    """The registry database was migrated by a newer featurestore than this one."""


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    apply: Callable[[Connection], None]


def _name() -> String:
    return String(255)


def _m0001_initial(conn: Connection) -> None:
    md = MetaData()
    Table(
        "fs_projects", md,
        Column("project", _name(), primary_key=True),
        Column("version", Integer, nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    Table(
        "fs_registry_versions", md,
        Column("project", _name(), primary_key=True),
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("applied_at", UTCDateTime(), nullable=False),
        Column("summary", Text, nullable=False),
    )
    Table(
        "fs_objects", md,
        Column("project", _name(), primary_key=True),
        Column("kind", _name(), primary_key=True),
        Column("name", _name(), primary_key=True),
        Column("spec", Text, nullable=False),
        Column("object_version", Integer, nullable=False),
        Column("registry_version", Integer, nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    Table(
        "fs_object_versions", md,
        Column("project", _name(), primary_key=True),
        Column("kind", _name(), primary_key=True),
        Column("name", _name(), primary_key=True),
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("registry_version", Integer, nullable=False),
        Column("spec", Text, nullable=True),
        Column("deleted", Boolean, nullable=False),
        Column("applied_at", UTCDateTime(), nullable=False),
    )
    md.create_all(conn, checkfirst=False)


def _m0002_state(conn: Connection) -> None:
    md = MetaData()
    Table(
        "fs_state", md,
        Column("project", _name(), primary_key=True),
        Column("scope", _name(), primary_key=True),
        Column("key", _name(), primary_key=True),
        Column("value", Text, nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
    )
    md.create_all(conn, checkfirst=False)


def _m0003_versions_index(conn: Connection) -> None:
    md = MetaData()
    table = Table("fs_object_versions", md, Column("registry_version", Integer))
    Index("ix_fs_object_versions_registry_version", table.c.registry_version).create(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema: projects, registry versions, objects, object history", _m0001_initial),
    Migration(2, "per-project key/value state", _m0002_state),
    Migration(3, "index object history by registry version", _m0003_versions_index),
)

LATEST = MIGRATIONS[-1].number


def _check_numbering() -> None:
    numbers = [m.number for m in MIGRATIONS]
    if numbers != list(range(1, len(numbers) + 1)):
        raise AssertionError(f"registry migrations must be numbered 1..n without gaps, got {numbers}")


_check_numbering()


def _locked_begin(engine: Engine):
    """A transaction holding the migration lock (released at commit/rollback)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"}).begin()
    return engine.begin()


def _take_lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


def _applied(conn: Connection) -> set[int]:
    if not inspect(conn).has_table(schema_migrations.name):
        return set()
    return set(conn.execute(select(schema_migrations.c.version)).scalars())


def applied_migrations(engine: Engine) -> list[int]:
    """Numbers of the migrations recorded in the database, ascending."""
    with engine.connect() as conn:
        return sorted(_applied(conn))


def _ensure_bookkeeping(engine: Engine) -> None:
    with _locked_begin(engine) as conn:
        _take_lock(conn)
        if not inspect(conn).has_table(schema_migrations.name):
            md = MetaData()
            Table(
                schema_migrations.name, md,
                Column("version", Integer, primary_key=True, autoincrement=False),
                Column("name", _name(), nullable=False),
                Column("applied_at", UTCDateTime(), nullable=False),
            )
            md.create_all(conn, checkfirst=False)


def upgrade(engine: Engine, target: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target`` (default: all); return the numbers this call applied.

    ``engine`` must come from :func:`featurestore.registry.store.create_registry_engine` on SQLite
    (it installs the ``BEGIN`` hook that makes DDL transactional and takes the write lock).
    """
    target = LATEST if target is None else target
    if not 0 <= target <= LATEST:
        raise ValueError(f"migration target must be between 0 and {LATEST}, got {target}")

    done = applied_migrations(engine)
    if done and max(done) > LATEST:
        raise RegistrySchemaTooNewError(
            f"the registry database is at schema migration {max(done)} but this featurestore only knows "
            f"migrations up to {LATEST}; upgrade featurestore")
    if all(m.number in done for m in MIGRATIONS if m.number <= target):
        return []

    _ensure_bookkeeping(engine)
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.number > target:
            break
        try:
            with _locked_begin(engine) as conn:
                _take_lock(conn)
                if migration.number in _applied(conn):
                    continue  # someone else got here first
                migration.apply(conn)
                conn.execute(insert(schema_migrations).values(
                    version=migration.number, name=migration.name, applied_at=datetime.now(timezone.utc)))
        except DatabaseError:
            # Backends without a lock here: a concurrent process may have applied the step meanwhile.
            if migration.number in applied_migrations(engine):
                continue
            raise
        applied.append(migration.number)
    return applied
