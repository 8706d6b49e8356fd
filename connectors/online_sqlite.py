"""The embedded online store: one SQLite file, the default for a single machine.

Table ``online_rows`` (one per database file, shared by projects)::

    project TEXT, view TEXT, entity_key BLOB   primary key; entity_key = online_codec.encode_key(...)
    event_ts INTEGER, created_ts INTEGER       microseconds since the epoch; no created ts = INT64_MIN
    row BLOB                                   the encoded row (online_codec), timestamps included

A write is one ``BEGIN IMMEDIATE`` transaction of upserts whose ``DO UPDATE ... WHERE`` only replaces a
stored row with a strictly newer ``(event_ts, created_ts)``, so concurrent writers (threads or processes)
keep the newest row per key whatever the interleaving. A stored row that is not sound
(``online_codec.row_problem``: truncated, garbage, a time out of range; checked by the SQL function
``fs_row_sound``, ``online_codec.row_sound``, only when the timestamps would keep it) counts as absent: any write replaces it, and a
read answers that key alone as invalid, naming the row. WAL mode lets readers run beside a writer. Rows
are never expired here: ``read`` returns them with their event timestamps and the caller applies the TTL.
"""

from __future__ import annotations

import datetime
import pathlib
import sqlite3
import threading
import time
import uuid
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from connectors import online_codec as codec
from featurestore.errors import BackendUnavailableError, DamagedStateError, InvalidInputError
from featurestore.ports.online_store import CAP_MULTI_PROCESS, OnlineStore, ReadResult, WriteResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS online_rows (
    project    TEXT    NOT NULL,
    view       TEXT    NOT NULL,
    entity_key BLOB    NOT NULL,
    event_ts   INTEGER NOT NULL,
    created_ts INTEGER NOT NULL,
    row        BLOB    NOT NULL,
    PRIMARY KEY (project, view, entity_key)
) WITHOUT ROWID
"""

_UPSERT = """
INSERT INTO online_rows (project, view, entity_key, event_ts, created_ts, row) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (project, view, entity_key) DO UPDATE
SET event_ts = excluded.event_ts, created_ts = excluded.created_ts, row = excluded.row
WHERE excluded.event_ts > online_rows.event_ts
   OR (excluded.event_ts = online_rows.event_ts AND excluded.created_ts > online_rows.created_ts)
   OR NOT fs_row_sound(online_rows.row, online_rows.event_ts, online_rows.created_ts)
"""

_READ_CHUNK = 500  # keys per SELECT ... IN (...), below SQLite's parameter limit on old builds
_BUSY_TIMEOUT_S = 60.0


def _check_path(path: pathlib.Path) -> None:
    """A DamagedStateError naming the path when no database file can be there: a folder on the way
    is a regular file, or the path itself is a folder."""
    blocker = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        problem = f"{blocker} is a regular file, not a folder"
        action = f"move {blocker} away"
    elif path.is_dir():
        problem, action = "it is a folder, not a database file", f"move the folder {path} away"
    else:
        return
    raise DamagedStateError(
        f"the SQLite online store at {path} cannot be opened: {problem}", path=str(path),
        repair=f"{action} (or set online_store.path in featurestore.yaml to another path), then refill the store "
               f"with `featurestore materialize START END` over the times its views were materialized for")


class SqliteOnlineStoreConfig(BaseModel):
    """``online_store: {type: sqlite, path: data/online.db}``; a relative path resolves against the repo."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["sqlite"] = "sqlite"
    path: str = "data/online.db"


