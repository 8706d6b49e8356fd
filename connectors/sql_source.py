"""SQL sources: read a table or a query through SQLAlchemy into Arrow.

Identifiers are quoted by SQLAlchemy and time bounds are bound parameters: no user string is spliced
into SQL. A user's ``query`` is used as a subquery, as written.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime
from typing import Iterator

import pyarrow as pa
import sqlalchemy as sa

from featurestore.errors import BackendUnavailableError, DefinitionError, NotFoundError
from featurestore.ports.engine import ViewData
from featurestore.ports.source_reader import CAP_PRUNE, SourceReader
from featurestore.sources import SqlSource

_ENGINES: dict[str, sa.Engine] = {}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_url(source: SqlSource) -> str:
    def repl(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise DefinitionError(f"SqlSource {source.name!r}: environment variable {name} is not set",
                                  obj=source.name, field="url")
        return os.environ[name]

    return _VAR.sub(repl, source.url)


def engine_for(source: SqlSource) -> sa.Engine:
    url = expand_url(source)
    if url not in _ENGINES:
        _ENGINES[url] = sa.create_engine(url, pool_pre_ping=True)
    return _ENGINES[url]


def _selectable(source: SqlSource) -> sa.Subquery | sa.Table:
    if source.table is not None:
        schema, _, name = source.table.rpartition(".")
        return sa.table(name, schema=schema or None)
    return sa.text(source.query).columns().subquery("fs_source")  # type: ignore[arg-type]


def _select(source: SqlSource, columns: list[str] | None, start: datetime | None,
            end: datetime | None, limit: int | None = None) -> sa.Select:
    cols = [sa.column(c) for c in columns] if columns else [sa.text("*")]
    stmt = sa.select(*cols).select_from(_selectable(source))
    ts = sa.column(source.timestamp_field)
    if start is not None:
        stmt = stmt.where(ts >= sa.bindparam("fs_start", start))
    if end is not None:
        stmt = stmt.where(ts <= sa.bindparam("fs_end", end))
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt


def _batches(source: SqlSource, stmt: sa.Select, batch_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        with engine_for(source).connect() as conn:
            result = conn.execution_options(stream_results=True).execute(stmt)
            names = list(result.keys())
            while True:
                rows = result.fetchmany(batch_rows)
                if not rows:
                    break
                columns = list(zip(*rows))
                yield pa.RecordBatch.from_arrays([pa.array(list(c)) for c in columns], names=names)
    except sa.exc.OperationalError as exc:
        raise BackendUnavailableError(f"SqlSource {source.name!r}: database unreachable: {exc.orig}") from exc
    except sa.exc.ProgrammingError as exc:
        raise NotFoundError(f"SqlSource {source.name!r}: query failed: {exc.orig}") from exc


def read_arrow(source: SqlSource, columns: list[str] | None = None, start: datetime | None = None,
               end: datetime | None = None, batch_rows: int = 100_000) -> pa.Table:
    """Rows with start <= timestamp <= end (bounds optional) as one Arrow table."""
    stmt = _select(source, columns, start, end)
    batches = list(_batches(source, stmt, batch_rows))
    if not batches:
        schema = read_schema(source)
        if columns:
            schema = pa.schema([schema.field(c) for c in columns])
        return schema.empty_table()
    unified = pa.unify_schemas([b.schema for b in batches], promote_options="permissive")
    return pa.Table.from_batches([b.cast(unified) if b.schema != unified else b for b in batches])


_SA_TO_ARROW = [
    (sa.Boolean, pa.bool_()), (sa.BigInteger, pa.int64()), (sa.SmallInteger, pa.int32()),
    (sa.Integer, pa.int64()), (sa.Float, pa.float64()), (sa.Numeric, pa.float64()),
    (sa.DateTime, pa.timestamp("us", tz="UTC")), (sa.Date, pa.timestamp("us", tz="UTC")),
    (sa.LargeBinary, pa.binary()), (sa.String, pa.string()),
]


def read_schema(source: SqlSource) -> pa.Schema:
    """Column names and Arrow types: reflected for tables, inferred from a few rows for queries."""
    if source.table is not None:
        schema, _, name = source.table.rpartition(".")
        try:
            insp = sa.inspect(engine_for(source))
            cols = insp.get_columns(name, schema=schema or None)
        except sa.exc.NoSuchTableError:
            raise NotFoundError(f"SqlSource {source.name!r}: table {source.table!r} does not exist") from None
        except sa.exc.OperationalError as exc:
            raise BackendUnavailableError(f"SqlSource {source.name!r}: database unreachable: {exc.orig}") from exc
        if not cols:
            raise NotFoundError(f"SqlSource {source.name!r}: table {source.table!r} does not exist")
        fields = []
        for col in cols:
            arrow = pa.string()
            for sa_type, candidate in _SA_TO_ARROW:
                if isinstance(col["type"], sa_type):
                    arrow = candidate
                    break
            fields.append(pa.field(col["name"], arrow))
        return pa.schema(fields)
    batches = list(_batches(source, _select(source, None, None, None, limit=100), 100))
    if not batches:
        raise DefinitionError(f"SqlSource {source.name!r}: the query returned no rows, so its column types "
                              "cannot be inferred; use table= or add rows", obj=source.name, field="query")
    return batches[0].schema


def fingerprint(source: SqlSource) -> str:
    """Identifies the source (url without password, table or query) and its row count and time range."""
    url = sa.engine.make_url(expand_url(source)).render_as_string(hide_password=True)
    base = _selectable(source)
    ts = sa.column(source.timestamp_field)
    stmt = sa.select(sa.func.count(), sa.func.min(ts), sa.func.max(ts)).select_from(base)
    try:
        with engine_for(source).connect() as conn:
            count, lo, hi = conn.execute(stmt).one()
    except sa.exc.OperationalError as exc:
        raise BackendUnavailableError(f"SqlSource {source.name!r}: database unreachable: {exc.orig}") from exc
    digest = hashlib.sha256(f"{url}\0{source.table}\0{source.query}\0{count}\0{lo}\0{hi}".encode())
    return "sql:" + digest.hexdigest()[:32]


class SqlSourceReader(SourceReader):
    """SqlSource rows: the wanted columns and time range, selected by the database into Arrow."""

    capabilities = frozenset({CAP_PRUNE})

    def schema(self, source: SqlSource) -> pa.Schema:
        return read_schema(source)

    def fingerprint(self, source: SqlSource) -> str:
        return fingerprint(source)

    def read(self, source: SqlSource, columns: list[str] | None, start: datetime | None,
             end: datetime | None) -> ViewData:
        return ViewData(source.timestamp_field, source.created_timestamp_field,
                        table=read_arrow(source, columns, start, end))
