"""The registry: definition specs (plain JSON dicts) keyed by (project, kind, name), versioned.

Reads go through :class:`RegistryReader` (one consistent transaction); writes through
:class:`WriteTransaction`, which holds an exclusive per-project lock for its whole life, so a
read-modify-write inside ``with registry.write() as tx:`` never loses a concurrent update:

* PostgreSQL: the per-project row in ``fs_projects`` is inserted if missing
  (``INSERT ... ON CONFLICT DO NOTHING``) and locked with ``SELECT ... FOR UPDATE``;
* SQLite: the transaction starts with ``BEGIN IMMEDIATE`` (the database write lock), the file is in
  WAL mode so readers are not blocked, and a busy timeout makes writers wait instead of failing.

A registry the process may only read (a SQLite file or folder without write permission, a
PostgreSQL role without write grants or in read-only transactions) serves reads; opening it writes
nothing when its schema is current, and a write raises :class:`RegistryReadOnlyError`. A SQLite
database in WAL mode inside a folder the process cannot write is opened immutable: it is read as
it was when opened (no one without write access to the folder can change it meanwhile).

>>> reg = Registry("sqlite://", "demo")
>>> with reg.write() as tx:
...     tx.put("entity", "driver", {"name": "driver", "join_keys": ["driver_id"]})
>>> tx.changed, tx.new_version, reg.version()
(True, 1, 1)
>>> reg.get("entity", "driver")["join_keys"]
['driver_id']
>>> with reg.write() as tx:
...     tx.put("entity", "driver", {"join_keys": ["driver_id"], "name": "driver"})
>>> tx.changed, reg.version()
(False, 1)
>>> reg.close()
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import quote

from sqlalchemy import Engine, and_, create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)

from featurestore.errors import (
    BackendUnavailableError,
    ConfigError,
    FeatureStoreError,
    InvalidInputError,
    MissingDependencyError,
    NotFoundError,
)
from featurestore.registry import schema as t
from featurestore.registry.migrations import LATEST, SQLITE_BEGIN_OPTION, upgrade

__all__ = [
    "ObjectVersion",
    "Registry",
    "RegistryObjectNotFound",
    "RegistryReadOnlyError",
    "RegistryReader",
    "RegistryUnavailableError",
    "RegistryUsageError",
    "WriteTransaction",
    "canonical_json",
    "create_registry_engine",
]

DEFAULT_LOCK_TIMEOUT = 60.0


class RegistryObjectNotFound(NotFoundError):
    """``delete`` of a (kind, name) that is not in the registry."""

    def __init__(self, kind: str, name: str):
        super().__init__(f"{kind} {name!r} is not in the registry")
        self.kind = kind
        self.name = name


class RegistryUnavailableError(BackendUnavailableError):
    """The registry database cannot be reached, or its lock could not be taken in time."""


class RegistryReadOnlyError(FeatureStoreError):
    """A write to a registry this process may only read (see the module docs)."""


# PostgreSQL's SQLSTATEs for a write refused: insufficient_privilege, read_only_sql_transaction.
_PG_READ_ONLY = {"42501", "25006"}


def _is_read_only(exc: DBAPIError) -> bool:
    """Whether the database refused a write because this connection may only read."""
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state in _PG_READ_ONLY or "readonly database" in str(orig) or "read-only" in str(orig)


class RegistryUsageError(FeatureStoreError):
    """The registry API was used out of order (nested writes, a transaction used after its block)."""


@dataclass(frozen=True)
class ObjectVersion:
    """One version of one object. ``version`` counts 1..n per object (a delete is a version too)."""

    version: int
    registry_version: int
    spec: dict | None
    deleted: bool
    applied_at: datetime


def canonical_json(spec: Any) -> str:
    """Sorted keys, compact separators, no NaN: equal specs give equal strings."""
    try:
        return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"registry specs must be plain JSON data: {exc}") from None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _check_key(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"registry {what} must be a non-empty string, got {value!r}")
    if len(value) > t.NAME_LENGTH:
        raise InvalidInputError(f"registry {what} is longer than {t.NAME_LENGTH} characters: {value[:40]!r}...")
    return value


# -- engine ---------------------------------------------------------------------------------------
def _sqlite_is_memory(url) -> bool:
    db = url.database
    return not db or db == ":memory:" or url.query.get("mode") == "memory"


def create_registry_engine(url: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Engine:
    """An engine configured for the registry's transactions.

    On SQLite (pysqlite), SQLAlchemy takes over ``BEGIN`` as its SQLite docs describe: the driver's own
    transaction handling is switched off at connect, and the ``begin`` hook emits ``BEGIN DEFERRED`` or,
    for writers (execution option ``fs_sqlite_begin="IMMEDIATE"``), ``BEGIN IMMEDIATE``. Each connection
    gets a busy timeout; file databases are switched to WAL.
    """
    sa_url = make_url(url)
    if sa_url.get_backend_name() != "sqlite":
        return create_engine(sa_url, pool_pre_ping=True)

    engine = create_engine(sa_url, connect_args={"timeout": lock_timeout})
    memory = _sqlite_is_memory(sa_url)

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):
        connection = dialect.loaded_dbapi.connect(*cargs, **cparams)
        if memory or cparams.get("uri") or _opens(connection):
            return connection
        connection.close()  # WAL in a folder it cannot write: read it immutable (module docs)
        return dialect.loaded_dbapi.connect(f"file:{quote(cargs[0])}?mode=ro&immutable=1",
                                            **{**cparams, "uri": True})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
            if not memory and cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                _switch_to_wal(cursor, lock_timeout)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"bad {SQLITE_BEGIN_OPTION} {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _opens(connection: sqlite3.Connection) -> bool:
    """Whether the database can be read through ``connection``: a WAL database in a folder this
    process cannot write cannot, as SQLite cannot make its shared-memory file there."""
    try:
        connection.execute("PRAGMA schema_version").fetchone()
        return True
    except sqlite3.OperationalError as exc:
        return "readonly" not in str(exc) and "unable to open" not in str(exc)


def _switch_to_wal(cursor, lock_timeout: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the lock: switching the
    journal mode answers "database is locked" at once, without waiting for the busy timeout (seen
    when several processes open a new registry together). A database this process may only read
    keeps its mode."""
    deadline = time.monotonic() + lock_timeout
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc):
                return
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


