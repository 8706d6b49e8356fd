"""The embedded engine: DuckDB over Parquet/CSV files and Arrow tables or datasets, on one machine.

Files on object storage arrive as pyarrow datasets (DuckDB's httpfs extension is not assumed): DuckDB
scans a registered dataset lazily, pushing projections and filters down into pyarrow.

The point-in-time join is one DuckDB query: each view's rows are cut to the latest created per keys
and event time, then the entity frame is ``ASOF LEFT JOIN``-ed to them on the join keys and on
``entity time >= event time``, which picks, per entity row, the row with the largest event time not
after the entity time and, among equal event times, the largest created time. The TTL then nulls
matches older than ``entity time - ttl`` (both bounds inclusive). An ASOF join yields at most one
match per left row, so every entity row comes back exactly once; a row number carried through
restores input order.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.object_store import expand, filesystem, is_remote
from featurestore import timestamps
from featurestore import types as fstypes
from featurestore.checks import CheckCounts
from featurestore.errors import ConfigError, DamagedStateError, InvalidInputError
from featurestore.online_aggregate import EV_CR, EV_TS, ev_column, state_types
from featurestore.parquet_files import parquet_files
from featurestore.ports.engine import (
    CAP_EXPORT_PARQUET,
    CHECK_COLUMN,
    CREATED_TS,
    EVENT_TS,
    Engine,
    ViewData,
    ViewJoin,
    conform_rows,
    row_schema,
)
from transforms import output_name
from transforms.aggregation import Aggregation
from transforms.checks import failed, first_failed
from transforms.compile_duckdb import DuckDBCompiler, aggregate_at_points_sql

if TYPE_CHECKING:
    import duckdb
    import pyarrow.dataset as pds

_ROW = "__fs_row"


def _carried(column: str) -> str:
    """The name an entity column travels under through the join (clear of the join's own names)."""
    return "__c_" + column


def _time_input_errors(method: Callable) -> Callable:
    """``method`` raising ``InvalidInputError`` for a time outside the accepted range (the error the
    query raises in ``LocalEngine._epoch_ms_times``), not DuckDB's exception."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        import duckdb

        try:
            return method(*args, **kwargs)
        except duckdb.InvalidInputException as exc:
            text = str(exc)
            if timestamps.INPUT_RANGE not in text:
                raise
            raise InvalidInputError(text.removeprefix("Invalid Input Error: ")) from None

    return wrapper


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _remote_dataset(uris: tuple[str, ...], options: tuple[tuple[str, str], ...], file_format: str = "parquet"
                    ) -> "pds.Dataset":
    """Files on object storage as a pyarrow dataset (DuckDB's httpfs extension is not assumed)."""
    import pyarrow.dataset as pds

    fs, _ = filesystem(uris[0], expand(dict(options), "object storage settings"))
    return pds.dataset([u.partition("://")[2] for u in uris], format=file_format, filesystem=fs)


def _damaged_file(exc: Exception, files: Iterable[str]) -> DamagedStateError | None:
    """DuckDB's error about one of ``files`` (truncated, not Parquet, missing) as a DamagedStateError
    naming it; None when the error is about none of them."""
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    for path in files:
        if f"'{path}'" in text or f'"{path}"' in text:
            return DamagedStateError(f"the file {path} cannot be read: {reason}", path=path)
    return None


class LocalEngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["local"] = "local"
    threads: int | None = None          # DuckDB threads; default: all cores
    memory_limit: str | None = None     # e.g. "2GB"; default: DuckDB's (80% of RAM)
    # An export straight to a file joins the entity rows this many at a time (memory follows the
    # chunk, not the export); DuckDB's memory limit for it (default: ``memory_limit``).
    export_chunk_rows: int = Field(default=2_000_000, ge=1)
    export_memory_limit: str | None = None

    @field_validator("memory_limit")
    @classmethod
    def _a_size(cls, value: str | None) -> str | None:
        if value is not None and not _SIZE.fullmatch(value.strip()):
            raise ValueError(f"{value!r} is not a size such as \"512MB\" or \"2GB\"")
        return value

    @field_validator("export_memory_limit")
    @classmethod
    def _a_size_or_none(cls, value: str | None) -> str | None:
        return value if value is not None and value.strip().lower() == "none" else cls._a_size(value)


_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)", re.IGNORECASE)


EXPORT_BATCH_ROWS = 1 << 17  # rows per batch (and Parquet row group) of a streamed export's output


def _utc_zoned(schema: pa.Schema) -> pa.Schema:
    """``schema`` with each zoned time in zone ``UTC`` (DuckDB hands them out as ``Etc/UTC``), as a
    Parquet file's UTC-adjusted times read back."""
    def utc(t: pa.DataType) -> pa.DataType:
        if pa.types.is_timestamp(t) and t.tz is not None:
            return pa.timestamp(t.unit, "UTC")
        if pa.types.is_list(t):
            return pa.list_(t.value_field.with_type(utc(t.value_type)))
        if pa.types.is_large_list(t):
            return pa.large_list(t.value_field.with_type(utc(t.value_type)))
        return t

    return pa.schema([f.with_type(utc(f.type)) for f in schema], metadata=schema.metadata)


class _ParquetAppender:
    """Tables appended to one Parquet file by a thread of its own, so encoding a chunk overlaps the
    engine's work on the next one (both release the GIL); at most one table waits to be written.
    Each batch of a table is a row group, so equal tables give equal bytes."""

    def __init__(self, path: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._path, self._writer, self._rows = path, None, 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-writer")
        self._pending = None

    def append(self, table: pa.Table) -> None:
        self._wait()
        self._pending = self._pool.submit(self._write, table)

    def _write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            schema = _utc_zoned(table.schema)
            # Floating-point columns rarely repeat: trying a dictionary for them costs the most time.
            dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
            self._writer = pq.ParquetWriter(self._path, schema, compression="snappy", use_dictionary=dictionary)
        if table.schema != self._writer.schema:
            table = table.cast(self._writer.schema)
        for batch in table.to_batches():
            self._writer.write_batch(batch)
        self._rows += table.num_rows

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> int:
        """Waits for the last table, closes the file (again: a no-op) and gives the rows written."""
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
            if self._writer is not None:
                self._writer.close()
        return self._rows


def _entity_chunks(files: list[str], chunk_rows: int) -> list[list[tuple[int, str, int | None, int | None]]]:
    """The entity files cut into chunks of about ``chunk_rows`` rows, in order: each chunk lists
    (file index, file, first row, end row), the rows ``None`` for a whole file. Row counts come from
    the footers."""
    import pyarrow.parquet as pq

    chunks: list[list] = [[]]
    filled = 0
    for index, name in enumerate(files):
        total = pq.ParquetFile(name).metadata.num_rows
        start = 0
        while start < total or (total == 0 and start == 0):
            if filled >= chunk_rows:
                chunks.append([])
                filled = 0
            take = min(total - start, chunk_rows - filled)
            whole = start == 0 and take == total
            chunks[-1].append((index, name, None if whole else start, None if whole else start + take))
            filled += take
            start += take
            if total == 0:
                break
    return chunks


def quote(identifier: str) -> str:
    """A SQL identifier, double-quoted with embedded quotes doubled."""
    return '"' + identifier.replace('"', '""') + '"'


_DUCK_TYPE_NAMES = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}
_DUCK_INTEGERS = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                            "UINTEGER", "UBIGINT", "UHUGEINT"})  # how DuckDB spells a type it reports
_DUCK_TYPES = {
    "int32": "INTEGER", "int64": "BIGINT", "float": "FLOAT", "double": "DOUBLE", "string": "VARCHAR",
    "large_string": "VARCHAR", "bool": "BOOLEAN", "binary": "BLOB", "large_binary": "BLOB",
}