class SqliteOnlineStore(OnlineStore):
    capabilities = frozenset({CAP_MULTI_PROCESS})

    def __init__(self, config: SqliteOnlineStoreConfig, repo_path: pathlib.Path, project: str) -> None:
        if isinstance(config, dict):
            config = SqliteOnlineStoreConfig.model_validate(config)
        self.config = config
        self.project = project
        if config.path == ":memory:":
            # One in-memory database shared by this object's per-thread connections.
            self._target, self._uri = f"file:fs_online_{uuid.uuid4().hex}?mode=memory&cache=shared", True
        else:
            path = pathlib.Path(config.path)
            if not path.is_absolute():
                path = pathlib.Path(repo_path) / path
            _check_path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._target, self._uri = str(path), False
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self._decoder = codec.RowDecoder()
        conn = self._conn()  # create the table now, so configuration errors surface at once
        with self._lock:
            self._keepalive = conn if self._uri else None

    # -- connections -----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise InvalidInputError("the SQLite online store is closed")
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            try:
                conn = sqlite3.connect(self._target, uri=self._uri, timeout=_BUSY_TIMEOUT_S,
                                       isolation_level=None, check_same_thread=False)
                try:
                    self._setup(conn)
                except BaseException:
                    conn.close()
                    raise
                break
            except sqlite3.OperationalError as exc:
                # Switching to WAL needs a moment alone with the file and does not always wait for
                # the busy handler; another process opening the same new file at once can cause it.
                if "locked" in str(exc) and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                raise BackendUnavailableError(f"cannot open the SQLite online store {self._target}: {exc}") from exc
            except sqlite3.Error as exc:
                raise BackendUnavailableError(f"cannot open the SQLite online store {self._target}: {exc}") from exc
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        if not self._uri:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        conn.create_function("fs_row_sound", 3, codec.row_sound, deterministic=True)

    # -- the contract ----------------------------------------------------------------------------
    def write(self, view: str, join_keys: list[str], table: pa.Table, *, event_ts_column: str,
              created_ts_column: str | None = None, ttl: datetime.timedelta | None = None) -> WriteResult:
        total = table.num_rows
        if total == 0:
            return WriteResult(0, 0)
        batch = codec.WriteBatch(table, join_keys, event_ts_column, created_ts_column)
        rows = batch.encoded_rows().to_pylist()
        keys = batch.keys.to_pylist()
        project = self.project
        params = zip([project] * len(rows), [view] * len(rows), keys, batch.event_us.tolist(),
                     batch.created_us.tolist(), rows)
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.executemany(_UPSERT, params)
                written = cur.rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise BackendUnavailableError(f"SQLite online store write failed: {exc}") from exc
        return WriteResult(written=written, skipped_stale=total - written)

    def read(self, view: str, join_keys: list[str], keys: list[tuple], features: list[str],
             feature_types: dict[str, pa.DataType]) -> ReadResult:
        encoded = []
        for key in keys:
            if len(key) != len(join_keys):
                raise InvalidInputError(f"key {key!r} does not match join keys {join_keys!r}")
            encoded.append(codec.encode_key(key))
        found: dict[bytes, bytes] = {}
        conn = self._conn()
        unique = list(dict.fromkeys(encoded))
        try:
            for start in range(0, len(unique), _READ_CHUNK):
                chunk = unique[start:start + _READ_CHUNK]
                sql = ("SELECT entity_key, row FROM online_rows WHERE project = ? AND view = ? "
                       f"AND entity_key IN ({','.join('?' * len(chunk))})")
                found.update(conn.execute(sql, [self.project, view, *chunk]).fetchall())
        except sqlite3.OperationalError as exc:
            raise BackendUnavailableError(f"SQLite online store read failed: {exc}") from exc
        result = self._decoder.decode([found.get(k) for k in encoded], features, feature_types)
        for i, reason in result.invalid.items():
            result.invalid[i] = (f"the SQLite online store {self._target} holds a row that cannot be decoded "
                                 f"(project {self.project!r}, view {view!r}, entity_key {encoded[i]!r}): {reason}")
        return result

    def delete_view(self, view: str) -> None:
        conn = self._conn()
        try:
            conn.execute("DELETE FROM online_rows WHERE project = ? AND view = ?", (self.project, view))
        except sqlite3.OperationalError as exc:
            raise BackendUnavailableError(f"SQLite online store delete failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
            self._keepalive = None
        for conn in connections:
            conn.close()
        self._local = threading.local()