# -- reads ----------------------------------------------------------------------------------------
class RegistryReader:
    """Reads of one project inside one transaction (a consistent view)."""

    def __init__(self, conn: Connection, project: str):
        self._conn = conn
        self.project = project

    def _connection(self) -> Connection:
        return self._conn

    def version(self) -> int:
        value = self._connection().execute(
            select(t.projects.c.version).where(t.projects.c.project == self.project)).scalar()
        return 0 if value is None else int(value)

    def get(self, kind: str, name: str) -> dict | None:
        spec = self._connection().execute(
            select(t.objects.c.spec).where(self._key(kind, name))).scalar()
        return None if spec is None else json.loads(spec)

    def list(self, kind: str) -> dict[str, dict]:
        rows = self._connection().execute(
            select(t.objects.c.name, t.objects.c.spec)
            .where(t.objects.c.project == self.project, t.objects.c.kind == kind)
            .order_by(t.objects.c.name))
        return {name: json.loads(spec) for name, spec in rows}

    def snapshot(self) -> dict[str, dict[str, dict]]:
        rows = self._connection().execute(
            select(t.objects.c.kind, t.objects.c.name, t.objects.c.spec)
            .where(t.objects.c.project == self.project)
            .order_by(t.objects.c.kind, t.objects.c.name))
        out: dict[str, dict[str, dict]] = {}
        for kind, name, spec in rows:
            out.setdefault(kind, {})[name] = json.loads(spec)
        return out

    def snapshot_at(self, version: int) -> dict[str, dict[str, dict]]:
        """What ``snapshot()`` returned when the registry was at ``version``: each object's newest
        version applied at or before it, unless that version deleted the object."""
        h = t.object_versions
        rows = self._connection().execute(
            select(h.c.kind, h.c.name, h.c.version, h.c.spec, h.c.deleted)
            .where(h.c.project == self.project, h.c.registry_version <= version)
            .order_by(h.c.kind, h.c.name, h.c.version))
        newest: dict[tuple[str, str], tuple[str | None, bool]] = {}
        for kind, name, _, spec, deleted in rows:
            newest[(kind, name)] = (spec, bool(deleted))
        out: dict[str, dict[str, dict]] = {}
        for (kind, name), (spec, deleted) in newest.items():
            if not deleted and spec is not None:
                out.setdefault(kind, {})[name] = json.loads(spec)
        return out

    def history(self, kind: str, name: str) -> list[ObjectVersion]:
        h = t.object_versions
        rows = self._connection().execute(
            select(h.c.version, h.c.registry_version, h.c.spec, h.c.deleted, h.c.applied_at)
            .where(h.c.project == self.project, h.c.kind == kind, h.c.name == name)
            .order_by(h.c.version))
        return [ObjectVersion(version=int(v), registry_version=int(rv),
                              spec=None if spec is None else json.loads(spec),
                              deleted=bool(deleted), applied_at=at)
                for v, rv, spec, deleted, at in rows]

    def get_state(self, scope: str, key: str) -> str | None:
        return self._connection().execute(
            select(t.state.c.value).where(
                t.state.c.project == self.project, t.state.c.scope == scope, t.state.c.key == key)).scalar()

    def states(self, scope: str) -> dict[str, str]:
        """Every key of ``scope`` with its value, in one read (e.g. every view's coverage)."""
        rows = self._connection().execute(
            select(t.state.c.key, t.state.c.value).where(t.state.c.project == self.project,
                                                         t.state.c.scope == scope))
        return {key: value for key, value in rows}

    def _key(self, kind: str, name: str):
        return and_(t.objects.c.project == self.project, t.objects.c.kind == kind, t.objects.c.name == name)