def fetch_arrow(con: "duckdb.DuckDBPyConnection", sql: str, params: dict[str, Any]) -> pa.Table:
    """A query's result as one Arrow table, without the extra copy a DB-API cursor makes
    (``to_arrow_table`` in DuckDB 2, ``arrow`` before)."""
    relation = con.sql(sql, params=params)
    method = getattr(relation, "to_arrow_table", None) or relation.arrow
    return method()


def duck_type(t: pa.DataType) -> str | None:
    """The DuckDB type for an Arrow type, or None to leave the column uncast."""
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"
    return _DUCK_TYPES.get(str(t))


class LocalEngine(Engine):
    name = "local"
    capabilities = frozenset({CAP_EXPORT_PARQUET})

    def __init__(self, config: LocalEngineConfig | None = None, repo_path: Any = None):
        self.config = config or LocalEngineConfig()

    def _connect(self) -> "duckdb.DuckDBPyConnection":
        import duckdb

        # No extension downloads: the machine may be offline. Without the ICU extension DuckDB's
        # TIMESTAMPTZ is plain UTC, which is exactly the semantics wanted here.
        con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False})
        threads = self.config.threads or os.cpu_count() or 1
        con.execute(f"SET threads = {int(threads)}")
        if self.config.memory_limit:
            con.execute("SET memory_limit = $limit", {"limit": self.config.memory_limit})
        con.execute("SET preserve_insertion_order = false")
        # Spilled data goes to the system's temporary folder, not to a ``.tmp`` in the working directory.
        con.execute("SET temp_directory = $dir", {"dir": os.path.join(tempfile.gettempdir(), "featurestore-duckdb")})
        return con

    @contextmanager
    def _session(self, data: Iterable[ViewData], files: Iterable[str] = ()) -> Iterator["duckdb.DuckDBPyConnection"]:
        """A connection, closed afterwards. DuckDB's error about a file of ``data`` or ``files`` that
        cannot be read becomes a DamagedStateError naming the file (the caller knows whose it is)."""
        import duckdb

        con = self._connect()
        try:
            yield con
        except (duckdb.IOException, duckdb.InvalidInputException) as exc:
            named = [*files, *(f for d in data for f in (*d.files, *d.appended))]
            damaged = _damaged_file(exc, named)
            if damaged is None:
                raise
            raise damaged from None
        finally:
            con.close()

    # -- scans ---------------------------------------------------------------------------------
    def _scan(self, con: "duckdb.DuckDBPyConnection", data: ViewData, alias: str,
              params: dict[str, Any]) -> str:
        """A FROM-clause fragment reading ``data`` through its pipeline; file lists and literals travel
        as bound parameters."""
        if data.table is not None or data.dataset is not None:
            con.register(alias + "_tbl", data.table if data.table is not None else data.dataset)
            base = quote(alias + "_tbl")
        elif is_remote(data.files[0]):
            con.register(alias + "_tbl", _remote_dataset(data.files, data.storage_options, data.file_format))
            base = quote(alias + "_tbl")
        else:
            params[alias + "_files"] = list(data.files)
            if data.file_format == "csv":
                base = f"read_csv(${alias}_files, union_by_name = true)"
            else:
                base = f"read_parquet(${alias}_files, union_by_name = true, hive_partitioning = false)"
        if not data.has_pipeline:
            return self._with_appended(con, data, self._epoch_ms_times(con, data, base, params), alias, params)
        sql = f"SELECT * FROM {base}"
        if data.rename:
            renames = ", ".join(f"{quote(a)} AS {quote(b)}" for a, b in data.rename)
            sql = f"SELECT * RENAME ({renames}) FROM {base}"
        compiler = DuckDBCompiler(dict(data.schema) or None, params)  # shared params: unique names
        if data.filter is not None or data.transform:
            outputs = [(output_name(e), compiler.visit(e)) for e in data.transform]
            replaced = [name for name, _ in outputs if name in dict(data.schema)]
            star = f"* EXCLUDE ({', '.join(quote(n) for n in replaced)})" if replaced else "*"
            items = [star] + [f"{expr} AS {quote(name)}" for name, expr in outputs]
            where = f" WHERE {compiler.visit(data.filter)}" if data.filter is not None else ""
            sql = f"SELECT {', '.join(items)} FROM ({sql}) AS {alias}_src{where}"
        if data.checks:
            sql = self._checked(data, sql, alias, params)
        scan = self._epoch_ms_times(con, data, f"({sql})", params)
        return scan if data.quarantined else self._with_appended(con, data, scan, alias, params)

    @staticmethod
    def _checked(data: ViewData, sql: str, alias: str, params: dict[str, Any]) -> str:
        """``sql``'s rows that pass the drop checks, or with ``quarantined`` the others, with the first
        failed check's name (``ViewData.checks``)."""
        checker = DuckDBCompiler(row_schema(data) or None, params)
        first = checker.visit(first_failed(data.checks))
        if data.quarantined:
            return (f"SELECT * FROM (SELECT *, {first} AS {quote(CHECK_COLUMN)} FROM ({sql}) AS {alias}_rows) "
                    f"AS {alias}_checked WHERE {quote(CHECK_COLUMN)} IS NOT NULL")
        return f"SELECT * FROM ({sql}) AS {alias}_rows WHERE {first} IS NULL"

    @staticmethod
    def _epoch_ms_times(con, data: ViewData, scan: str, params: dict[str, Any]) -> str:
        """``scan`` with its integer time columns read as epoch milliseconds in the accepted range
        (``featurestore.timestamps``); a value outside it stops the query with an error naming the
        column (``time_input_errors``)."""
        times = [c for c in (data.timestamp_column, data.created_column) if c]
        sql = f"SELECT {', '.join(quote(c) for c in times)} FROM {scan} LIMIT 0"
        used = set(re.findall(r"\$(\w+)", sql))  # the shared params hold the rest of the query's too
        described = con.sql(sql, params={k: v for k, v in params.items() if k in used})
        integers = [c for c, t in zip(times, described.types) if str(t) in _DUCK_INTEGERS]
        if not integers:
            return scan
        lo, end = timestamps.INPUT_MIN_US // 1000, timestamps.INPUT_END_US // 1000
        replaced = []
        for c in integers:
            q = quote(c)
            message = _literal(f"column {c!r} has ") + f" || CAST({q} AS VARCHAR) || " + _literal(
                f" (epoch milliseconds), outside the accepted time range {timestamps.INPUT_RANGE}")
            replaced.append(f"CASE WHEN {q} IS NULL THEN NULL::TIMESTAMPTZ WHEN {q} >= {lo} AND {q} < {end} "
                            f"THEN CAST(epoch_ms(CAST({q} AS BIGINT)) AS TIMESTAMPTZ) "
                            f"ELSE CAST(error({message}) AS TIMESTAMPTZ) END AS {q}")
        return f"(SELECT * REPLACE ({', '.join(replaced)}) FROM {scan})"

    def _with_appended(self, con, data: ViewData, scan: str, alias: str, params: dict[str, Any]) -> str:
        """``scan`` plus the view's appended rows that are not already among its rows (see ViewData)."""
        if not data.appended:
            return scan
        times = [(data.timestamp_column, EVENT_TS)]
        if data.created_column:
            times.append((data.created_column, CREATED_TS))
        cols = ", ".join(quote(c) for c in data.columns)
        ours = ", ".join(f"{self._ts(c)} AS {quote(c)}" for c, _ in times)
        theirs = ", ".join(f"{self._ts(a)} AS {quote(c)}" for c, a in times)
        if is_remote(data.appended[0]):
            con.register(alias + "_appended_tbl", _remote_dataset(data.appended, data.appended_storage_options))
            appended = quote(alias + "_appended_tbl")
        else:
            params[alias + "_appended"] = list(data.appended)
            appended = f"read_parquet(${alias}_appended, union_by_name = true, hive_partitioning = false)"
        return (f"(WITH {alias}_rows AS (SELECT {cols}, {ours} FROM {scan} AS {alias}_scan) "
                f"SELECT * FROM {alias}_rows UNION ALL (SELECT {cols}, {theirs} FROM {appended} "
                f"EXCEPT ALL SELECT * FROM {alias}_rows))")

    @staticmethod
    def _ts(column: str) -> str:
        return f"CAST({quote(column)} AS TIMESTAMPTZ)"

    @staticmethod
    def _cast(expr: str, t: pa.DataType) -> str:
        target = duck_type(t)
        return f"CAST({expr} AS {target})" if target else expr

    # -- point-in-time join --------------------------------------------------------------------
    @_time_input_errors
    def point_in_time_join(self, entity: pa.Table, timestamp_column: str,
                           joins: list[ViewJoin]) -> pa.Table:
        n = entity.num_rows
        with self._session([j.data for j in joins]) as con:
            key_columns = sorted({k for j in joins for k, _, _ in j.keys})
            left = entity.select(key_columns + [timestamp_column]).append_column(
                _ROW, pa.array(np.arange(n, dtype=np.int64)))
            con.register("fs_entity", left)
            sql, params = self._join_sql(con, timestamp_column, joins)
            result = fetch_arrow(con, f"{sql} ORDER BY fs_e.{_ROW}", params)
        arrays, names = [], []
        for i, join in enumerate(joins):
            for j, (_, out, ftype) in enumerate(join.features):
                col = result.column(f"__o{i}_{j}")
                if col.type != ftype:
                    col = col.cast(ftype, safe=False)
                arrays.append(col)
                names.append(out)
        return pa.Table.from_arrays(arrays, names=names)

    @_time_input_errors
    def export_parquet(self, entity_path: str, timestamp_column: str, joins: list[ViewJoin],
                       output: str) -> int:
        """A whole export streamed: the entity rows read from Parquet (a file or a folder of files, in
        name order) a chunk of about ``export_chunk_rows`` at a time, each chunk joined by DuckDB and
        appended to the Parquet file ``output`` in input order with the entity's own columns first.
        Memory is then the chunk's, whatever the export's size; each chunk cuts the views to its own
        time range, so the work grows with the rows."""
        import duckdb

        files = parquet_files(entity_path)
        with self._session([j.data for j in joins], files) as con:
            budget = self.config.export_memory_limit
            if budget and budget.lower() != "none":
                con.execute("SET memory_limit = $limit", {"limit": budget})
            con.execute("SET preserve_insertion_order = true")
            chunks = _entity_chunks(files, self.config.export_chunk_rows)
            tmp = f"{output}.{os.getpid()}.tmp"
            appender = _ParquetAppender(tmp)
            try:
                for chunk in chunks:
                    relation = self._export_chunk(con, chunk, timestamp_column, joins)
                    try:
                        appender.append(relation.fetch_record_batch(EXPORT_BATCH_ROWS).read_all())
                    except duckdb.OutOfMemoryException as exc:
                        raise ConfigError(f"the export to {output} needs more memory than the engine allows "
                                          f"even with spilling to disk (memory_limit / export_memory_limit "
                                          f"{budget or 'default'}): lower engine.export_chunk_rows "
                                          f"({self.config.export_chunk_rows}) or raise the limit in "
                                          f"featurestore.yaml ({str(exc).splitlines()[0]})") from None
                rows = appender.close()
                os.replace(tmp, output)
            finally:
                appender.close()
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return rows

    def _export_chunk(self, con, chunk: list[tuple[int, str, int | None, int | None]], timestamp_column: str,
                      joins: list[ViewJoin]) -> "duckdb.DuckDBPyRelation":
        """One chunk's rows of the export (``_entity_chunks``): the entity's columns, then the features,
        in input order."""
        con.execute("CREATE OR REPLACE TEMPORARY VIEW fs_entity AS " + " UNION ALL ".join(
            f"SELECT * EXCLUDE (file_row_number), {index << 40} + file_row_number AS {_ROW} "
            f"FROM read_parquet({_literal(name)}, file_row_number = true, hive_partitioning = false)"
            + ("" if lo is None else f" WHERE file_row_number >= {lo} AND file_row_number < {hi}")
            for index, name, lo, hi in chunk))
        described = con.sql("SELECT * FROM fs_entity LIMIT 0")
        columns = {c: str(t) for c, t in zip(described.columns, described.types) if c != _ROW}
        carried = [f"fs_e.{quote(_carried(c))} AS {quote(c)}" for c in columns]
        outs = [f"__o{i}_{j} AS {quote(out)}"  # already cast to the feature types by the join
                for i, join in enumerate(joins) for j, (_, out, _) in enumerate(join.features)]
        sql, params = self._join_sql(con, timestamp_column, joins, carry=columns)
        return con.sql(f"SELECT {', '.join(carried + outs)} FROM ({sql}) AS fs_e ORDER BY fs_e.{_ROW}",
                       params=params)

    def _join_sql(self, con, timestamp_column: str, joins: list[ViewJoin], carry: dict[str, str] | None = None
                  ) -> tuple[str, dict[str, Any]]:
        """The join over the relation ``fs_entity`` (keys, time, ``__fs_row`` and the ``carry``
        columns, by name with their DuckDB types) as one query without ORDER BY: a row per entity row
        with ``__fs_row``, the carried columns (renamed ``_carried``) and feature columns
        ``__o{view}_{feature}``."""
        carry = carry or {}
        bounds = con.execute(
            f"SELECT min({self._ts(timestamp_column)}), max({self._ts(timestamp_column)}) FROM fs_entity"
        ).fetchall()[0]
        params: dict[str, Any] = {}
        entity_cols, refs = self._entity_columns(timestamp_column, joins, carry)
        ctes = [f"fs_e AS (SELECT {', '.join(entity_cols)} FROM fs_entity)"]
        select_cols = ["fs_e." + _ROW] + [f"fs_e.{quote(_carried(c))}" for c in carry]
        from_clause = "fs_e"
        for i, join in enumerate(joins):
            view_join = self._aggregation_join if join.aggregations else self._asof_join
            cte, clause, outs = view_join(con, i, join, bounds, params, refs)
            ctes += cte
            from_clause += clause
            select_cols += outs
        return f"WITH {', '.join(ctes)} SELECT {', '.join(select_cols)} FROM {from_clause}", params

    def _entity_columns(self, timestamp_column: str, joins: list[ViewJoin], carry: dict[str, str]
                        ) -> tuple[list[str], dict[str, str]]:
        """The entity side's columns, and the column holding each value the joins read: the entity
        time ``__fs_t`` and the keys ``__e{view}_k{key}`` cast to the views' types. A value equal to
        another (a key several views share, a carried column already of the right type) is one
        column: the joins sort and partition every entity column, so each costs memory."""
        columns = [_ROW] + [f"{quote(c)} AS {quote(_carried(c))}" for c in carry]
        holder = {quote(c): quote(_carried(c)) for c in carry}  # expression -> column
        refs: dict[str, str] = {}

        def add(name: str, column: str, target: pa.DataType) -> None:
            wanted = duck_type(target)
            same = wanted is None or _DUCK_TYPE_NAMES.get(wanted, wanted) == carry.get(column)
            expr = quote(column) if same else f"CAST({quote(column)} AS {wanted})"
            if expr not in holder:
                holder[expr] = name
                columns.append(f"{expr} AS {name}")
            refs[name] = holder[expr]

        add("__fs_t", timestamp_column, pa.timestamp("us", tz="UTC"))
        for i, join in enumerate(joins):
            for j, (ecol, _, ktype) in enumerate(join.keys):
                add(f"__e{i}_k{j}", ecol, ktype)
        return columns, refs

    def _asof_join(self, con, i: int, join: ViewJoin, bounds, params: dict[str, Any], refs: dict[str, str]
                   ) -> tuple[list[str], str, list[str]]:
        """A CTE, a join clause and output columns joining a plain view's latest row at or before each
        entity time (ties broken by the created time); a row older than the TTL gives nulls."""
        data = join.data
        cols = [f"{self._cast(quote(dcol), ktype)} AS __k{j}" for j, (_, dcol, ktype) in enumerate(join.keys)]
        cols.append(f"{self._ts(data.timestamp_column)} AS __ts")
        if data.created_column:
            cols.append(f"coalesce({self._ts(data.created_column)}, '-infinity'::TIMESTAMPTZ) AS __cr")
        cols += [f"{quote(dcol)} AS __f{j}" for j, (dcol, _, _) in enumerate(join.features)]
        where = []
        if bounds[1] is not None:
            params[f"v{i}_hi"] = bounds[1]
            where.append(f"{self._ts(data.timestamp_column)} <= $v{i}_hi")
            if join.ttl_seconds is not None:
                params[f"v{i}_lo"] = bounds[0]
                where.append(f"{self._ts(data.timestamp_column)} >= $v{i}_lo - "
                             f"to_microseconds({int(join.ttl_seconds * 1_000_000)})")
        scan = self._scan(con, data, f"fs_v{i}", params)
        rows = f"SELECT {', '.join(cols)} FROM {scan}{' WHERE ' + ' AND '.join(where) if where else ''}"
        if data.created_column:
            # Of rows with equal keys and event time only the latest created can be picked: keep it
            # alone, so the join compares event times only (a narrower sort than on (time, created)).
            keys = ", ".join(f"__k{j}" for j in range(len(join.keys)))
            rows = (f"SELECT * EXCLUDE (__cr) FROM ({rows}) QUALIFY row_number() OVER "
                    f"(PARTITION BY {keys}, __ts ORDER BY __cr DESC) = 1")
        cte = f"fs_v{i} AS ({rows})"
        on = [f"fs_e.{refs[f'__e{i}_k{j}']} = fs_v{i}.__k{j}" for j in range(len(join.keys))]
        t = f"fs_e.{refs['__fs_t']}"
        on.append(f"{t} >= fs_v{i}.__ts")
        fresh = "TRUE"
        if join.ttl_seconds is not None:
            fresh = f"fs_v{i}.__ts >= {t} - to_microseconds({int(join.ttl_seconds * 1_000_000)})"
        outs = [f"CASE WHEN {fresh} THEN {self._cast(f'fs_v{i}.__f{j}', ftype)} END AS __o{i}_{j}"
                for j, (_, _, ftype) in enumerate(join.features)]
        return [cte], f" ASOF LEFT JOIN fs_v{i} ON {' AND '.join(on)}", outs

    def _aggregation_join(self, con, i: int, join: ViewJoin, bounds, params: dict[str, Any], refs: dict[str, str]
                          ) -> tuple[list[str], str, list[str]]:
        """CTEs, a join clause and output columns computing a view's windowed aggregations at every
        entity row: each value covers events in (t - window, t]. A row with no event at or before t
        (or, with a TTL, whose latest event is older than t - ttl) gets nulls, like a missed join."""
        data = join.data
        keys = [f"__k{j}" for j in range(len(join.keys))]
        cols = [f"{self._cast(quote(dcol), ktype)} AS __k{j}" for j, (_, dcol, ktype) in enumerate(join.keys)]
        cols.append(f"{self._ts(data.timestamp_column)} AS __ts")
        if data.created_column:
            cols.append(f"{self._ts(data.created_column)} AS __cr")
        event_names = [name for name, _ in join.event_columns]
        cols += [quote(name) for name in event_names]
        where = ""
        if bounds[1] is not None:
            params[f"v{i}_hi"] = bounds[1]
            where = f" WHERE {self._ts(data.timestamp_column)} <= $v{i}_hi"
        scan = self._scan(con, data, f"fs_v{i}", params)
        latest = Aggregation(column="__ts", function="max", window=None, name="__fs_latest")
        schema = dict(join.event_columns) | {"__ts": fstypes.Timestamp}
        if self._few_points_per_key(con, join):
            agg_sql = _grouped_aggregates_sql(i, keys, join.aggregations, bool(data.created_column))
        else:
            agg_sql = aggregate_at_points_sql(
                f"SELECT * FROM fs_v{i}", f"SELECT * FROM fs_p{i}", keys, "__ts",
                list(join.aggregations) + [latest], "__cr" if data.created_column else None,
                point_id="__point_id", schema=schema)
        ctes = [f"fs_v{i} AS (SELECT {', '.join(cols)} FROM {scan}{where})",
                f"fs_p{i} AS (SELECT {_ROW} AS __point_id, "
                + ", ".join(f"{refs[f'__e{i}_k{j}']} AS __k{j}" for j in range(len(keys)))
                + f", {refs['__fs_t']} AS __ts FROM fs_e)",
                f"fs_a{i} AS ({agg_sql})"]
        fresh = f"fs_a{i}.__fs_latest IS NOT NULL"
        if join.ttl_seconds is not None:
            fresh += (f" AND fs_a{i}.__fs_latest >= fs_e.{refs['__fs_t']} - "
                      f"to_microseconds({int(join.ttl_seconds * 1_000_000)})")
        outs = [f"CASE WHEN {fresh} THEN {self._cast(f'fs_a{i}.{quote(name)}', ftype)} END AS __o{i}_{j}"
                for j, (name, _, ftype) in enumerate(join.features)]
        return ctes, f" LEFT JOIN fs_a{i} ON fs_a{i}.__point_id = fs_e.{_ROW}", outs

    @staticmethod
    def _few_points_per_key(con, join: ViewJoin, limit: float = 4.0) -> bool:
        """Whether entity rows repeat a key at most ``limit`` times on average: then joining each row
        to its key's events and grouping is cheaper than a window over events and rows together."""
        keys = ", ".join(quote(ecol) for ecol, _, _ in join.keys)
        rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT ({keys})) FROM fs_entity").fetchall()[0]
        return bool(distinct) and rows <= limit * distinct

    # -- online state of aggregation views ----------------------------------------------------
    @_time_input_errors
    def aggregation_state(self, join: ViewJoin, start: datetime, end: datetime) -> pa.Table:
        """The online state rows of an aggregation view as of ``end`` (see featurestore.online_aggregate)
        for every entity with an event in [start, end): its events in the longest window, its
        lifetime aggregates, the latest event time as ``event_timestamp`` and ``end`` as created."""
        aggs, data = join.aggregations, join.data
        keys = [k for _, k, _ in join.keys]
        key_types = {k: t for _, k, t in join.keys}
        events = dict(join.event_columns)
        windowed = [a for a in aggs if a.window is not None]
        lifetime = [a for a in aggs if a.window is None]
        k = ", ".join(quote(c) for c in keys)
        with self._session([data]) as con:
            params: dict = {"end": end, "start": start}
            scan = self._scan(con, data, "fs_src", params)
            ts = self._ts(data.timestamp_column)
            cr = self._ts(data.created_column) if data.created_column else "NULL::TIMESTAMPTZ"
            cols = [f"{self._cast(quote(c), key_types[c])} AS {quote(c)}" for c in keys]
            cols += [f"{ts} AS __ts", f"{cr} AS __cr"] + [quote(c) for c in events]
            ctes = [f"ev AS (SELECT {', '.join(cols)} FROM {scan} WHERE {ts} < $end)",
                    f"touched AS (SELECT DISTINCT {k} FROM ev WHERE __ts >= $start)"]
            select = [f"touched.{quote(c)}" for c in keys]
            joins = ""
            if windowed:
                params["since"] = end - timedelta(microseconds=max(a.window_micros for a in windowed))
                order = "ORDER BY __ts, __cr NULLS FIRST"
                columns = list(dict.fromkeys(a.column for a in windowed))
                lists = [f"list(__ts {order}) AS {EV_TS}", f"list(__cr {order}) AS {EV_CR}"]
                lists += [f"list({quote(c)} {order}) AS {quote(ev_column(c))}" for c in columns]
                ctes.append(f"recent AS (SELECT {k}, {', '.join(lists)} FROM ev SEMI JOIN touched USING ({k}) "
                            f"WHERE __ts > $since GROUP BY {k})")
                joins += f" LEFT JOIN recent USING ({k})"
                select += [EV_TS, EV_CR] + [quote(ev_column(c)) for c in columns]
            latest = Aggregation(column="__ts", function="max", window=None, name="__fs_latest")
            ctes.append(f"points AS (SELECT {k}, $end - INTERVAL 1 MICROSECOND AS __ts, "
                        f"row_number() OVER () AS __point_id FROM touched)")
            agg_sql = aggregate_at_points_sql("SELECT * FROM ev", "SELECT * FROM points", keys, "__ts",
                                              lifetime + [latest], "__cr", point_id="__point_id",
                                              schema=events | {"__ts": fstypes.Timestamp})
            ctes.append(f"life AS (SELECT points.*, a.* EXCLUDE (__point_id) FROM points "
                        f"JOIN ({agg_sql}) AS a USING (__point_id))")
            joins += f" JOIN life USING ({k})"
            select += [quote(a.name) for a in lifetime]
            select += [f"life.__fs_latest AS {EVENT_TS}", f"$end::TIMESTAMPTZ AS {CREATED_TS}"]
            table = fetch_arrow(con, f"WITH {', '.join(ctes)} SELECT {', '.join(select)} FROM touched{joins}",
                                params)
        states = state_types(aggs, {c: t.to_arrow() for c, t in events.items()},
                             {name: t for name, _, t in join.features})
        types = states | key_types | {EVENT_TS: pa.timestamp("us", tz="UTC"),
                                                 CREATED_TS: pa.timestamp("us", tz="UTC")}
        return pa.Table.from_arrays([table.column(n).cast(types[n]) for n in table.column_names],
                                    names=table.column_names)

    # -- bounded reads (materialization) -------------------------------------------------------
    @staticmethod
    def _time_filter(ts: str, start: datetime | None, end: datetime | None, params: dict[str, Any]) -> str:
        where = []
        if start is not None:
            params["start"] = start
            where.append(f"{ts} >= $start")
        if end is not None:
            params["end"] = end
            where.append(f"{ts} < $end")
        return f" WHERE {' AND '.join(where)}" if where else ""

    @_time_input_errors
    def time_bounds(self, data: ViewData, start: datetime | None, end: datetime | None
                    ) -> tuple[datetime | None, datetime | None]:
        with self._session([data]) as con:
            params: dict[str, Any] = {}
            scan = self._scan(con, data, "fs_src", params)
            ts = self._ts(data.timestamp_column)
            where = self._time_filter(ts, start, end, params)
            lo, hi = con.execute(f"SELECT min({ts}), max({ts}) FROM {scan}{where}", params).fetchall()[0]
        return lo, hi

    @_time_input_errors
    def check_counts(self, data: ViewData, checks: list[tuple[str, Any]], start: datetime | None,
                     end: datetime | None) -> CheckCounts:
        with self._session([data]) as con:
            params: dict[str, Any] = {}
            scan = self._scan(con, data, "fs_src", params)
            ts = self._ts(data.timestamp_column)
            checker = DuckDBCompiler(row_schema(data) or None, params)
            counts = [f"count(*) FILTER (WHERE {checker.visit(failed(expr))})" for _, expr in checks]
            sql = f"SELECT count(*), max({ts}){''.join(', ' + c for c in counts)} FROM {scan}"
            row = con.execute(sql + self._time_filter(ts, start, end, params), params).fetchall()[0]
        return CheckCounts(rows=row[0], latest=row[1], failed={name: n for (name, _), n in zip(checks, row[2:])})

    @_time_input_errors
    def read_rows(self, data: ViewData, keys: list[tuple[str, pa.DataType]],
                  features: list[tuple[str, str, pa.DataType]], start: datetime | None,
                  end: datetime | None) -> pa.Table:
        with self._session([data]) as con:
            params: dict[str, Any] = {}
            scan = self._scan(con, data, "fs_src", params)
            ts = self._ts(data.timestamp_column)
            cols = [f"{self._cast(quote(k), t)} AS {quote(k)}" for k, t in keys]
            cols += [f"{self._cast(quote(src), t)} AS {quote(out)}" for src, out, t in features]
            cols.append(f"{ts} AS {EVENT_TS}")
            created = self._ts(data.created_column) if data.created_column else "NULL::TIMESTAMPTZ"
            cols.append(f"{created} AS {CREATED_TS}")
            sql = f"SELECT {', '.join(cols)} FROM {scan}{self._time_filter(ts, start, end, params)}"
            table = fetch_arrow(con, sql, params)
        return conform_rows(table, keys, features)


