"""The embedded engine: DuckDB over Parquet/CSV files and Arrow tables, on one machine.

The point-in-time join is one DuckDB query: the entity frame is ``ASOF LEFT JOIN``-ed to each view on
the join keys and on ``(entity time, +inf) >= (event time, created time)``, which picks, per entity
row, the row with the largest event time not after the entity time and, among equal event times, the
largest created time. The TTL then nulls matches older than ``entity time - ttl`` (both bounds
inclusive). An ASOF join yields at most one match per left row, so every entity row comes back
exactly once; a row number carried through restores input order.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from featurestore.engines.base import CREATED_TS, EVENT_TS, Engine, ViewData, ViewJoin

if TYPE_CHECKING:
    import duckdb

_ROW = "__fs_row"


class LocalEngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["local"] = "local"
    threads: int | None = None          # DuckDB threads; default: all cores
    memory_limit: str | None = None     # e.g. "2GB"; default: DuckDB's (80% of RAM)


def quote(identifier: str) -> str:
    """A SQL identifier, double-quoted with embedded quotes doubled."""
    return '"' + identifier.replace('"', '""') + '"'


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
        return con

    # -- scans ---------------------------------------------------------------------------------
    def _scan(self, con: "duckdb.DuckDBPyConnection", data: ViewData, alias: str,
              params: dict[str, Any]) -> str:
        """A FROM-clause fragment reading ``data``; file lists travel as bound parameters."""
        if data.table is not None:
            con.register(alias + "_tbl", data.table)
            return quote(alias + "_tbl")
        params[alias + "_files"] = list(data.files)
        if data.file_format == "csv":
            return f"read_csv(${alias}_files, union_by_name = true)"
        return f"read_parquet(${alias}_files, union_by_name = true, hive_partitioning = false)"

    @staticmethod
    def _ts(column: str) -> str:
        return f"CAST({quote(column)} AS TIMESTAMPTZ)"

    @staticmethod
    def _cast(expr: str, t: pa.DataType) -> str:
        target = duck_type(t)
        return f"CAST({expr} AS {target})" if target else expr

    # -- point-in-time join --------------------------------------------------------------------
    def point_in_time_join(self, entity: pa.Table, timestamp_column: str,
                           joins: list[ViewJoin]) -> pa.Table:
        n = entity.num_rows
        con = self._connect()
        try:
            key_columns = sorted({k for j in joins for k, _, _ in j.keys})
            left = entity.select(key_columns + [timestamp_column]).append_column(
                _ROW, pa.array(np.arange(n, dtype=np.int64)))
            con.register("fs_entity", left)
            bounds = con.execute(
                f"SELECT min({self._ts(timestamp_column)}), max({self._ts(timestamp_column)}) FROM fs_entity"
            ).fetchall()[0]
            params: dict[str, Any] = {}
            ctes = []
            entity_cols = [f"{_ROW}", f"{self._ts(timestamp_column)} AS __fs_t"]
            for i, join in enumerate(joins):
                for j, (ecol, _, ktype) in enumerate(join.keys):
                    entity_cols.append(f"{self._cast(quote(ecol), ktype)} AS __e{i}_k{j}")
            ctes.append(f"fs_e AS (SELECT {', '.join(entity_cols)} FROM fs_entity)")
            select_cols = ["fs_e." + _ROW]
            from_clause = "fs_e"
            for i, join in enumerate(joins):
                data = join.data
                cols = [f"{self._cast(quote(dcol), ktype)} AS __k{j}"
                        for j, (_, dcol, ktype) in enumerate(join.keys)]
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
                ctes.append(f"fs_v{i} AS (SELECT {', '.join(cols)} FROM {scan}"
                            f"{' WHERE ' + ' AND '.join(where) if where else ''})")
                on = [f"fs_e.__e{i}_k{j} = fs_v{i}.__k{j}" for j in range(len(join.keys))]
                if data.created_column:
                    on.append(f"struct_pack(a := fs_e.__fs_t, b := 'infinity'::TIMESTAMPTZ) >= "
                              f"struct_pack(a := fs_v{i}.__ts, b := fs_v{i}.__cr)")
                else:
                    on.append(f"fs_e.__fs_t >= fs_v{i}.__ts")
                from_clause += f" ASOF LEFT JOIN fs_v{i} ON {' AND '.join(on)}"
                fresh = "TRUE"
                if join.ttl_seconds is not None:
                    fresh = (f"fs_v{i}.__ts >= fs_e.__fs_t - "
                             f"to_microseconds({int(join.ttl_seconds * 1_000_000)})")
                for j, (_, _, ftype) in enumerate(join.features):
                    select_cols.append(f"CASE WHEN {fresh} THEN {self._cast(f'fs_v{i}.__f{j}', ftype)} END"
                                       f" AS __o{i}_{j}")
            sql = (f"WITH {', '.join(ctes)} SELECT {', '.join(select_cols)} FROM {from_clause} "
                   f"ORDER BY fs_e.{_ROW}")
            result = fetch_arrow(con, sql, params)
        finally:
            con.close()
        arrays, names = [], []
        for i, join in enumerate(joins):
            for j, (_, out, ftype) in enumerate(join.features):
                col = result.column(f"__o{i}_{j}")
                if col.type != ftype:
                    col = col.cast(ftype, safe=False)
                arrays.append(col)
                names.append(out)
        return pa.Table.from_arrays(arrays, names=names)

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

    def time_bounds(self, data: ViewData, start: datetime | None, end: datetime | None
                    ) -> tuple[datetime | None, datetime | None]:
        con = self._connect()
        try:
            params: dict[str, Any] = {}
            scan = self._scan(con, data, "fs_src", params)
            ts = self._ts(data.timestamp_column)
            where = self._time_filter(ts, start, end, params)
            lo, hi = con.execute(f"SELECT min({ts}), max({ts}) FROM {scan}{where}", params).fetchall()[0]
        finally:
            con.close()
        return lo, hi

    def read_rows(self, data: ViewData, keys: list[tuple[str, pa.DataType]],
                  features: list[tuple[str, str, pa.DataType]], start: datetime | None,
                  end: datetime | None) -> pa.Table:
        con = self._connect()
        try:
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
        finally:
            con.close()
        return _normalise(table, keys, features)


def _normalise(table: pa.Table, keys: list[tuple[str, pa.DataType]],
               features: list[tuple[str, str, pa.DataType]]) -> pa.Table:
    """Cast columns to the view's declared Arrow types (DuckDB returns its own spellings)."""
    targets = {k: t for k, t in keys} | {out: t for _, out, t in features}
    targets[EVENT_TS] = pa.timestamp("us", tz="UTC")
    targets[CREATED_TS] = pa.timestamp("us", tz="UTC")
    arrays = []
    for name in table.column_names:
        col = table.column(name)
        want = targets.get(name)
        if want is not None and col.type != want:
            col = col.cast(want, safe=False)
        arrays.append(col)
    return pa.Table.from_arrays(arrays, names=table.column_names)