# -- writes ---------------------------------------------------------------------------------------
_DELETED = object()


class WriteTransaction(RegistryReader):
    """Changes to one project, made under its exclusive lock; committed when the ``with`` block ends.

    ``put``/``delete``/``set_state`` are buffered and written at the end of the block, where each
    object is compared with what is stored: a put of an equal spec (canonical JSON) writes nothing.
    Reads inside the block (``get``, ``list``, ``snapshot``, ``get_state``) see the buffered changes.
    ``version()`` inside the block is the version the block started from.
    """

    def __init__(self, conn: Connection, project: str, base_version: int):
        super().__init__(conn, project)
        self._base_version = base_version
        self._pending: dict[tuple[str, str], object] = {}  # canonical JSON or _DELETED
        self._pending_state: dict[tuple[str, str], str] = {}
        self._open = True
        self._committed = False
        self._changes: list[dict[str, str]] = []

    # reads see the buffered writes
    def _connection(self) -> Connection:
        if not self._open:
            raise RegistryUsageError("this registry write transaction has ended; start a new `with reg.write()`")
        return self._conn

    def version(self) -> int:
        self._connection()
        return self._base_version

    def get(self, kind: str, name: str) -> dict | None:
        pending = self._pending.get((kind, name))
        if pending is _DELETED:
            return None
        if pending is not None:
            return json.loads(pending)
        return super().get(kind, name)

    def list(self, kind: str) -> dict[str, dict]:
        out = super().list(kind)
        for (k, name), value in self._pending.items():
            if k != kind:
                continue
            if value is _DELETED:
                out.pop(name, None)
            else:
                out[name] = json.loads(value)
        return dict(sorted(out.items()))

    def snapshot(self) -> dict[str, dict[str, dict]]:
        out = super().snapshot()
        for (kind, name), value in self._pending.items():
            if value is _DELETED:
                out.get(kind, {}).pop(name, None)
            else:
                out.setdefault(kind, {})[name] = json.loads(value)
        return {kind: dict(sorted(objs.items())) for kind, objs in sorted(out.items()) if objs}

    def get_state(self, scope: str, key: str) -> str | None:
        if (scope, key) in self._pending_state:
            self._connection()
            return self._pending_state[(scope, key)]
        return super().get_state(scope, key)

    # writes
    def put(self, kind: str, name: str, spec: dict) -> None:
        """Store ``spec`` as the current (kind, name); nothing happens if it equals what is stored."""
        self._connection()
        _check_key("kind", kind)
        _check_key("name", name)
        if not isinstance(spec, dict):
            raise InvalidInputError(f"registry spec for {kind} {name!r} must be a dict, got {type(spec).__name__}")
        self._pending[(kind, name)] = canonical_json(spec)

    def delete(self, kind: str, name: str) -> None:
        """Remove (kind, name); raises :class:`RegistryObjectNotFound` if it is not there."""
        if self.get(kind, name) is None:
            raise RegistryObjectNotFound(kind, name)
        self._pending[(kind, name)] = _DELETED

    def set_state(self, scope: str, key: str, value: str) -> None:
        """Set a small per-project state value (not versioned; does not bump the registry version)."""
        self._connection()
        _check_key("state scope", scope)
        _check_key("state key", key)
        if not isinstance(value, str):
            raise InvalidInputError(f"registry state values are strings, got {type(value).__name__}")
        self._pending_state[(scope, key)] = value

    # results
    @property
    def changed(self) -> bool:
        """Whether the committed block changed any object (state writes do not count)."""
        self._require_committed()
        return bool(self._changes)

    @property
    def new_version(self) -> int:
        """The project's registry version after the block (unchanged if nothing changed)."""
        self._require_committed()
        return self._base_version + 1 if self._changes else self._base_version

    @property
    def changes(self) -> list[dict[str, str]]:
        """What the committed block changed: ``[{"kind", "name", "action"}]``, action create/update/delete."""
        self._require_committed()
        return [dict(c) for c in self._changes]

    def _require_committed(self) -> None:
        if not self._committed:
            raise RegistryUsageError("tx.changed / tx.new_version are known only after the `with` block commits")

    # flushing (inside the lock, just before commit)
    def _flush(self) -> None:
        conn = self._connection()
        now = _utcnow()
        new_version = self._base_version + 1
        changes: list[dict[str, str]] = []
        o, h = t.objects, t.object_versions
        for (kind, name), value in sorted(self._pending.items()):
            stored = conn.execute(select(o.c.spec).where(self._key(kind, name))).scalar()
            if value is _DELETED:
                if stored is None:
                    continue  # created and deleted inside this block
                action = "delete"
                conn.execute(delete(o).where(self._key(kind, name)))
            else:
                if stored is not None and canonical_json(json.loads(stored)) == value:
                    continue
                action = "create" if stored is None else "update"
            last = conn.execute(
                select(func.max(h.c.version))
                .where(h.c.project == self.project, h.c.kind == kind, h.c.name == name)).scalar()
            object_version = (last or 0) + 1
            if action == "create":
                conn.execute(insert(o).values(project=self.project, kind=kind, name=name, spec=value,
                                              object_version=object_version, registry_version=new_version,
                                              updated_at=now))
            elif action == "update":
                conn.execute(update(o).where(self._key(kind, name)).values(
                    spec=value, object_version=object_version, registry_version=new_version, updated_at=now))
            conn.execute(insert(h).values(
                project=self.project, kind=kind, name=name, version=object_version,
                registry_version=new_version, spec=None if value is _DELETED else value,
                deleted=value is _DELETED, applied_at=now))
            changes.append({"kind": kind, "name": name, "action": action})

        if changes:
            conn.execute(update(t.projects).where(t.projects.c.project == self.project)
                         .values(version=new_version, updated_at=now))
            conn.execute(insert(t.registry_versions).values(
                project=self.project, version=new_version, applied_at=now,
                summary=json.dumps(changes, separators=(",", ":"))))

        s = t.state
        for (scope, key), value in sorted(self._pending_state.items()):
            where = and_(s.c.project == self.project, s.c.scope == scope, s.c.key == key)
            stored = conn.execute(select(s.c.value).where(where)).first()
            if stored is None:
                conn.execute(insert(s).values(project=self.project, scope=scope, key=key, value=value,
                                              updated_at=now))
            elif stored[0] != value:
                conn.execute(update(s).where(where).values(value=value, updated_at=now))
        self._changes = changes