_GROUPED = {"sum": "sum", "count": "count", "mean": "avg", "min": "min", "max": "max", "stddev": "stddev_samp"}


def _grouped_aggregates_sql(i: int, keys: list[str], aggregations, has_created: bool) -> str:
    """Aggregations at each point by joining the point to its key's events up to its time and
    grouping: the same (t - window, t] definition as the window plan, for few points per key."""
    items = ["p.__point_id"]
    for agg in aggregations:
        column = f"v.{quote(agg.column)}"
        window = "v.__ts IS NOT NULL"
        if agg.window is not None:
            window += f" AND v.__ts > p.__ts - to_microseconds({agg.window_micros})"
        if agg.function == "last":
            created = "coalesce(v.__cr, '-infinity'::TIMESTAMPTZ)" if has_created else "'-infinity'::TIMESTAMPTZ"
            expr = f"arg_max_null({column}, struct_pack(t := v.__ts, c := {created}))"
        else:
            expr = f"{_GROUPED[agg.function]}({column})"
        items.append(f"{expr} FILTER (WHERE {window}) AS {quote(agg.name)}")
    items.append("max(v.__ts) AS __fs_latest")
    on = " AND ".join([f"v.{k} = p.{k}" for k in keys] + ["v.__ts <= p.__ts"])
    return (f"SELECT {', '.join(items)} FROM fs_p{i} AS p LEFT JOIN fs_v{i} AS v ON {on} "
            f"GROUP BY p.__point_id")
