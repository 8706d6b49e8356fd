"""Compile transform IR to DuckDB SQL (the local engine).

Compiling is pure: it returns SQL text and a parameter dict; executing needs a DuckDB connection,
``con.execute(sql, params)``. Identifiers are always double-quoted (embedded quotes doubled) and every
literal value is a named parameter (``$p0``, ``$p1``, ...), never spliced into the text. The only
numbers written into the SQL text are window lengths in microseconds, which come from validated
``timedelta`` objects, not from user strings.

- :func:`to_sql` — one expression.
- :func:`compile_view` — ``SELECT <passthrough>, <transforms> FROM (<scan>) WHERE <filter>``.
- :func:`aggregate_at_points_sql` — windowed aggregations evaluated at given points in time.

Pass ``schema`` (column name -> type of the source) whenever you have it: casts from floats to
integers (truncation toward zero) and from strings to numbers (strict decimal text, else null) need
the source type to get the documented, engine-independent result; without a schema a cast compiles to
DuckDB's own ``TRY_CAST``. Integer sums are returned as BIGINT only when ``schema`` tells the column
is an integer (DuckDB's own sum of integers is HUGEINT).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from featurestore import types as _t
from featurestore.errors import DefinitionError
from featurestore.types import DataType
from transforms import ir
from transforms.aggregation import Aggregation, value_aliases
from transforms.compiler import Compiler
from transforms.type_rules import output_name

INT_TEXT = r"[+-]?[0-9]+"
FLOAT_TEXT = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"

_SQL_TYPES = {
    "Int32": "INTEGER",
    "Int64": "BIGINT",
    "Float32": "FLOAT",
    "Float64": "DOUBLE",
    "String": "VARCHAR",
    "Bool": "BOOLEAN",
    "Bytes": "BLOB",
    "Timestamp": "TIMESTAMPTZ",
}

_CMP = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def quote_ident(name: str) -> str:
    """``amount`` -> ``"amount"``; ``a"b`` -> ``"a""b"``."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise DefinitionError(f"invalid identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def sql_type(t: DataType) -> str:
    if isinstance(t, _t.Array):
        return sql_type(t.element) + "[]"
    return _SQL_TYPES[t.name]


class DuckDBCompiler(Compiler):
    ENGINE = "local (DuckDB)"
    UNSUPPORTED: frozenset[str] = frozenset()

    def __init__(self, schema: Mapping[str, DataType] | None = None, params: dict | None = None):
        super().__init__(schema)
        self.params: dict = {} if params is None else params

    def param(self, value) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"${name}"

    # -- nodes -----------------------------------------------------------------------------------
    def visit_Column(self, n: ir.Column) -> str:
        return quote_ident(n.name)

    def visit_Literal(self, n: ir.Literal) -> str:
        if n.dtype is None:
            return "NULL"
        if n.value is None:
            return f"CAST(NULL AS {sql_type(n.dtype)})"
        return f"CAST({self.param(n.value)} AS {sql_type(n.dtype)})"

    def visit_Alias(self, n: ir.Alias) -> str:
        return self.visit(n.expr)

    def visit_Cast(self, n: ir.Cast) -> str:
        x = self.visit(n.expr)
        dst = n.to
        target = sql_type(dst)
        src = self.source_type(n.expr)
        if src is None:
            return f"TRY_CAST({x} AS {target})"
        if src == dst:
            return x
        sf, df = src.family, dst.family
        if df == "integer" and sf == "float":
            return f"TRY_CAST(trunc({x}) AS {target})"
        if df in ("integer", "float") and sf == "string":
            pattern = self.param(INT_TEXT if df == "integer" else FLOAT_TEXT)
            return (
                f"(CASE WHEN regexp_full_match(trim({x}), {pattern}) "
                f"THEN TRY_CAST(trim({x}) AS {target}) END)"
            )
        return f"TRY_CAST({x} AS {target})"

    def visit_BinaryOp(self, n: ir.BinaryOp) -> str:
        left, right = self.visit(n.left), self.visit(n.right)
        op = n.op
        if op == "/":
            return f"(CAST({left} AS DOUBLE) / NULLIF(CAST({right} AS DOUBLE), 0))"
        if op == "%":
            return f"({left} % NULLIF({right}, 0))"
        if op in ("+", "-", "*"):
            return f"({left} {op} {right})"
        if op in _CMP:
            return f"({left} {_CMP[op]} {right})"
        return f"({left} {'AND' if op == '&' else 'OR'} {right})"

    def visit_UnaryOp(self, n: ir.UnaryOp) -> str:
        x = self.visit(n.operand)
        return f"(NOT {x})" if n.op == "not" else f"(- {x})"

    def visit_Coalesce(self, n: ir.Coalesce) -> str:
        return f"COALESCE({', '.join(self.visit(a) for a in n.args)})"

    def visit_IsNull(self, n: ir.IsNull) -> str:
        return f"({self.visit(n.expr)} IS NULL)"

    def visit_IsNotNull(self, n: ir.IsNotNull) -> str:
        return f"({self.visit(n.expr)} IS NOT NULL)"

    def visit_IsIn(self, n: ir.IsIn) -> str:
        return f"({self.visit(n.expr)} IN ({', '.join(self.visit(v) for v in n.values)}))"

    def visit_Lower(self, n: ir.Lower) -> str:
        return f"lower({self.visit(n.expr)})"

    def visit_Upper(self, n: ir.Upper) -> str:
        return f"upper({self.visit(n.expr)})"

    def visit_Length(self, n: ir.Length) -> str:
        return f"CAST(length({self.visit(n.expr)}) AS BIGINT)"

    def visit_Trim(self, n: ir.Trim) -> str:
        return f"trim({self.visit(n.expr)})"

    def visit_Substring(self, n: ir.Substring) -> str:
        x = self.visit(n.expr)
        start = f"CAST({self.param(n.start)} AS BIGINT)"
        if n.length is None:
            return f"substring({x}, {start})"
        return f"substring({x}, {start}, CAST({self.param(n.length)} AS BIGINT))"

    def visit_Concat(self, n: ir.Concat) -> str:
        return "(" + " || ".join(self.visit(a) for a in n.args) + ")"

    def visit_Contains(self, n: ir.Contains) -> str:
        return f"contains({self.visit(n.expr)}, {self.visit(n.pattern)})"

    def visit_StartsWith(self, n: ir.StartsWith) -> str:
        return f"starts_with({self.visit(n.expr)}, {self.visit(n.prefix)})"

    def visit_EndsWith(self, n: ir.EndsWith) -> str:
        return f"ends_with({self.visit(n.expr)}, {self.visit(n.suffix)})"

    _PART_FN = {
        "year": "year",
        "month": "month",
        "day": "day",
        "hour": "hour",
        "minute": "minute",
        "day_of_week": "isodow",
    }

    def visit_DatePart(self, n: ir.DatePart) -> str:
        # make_timestamp(epoch_us(x)) is the UTC wall clock as a naive TIMESTAMP, so the part does not
        # depend on the session's TimeZone setting (epoch_us of a naive TIMESTAMP reads it as UTC).
        return f"CAST({self._PART_FN[n.part]}(make_timestamp(epoch_us({self.visit(n.expr)}))) AS BIGINT)"

    def visit_Case(self, n: ir.Case) -> str:
        parts = ["CASE"]
        for c, v in n.branches:
            parts.append(f"WHEN {self.visit(c)} THEN {self.visit(v)}")
        parts.append(f"ELSE {self.visit(n.otherwise)} END")
        return "(" + " ".join(parts) + ")"


UNSUPPORTED = DuckDBCompiler.UNSUPPORTED


def supports(node: ir.Expr | Aggregation | Sequence) -> bool:
    """True if the local engine can run every node of ``node`` (an expression, an aggregation or a
    list of them)."""
    return DuckDBCompiler.supports(node)


def to_sql(expr: ir.Expr, schema: Mapping[str, DataType] | None = None) -> tuple[str, dict]:
    """``(sql, params)`` for one expression; an Alias compiles to its inner expression.

    >>> from transforms import col
    >>> to_sql(col("status") == "settled")
    ('("status" = CAST($p0 AS VARCHAR))', {'p0': 'settled'})
    """
    c = DuckDBCompiler(schema)
    return c.visit(expr), c.params


def compile_view(
    scan_sql: str,
    transform: Sequence[ir.Expr],
    filter: ir.Expr | None,
    passthrough_columns: Sequence[str],
    schema: Mapping[str, DataType] | None = None,
) -> tuple[str, dict]:
    """``SELECT <passthrough>, <transforms> FROM (<scan_sql>) WHERE <filter>``.

    The filter is evaluated on the **source** columns, before the transforms (it cannot see a
    transform's output name unless that is also a source column); a row whose filter is null is
    dropped. Each transform must be named (``.alias()`` or a bare column); output column order is the
    passthrough columns, then the transforms. ``scan_sql`` is trusted SQL from the integrator.
    """
    c = DuckDBCompiler(schema)
    items = [quote_ident(p) for p in passthrough_columns]
    for e in transform:
        items.append(f"{c.visit(e)} AS {quote_ident(output_name(e))}")
    if not items:
        raise DefinitionError("a view selects no columns")
    sql = f"SELECT {', '.join(items)} FROM ({scan_sql}) AS __fs_src"
    if filter is not None:
        sql += f" WHERE {c.visit(filter)}"
    return sql, c.params


def aggregate_at_points_sql(
    events_sql: str,
    points_sql: str,
    keys: Sequence[str],
    ts_col: str,
    aggregations: Sequence[Aggregation],
    created_col: str | None = None,
    *,
    point_id: str = "__point_id",
    schema: Mapping[str, DataType] | None = None,
) -> str:
    """SQL giving, for every row of ``points_sql``, each aggregation over that key's events in
    ``(t - window, t]`` (lifetime: ``<= t``).

    ``events_sql`` yields ``keys``, ``ts_col``, the aggregated columns and ``created_col`` if given;
    ``points_sql`` yields ``keys``, ``ts_col`` and a unique ``point_id`` column (for example
    ``SELECT *, row_number() OVER () AS __point_id FROM entity_rows``). The result has one row per point:
    ``point_id`` then one column per aggregation, named ``aggregation.name``; join it back on
    ``point_id``. Row order is not defined. ``schema`` (types of the event columns) makes integer sums
    BIGINT instead of DuckDB's HUGEINT.

    Strategy: the events and the points are stacked (UNION ALL) and DuckDB window functions run once
    over each key ordered by event time in microseconds; a sliding window of length ``w`` is the
    RANGE frame ``w - 1 PRECEDING AND CURRENT ROW`` (which includes rows of equal time, so an event at
    exactly ``t`` counts and one at exactly ``t - w`` does not). Point rows carry nulls in the value
    columns, so they never change an aggregate. ``last`` uses one extra ordering (time, events before
    points, created time nulls first) with ``last_value(... IGNORE NULLS)`` over a struct of the value
    and its time, then keeps it only if its time is inside the window.
    """
    value_cols = value_aliases(aggregations, keys, "aggregate_at_points_sql")
    key_list = ", ".join(quote_ident(k) for k in keys)
    union = _events_and_points_sql(events_sql, points_sql, keys, ts_col, value_cols, created_col, point_id)
    windows, inner, outer = _window_columns(aggregations, value_cols, key_list, schema)
    window_clause = ",\n       ".join(f"{name} AS ({spec})" for name, spec in windows.items())
    return (
        f"SELECT __fs_pid AS {quote_ident(point_id)}, {', '.join(outer)}\n"
        f"FROM (\n  SELECT __fs_kind, __fs_pid, __fs_t, {', '.join(inner)}\n"
        f"  FROM ({union}) AS __fs_u\n  WINDOW {window_clause}\n) AS __fs_w\n"
        f"WHERE __fs_kind = 1"
    )


# Aggregation function -> DuckDB aggregate function computing it.
_AGGREGATE_SQL = {"sum": "sum", "count": "count", "mean": "avg", "min": "min", "max": "max",
                  "stddev": "stddev_samp"}


def _events_and_points_sql(events_sql: str, points_sql: str, keys: Sequence[str], ts_col: str,
                           value_cols: Mapping[str, str], created_col: str | None, point_id: str) -> str:
    """The events (``__fs_kind`` 0, rows with a null key or time left out) and the points (kind 1,
    nulls for the values) stacked into one relation with the same columns: the keys, ``__fs_t`` and
    ``__fs_c`` (event and created time in microseconds), ``__fs_kind``, ``__fs_pid`` and the values."""
    q = quote_ident
    key_list = ", ".join(q(k) for k in keys)
    created = f"epoch_us({q(created_col)})" if created_col else "CAST(NULL AS BIGINT)"
    ev_values = ", ".join(f"{q(c)} AS {alias}" for c, alias in value_cols.items())
    pt_values = ", ".join(f"NULL AS {alias}" for alias in value_cols.values())
    not_null = " AND ".join(f"{q(k)} IS NOT NULL" for k in [*keys, ts_col])
    return (
        f"SELECT {key_list}, epoch_us({q(ts_col)}) AS __fs_t, {created} AS __fs_c, 0 AS __fs_kind, "
        f"NULL AS __fs_pid, {ev_values} FROM ({events_sql}) AS __fs_e WHERE {not_null}\n"
        f"UNION ALL\n"
        f"SELECT {key_list}, epoch_us({q(ts_col)}), CAST(NULL AS BIGINT), 1, {q(point_id)}, {pt_values} "
        f"FROM ({points_sql}) AS __fs_p"
    )


def _window_columns(aggregations: Sequence[Aggregation], value_cols: Mapping[str, str], key_list: str,
                    schema: Mapping[str, DataType] | None) -> tuple[dict[str, str], list[str], list[str]]:
    """``(windows, inner, outer)``: the named windows (name -> spec), the window-function columns
    computed over the stacked rows, and the result columns that read them, one per aggregation."""
    windows: dict[str, str] = {}
    inner: list[str] = []
    outer: list[str] = []
    last_cols: dict[str, str] = {}  # value alias -> column of its latest (value, time) struct
    for i, a in enumerate(aggregations):
        v = value_cols[a.column]
        if a.function == "last":
            if v not in last_cols:
                last_cols[v] = f"__fs_l{len(last_cols)}"
                windows.setdefault("__fs_wl", _latest_event_window(key_list))
                inner.append(f"{_latest_event_sql(v)} AS {last_cols[v]}")
            outer.append(f"{_last_in_window_sql(last_cols[v], a.window_micros)} AS {quote_ident(a.name)}")
            continue
        wname, spec = _sliding_window(a.window_micros, key_list)
        windows.setdefault(wname, spec)
        inner.append(f"{_aggregate_sql(a, v, wname, schema)} AS __fs_a{i}")
        outer.append(f"__fs_a{i} AS {quote_ident(a.name)}")
    return windows, inner, outer


def _latest_event_window(key_list: str) -> str:
    """Every row up to the current one, ordered by time, then events before points, then created time
    (nulls first): the last event of that frame is the latest one at the current row's time."""
    return (f"PARTITION BY {key_list} ORDER BY __fs_t ASC NULLS FIRST, __fs_kind ASC, "
            "__fs_c ASC NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW")


def _latest_event_sql(v: str) -> str:
    """The ``{'v': value, 't': time}`` struct of the latest event (points carry no struct)."""
    return (f"last_value(CASE WHEN __fs_kind = 0 THEN {{'v': {v}, 't': __fs_t}} END IGNORE NULLS) "
            f"OVER __fs_wl")


def _last_in_window_sql(last_col: str, w_us: int | None) -> str:
    """The latest event's value when its time is inside the window ending at the row's time."""
    cond = "__fs_t IS NOT NULL" if w_us is None else f"{last_col}.t > __fs_t - {int(w_us)}"
    return f"CASE WHEN {cond} THEN {last_col}.v END"


def _sliding_window(w_us: int | None, key_list: str) -> tuple[str, str]:
    """The name and spec of the RANGE window of length ``w_us`` (None: lifetime) over each key."""
    if w_us is None:
        wname = "__fs_wlife"
        frame = "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    else:
        wname = f"__fs_w{int(w_us)}"
        frame = f"RANGE BETWEEN {int(w_us) - 1} PRECEDING AND CURRENT ROW"
    return wname, f"PARTITION BY {key_list} ORDER BY __fs_t ASC NULLS FIRST {frame}"


def _aggregate_sql(a: Aggregation, v: str, wname: str, schema: Mapping[str, DataType] | None) -> str:
    """``a`` over window ``wname``; integer sums (when ``schema`` says so) and counts as BIGINT."""
    expr = f"{_AGGREGATE_SQL[a.function]}({v}) OVER {wname}"
    if a.function == "sum" and schema is not None and a.column in schema:
        t = schema[a.column]
        if not isinstance(t, _t.Array) and t.family == "integer":
            expr = f"CAST({expr} AS BIGINT)"
    if a.function == "count":
        expr = f"CAST({expr} AS BIGINT)"
    return expr