def _lock_project(conn: Connection, project: str) -> int:
    """Take the project's exclusive lock for this transaction; return its current version."""
    p = t.projects
    values = {"project": project, "version": 0, "updated_at": _utcnow()}
    dialect = conn.dialect.name
    locked = select(p.c.version).where(p.c.project == project).with_for_update()
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        # Waits for a concurrent inserter of the same row, then does nothing: race-safe.
        conn.execute(dialect_insert(p).values(**values).on_conflict_do_nothing(index_elements=[p.c.project]))
        return int(conn.execute(locked).scalar_one())
    version = conn.execute(locked).scalar()
    if version is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(p).values(**values))
        except IntegrityError:
            pass  # a concurrent writer created it; the locking read below waits for it
        version = conn.execute(locked).scalar_one()
    return int(version)


# -- the registry ---------------------------------------------------------------------------------
class Registry:
    """The registry of one project in a SQLAlchemy database; opening it applies pending migrations.

    ``url`` is any SQLAlchemy URL (``sqlite:////abs/path/registry.db``,
    ``postgresql+psycopg://user:pw@host/db``). ``lock_timeout`` (seconds) bounds how long a writer waits
    for the project lock (SQLite busy timeout, PostgreSQL ``lock_timeout``) before
    :class:`RegistryUnavailableError`.
    """

    def __init__(self, url: str, project: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT):
        self.project = _check_key("project", project)
        if not (isinstance(lock_timeout, (int, float)) and math.isfinite(lock_timeout) and lock_timeout > 0):
            raise InvalidInputError(f"lock_timeout must be a positive number of seconds, got {lock_timeout!r}")
        self.url = url
        self.lock_timeout = float(lock_timeout)
        try:
            sa_url = make_url(url)
            self._engine: Engine | None = create_registry_engine(url, lock_timeout=lock_timeout)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("psycopg"):
                raise MissingDependencyError("psycopg", "postgres") from exc
            raise
        except (ArgumentError, NoSuchModuleError) as exc:
            raise ConfigError(f"invalid registry URL {url!r}: {exc}") from None
        self._local = threading.local()
        self._memory = sa_url.get_backend_name() == "sqlite" and _sqlite_is_memory(sa_url)
        try:
            upgrade(self._engine)
        except DBAPIError as exc:
            self._engine.dispose()
            self._engine = None
            if _is_read_only(exc):
                raise RegistryReadOnlyError(
                    f"the registry at {self._safe_url()} is read-only ({exc.orig}) and its schema is older than "
                    f"this featurestore's (migration {LATEST}): open it once with write access to migrate it, "
                    f"e.g. `featurestore plan`") from exc
            if isinstance(exc, (OperationalError, InterfaceError)):
                raise RegistryUnavailableError(f"cannot open the registry at {self._safe_url()}: {exc.orig}") from exc
            raise
        except BaseException:
            self._engine.dispose()
            self._engine = None
            raise

    def _safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RegistryUsageError("the registry is closed")
        return self._engine

    # reads: each call is one short transaction
    @contextmanager
    def read(self) -> Iterator[RegistryReader]:
        """A consistent read of several things at once (e.g. ``version()`` with ``snapshot()``)."""
        engine = self.engine
        shared = getattr(self._local, "write_conn", None)
        if shared is not None and self._memory:
            # In-memory SQLite has one connection per thread, already inside this thread's write block.
            # Its buffered changes are not flushed yet, so this still reads the committed state.
            yield RegistryReader(shared, self.project)
            return
        try:
            with engine.connect() as conn:
                if conn.dialect.name == "postgresql":
                    conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
                with conn.begin():
                    yield RegistryReader(conn, self.project)
        except (OperationalError, InterfaceError) as exc:
            raise RegistryUnavailableError(f"registry read failed at {self._safe_url()}: {exc.orig}") from exc

    def version(self) -> int:
        with self.read() as r:
            return r.version()

    def get(self, kind: str, name: str) -> dict | None:
        with self.read() as r:
            return r.get(kind, name)

    def list(self, kind: str) -> dict[str, dict]:
        with self.read() as r:
            return r.list(kind)

    def snapshot(self) -> dict[str, dict[str, dict]]:
        with self.read() as r:
            return r.snapshot()

    def history(self, kind: str, name: str) -> list[ObjectVersion]:
        with self.read() as r:
            return r.history(kind, name)

    def snapshot_at(self, version: int) -> dict[str, dict[str, dict]]:
        with self.read() as r:
            return r.snapshot_at(version)

    def get_state(self, scope: str, key: str) -> str | None:
        with self.read() as r:
            return r.get_state(scope, key)

    def states(self, scope: str) -> dict[str, str]:
        with self.read() as r:
            return r.states(scope)

    # writes
    @contextmanager
    def write(self) -> Iterator[WriteTransaction]:
        """One transaction under the project's exclusive lock; commits when the block ends normally,
        rolls back everything if it raises."""
        engine = self.engine
        if getattr(self._local, "writing", False):
            raise RegistryUsageError("registry.write() blocks cannot be nested (it would wait on its own lock)")
        self._local.writing = True
        tx: WriteTransaction | None = None
        try:
            with engine.connect() as conn:
                dialect = conn.dialect.name
                if dialect == "sqlite":
                    conn = conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
                elif dialect == "postgresql":
                    # Each statement after the lock must see what the previous holder committed.
                    conn = conn.execution_options(isolation_level="READ COMMITTED")
                try:
                    with conn.begin():
                        self._local.write_conn = conn
                        if dialect == "postgresql":
                            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(self.lock_timeout * 1000)}ms'")
                        tx = WriteTransaction(conn, self.project, _lock_project(conn, self.project))
                        yield tx
                        tx._flush()
                finally:
                    if tx is not None:
                        tx._open = False
            tx._committed = True
        except DBAPIError as exc:
            if _is_read_only(exc):
                raise RegistryReadOnlyError(
                    f"the registry at {self._safe_url()} is read-only for this process ({exc.orig}): apply, "
                    f"materialize and other changes need write access to it; reads work") from exc
            if isinstance(exc, (OperationalError, InterfaceError)):
                raise RegistryUnavailableError(f"registry write failed at {self._safe_url()}: {exc.orig}") from exc
            raise
        finally:
            self._local.writing = False
            self._local.write_conn = None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({self._safe_url()!r}, project={self.project!r})"
