"""Compile transform IR to PySpark Columns (the Spark engine).

Every expression becomes a ``pyspark.sql.Column`` built with ``pyspark.sql.functions``; user values
travel as ``F.lit`` literals and column names as backquoted identifiers, never inside SQL text.
Results equal the local (DuckDB) engine's: see ``tests/conformance``. Nothing here collects data to the
driver. pyspark is imported lazily.

- :func:`to_column` — one expression.
- :func:`apply_view` — filter (on the source columns), then select passthrough columns and transforms.
- :func:`aggregate_at_points` — windowed aggregations evaluated at given points in time.

Works with ANSI mode on (the Spark 4 default) or off: division and remainder by zero are turned into
null explicitly and casts use ``try_cast``. Date parts are computed from epoch microseconds, so they
are UTC whatever ``spark.sql.session.timeZone`` says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from featurestore import types as _t
from featurestore.errors import DefinitionError
from featurestore.types import DataType
from transforms import ir
from transforms.aggregation import Aggregation, value_aliases
from transforms.compile_duckdb import FLOAT_TEXT, INT_TEXT
from transforms.compiler import Compiler
from transforms.type_rules import output_name

_SPARK_TYPES = {
    "Int32": "int",
    "Int64": "bigint",
    "Float32": "float",
    "Float64": "double",
    "String": "string",
    "Bool": "boolean",
    "Bytes": "binary",
    "Timestamp": "timestamp",
}
_US_PER_DAY = 86_400_000_000
_US_PER_HOUR = 3_600_000_000
_US_PER_MINUTE = 60_000_000


def spark_type(t: DataType) -> str:
    if isinstance(t, _t.Array):
        return f"array<{spark_type(t.element)}>"
    return _SPARK_TYPES[t.name]


def quote_ident(name: str) -> str:
    """A Spark column reference for any name (dots, spaces, backquotes): ``a.b`` -> ```a.b```."""
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"invalid identifier {name!r}")
    return "`" + name.replace("`", "``") + "`"


def schema_of(df: Any) -> dict[str, DataType]:
    """Product types of a Spark DataFrame's columns (those it can name; others are left out)."""
    from pyspark.sql import types as T

    def conv(dt: Any) -> DataType | None:
        simple = {
            T.ByteType: _t.Int32,
            T.ShortType: _t.Int32,
            T.IntegerType: _t.Int32,
            T.LongType: _t.Int64,
            T.FloatType: _t.Float32,
            T.DoubleType: _t.Float64,
            T.DecimalType: _t.Float64,
            T.StringType: _t.String,
            T.BooleanType: _t.Bool,
            T.BinaryType: _t.Bytes,
            T.TimestampType: _t.Timestamp,
            T.TimestampNTZType: _t.Timestamp,
            T.DateType: _t.Timestamp,
        }
        for cls, t in simple.items():
            if isinstance(dt, cls):
                return t
        if isinstance(dt, T.ArrayType):
            inner = conv(dt.elementType)
            if inner is not None and not isinstance(inner, _t.Array):
                return _t.Array(inner)
        return None

    out: dict[str, DataType] = {}
    for f in df.schema.fields:
        t = conv(f.dataType)
        if t is not None:
            out[f.name] = t
    return out


class SparkCompiler(Compiler):
    ENGINE = "spark"
    UNSUPPORTED: frozenset[str] = frozenset()

    def __init__(self, schema: Mapping[str, DataType] | None = None):
        super().__init__(schema)
        from pyspark.sql import functions as F

        self.F = F

    def visit_Column(self, n: ir.Column):
        return self.F.col(quote_ident(n.name))

    def visit_Literal(self, n: ir.Literal):
        F = self.F
        if n.dtype is None:
            return F.lit(None)
        value = n.value
        if value is not None and n.dtype == _t.Bytes:
            value = bytearray(value)
        return F.lit(value).cast(spark_type(n.dtype))

    def visit_Alias(self, n: ir.Alias):
        return self.visit(n.expr)

    def visit_Cast(self, n: ir.Cast):
        F = self.F
        x = self.visit(n.expr)
        dst = n.to
        target = spark_type(dst)
        src = self.source_type(n.expr)
        if src is None:
            return x.try_cast(target)
        if src == dst:
            return x
        if dst.family in ("integer", "float") and src.family == "string":
            pattern = "^(?:" + (INT_TEXT if dst.family == "integer" else FLOAT_TEXT) + ")$"
            trimmed = F.trim(x)
            return F.when(trimmed.rlike(pattern), trimmed.try_cast(target))
        return x.try_cast(target)

    def visit_BinaryOp(self, n: ir.BinaryOp):
        F = self.F
        left, right = self.visit(n.left), self.visit(n.right)
        op = n.op
        if op == "/":
            return left.cast("double") / F.nullif(right.cast("double"), F.lit(0.0))
        if op == "%":
            return left % F.nullif(right, F.lit(0))
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        if op == "==":
            return left == right
        if op == "!=":
            return left != right
        if op == "<":
            return left < right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        if op == ">=":
            return left >= right
        if op == "&":
            return left & right
        return left | right

    def visit_UnaryOp(self, n: ir.UnaryOp):
        x = self.visit(n.operand)
        return ~x if n.op == "not" else -x

    def visit_Coalesce(self, n: ir.Coalesce):
        return self.F.coalesce(*[self.visit(a) for a in n.args])

    def visit_IsNull(self, n: ir.IsNull):
        return self.visit(n.expr).isNull()

    def visit_IsNotNull(self, n: ir.IsNotNull):
        return self.visit(n.expr).isNotNull()

    def visit_IsIn(self, n: ir.IsIn):
        return self.visit(n.expr).isin(*[self.visit(v) for v in n.values])

    def visit_Lower(self, n: ir.Lower):
        return self.F.lower(self.visit(n.expr))

    def visit_Upper(self, n: ir.Upper):
        return self.F.upper(self.visit(n.expr))

    def visit_Length(self, n: ir.Length):
        return self.F.length(self.visit(n.expr)).cast("bigint")

    def visit_Trim(self, n: ir.Trim):
        return self.F.trim(self.visit(n.expr))

    def visit_Substring(self, n: ir.Substring):
        length = 2**31 - 1 if n.length is None else n.length
        return self.F.substring(self.visit(n.expr), n.start, length)

    def visit_Concat(self, n: ir.Concat):
        return self.F.concat(*[self.visit(a) for a in n.args])

    def visit_Contains(self, n: ir.Contains):
        return self.visit(n.expr).contains(self.visit(n.pattern))

    def visit_StartsWith(self, n: ir.StartsWith):
        return self.visit(n.expr).startswith(self.visit(n.prefix))

    def visit_EndsWith(self, n: ir.EndsWith):
        return self.visit(n.expr).endswith(self.visit(n.suffix))

    def visit_DatePart(self, n: ir.DatePart):
        F = self.F
        micros = F.unix_micros(self.visit(n.expr))

        def floor_div(x, d: int):
            # exact floor division of a long by a constant: subtract the (non-negative) remainder first
            return ((x - F.pmod(x, F.lit(d))) / F.lit(d)).cast("bigint")

        days = floor_div(micros, _US_PER_DAY)
        if n.part == "hour":
            return floor_div(F.pmod(micros, F.lit(_US_PER_DAY)), _US_PER_HOUR)
        if n.part == "minute":
            return floor_div(F.pmod(micros, F.lit(_US_PER_HOUR)), _US_PER_MINUTE)
        if n.part == "day_of_week":
            # 1970-01-01 was a Thursday (ISO 4)
            return (F.pmod(days + F.lit(3), F.lit(7)) + F.lit(1)).cast("bigint")
        date = F.date_from_unix_date(days.cast("int"))
        fn = {"year": F.year, "month": F.month, "day": F.dayofmonth}[n.part]
        return fn(date).cast("bigint")

    def visit_Case(self, n: ir.Case):
        F = self.F
        out = None
        for c, v in n.branches:
            out = F.when(self.visit(c), self.visit(v)) if out is None else out.when(self.visit(c), self.visit(v))
        return out.otherwise(self.visit(n.otherwise))


UNSUPPORTED = SparkCompiler.UNSUPPORTED


def supports(node: ir.Expr | Aggregation | Sequence) -> bool:
    """True if the Spark engine can run every node of ``node`` (an expression, an aggregation or a
    list of them). Does not import pyspark."""
    return SparkCompiler.supports(node)


def to_column(expr: ir.Expr, schema: Mapping[str, DataType] | None = None):
    """A ``pyspark.sql.Column`` for ``expr`` (an Alias gives its inner expression, unnamed).
    ``schema`` (source column types) is needed for exact cast semantics; see the module docs."""
    return SparkCompiler(schema).visit(expr)


def apply_view(df, transform: Sequence[ir.Expr], filter: ir.Expr | None, passthrough: Sequence[str]):
    """``df`` filtered by ``filter`` (evaluated on the source columns, before the transforms; a null
    filter drops the row), then the ``passthrough`` columns followed by the named ``transform``
    outputs. The schema for casts is read from ``df``."""
    from pyspark.sql import functions as F

    c = SparkCompiler(schema_of(df))
    if filter is not None:
        df = df.filter(c.visit(filter))
    cols = [F.col(quote_ident(p)) for p in passthrough]
    cols += [c.visit(e).alias(output_name(e)) for e in transform]
    if not cols:
        raise DefinitionError("a view selects no columns")
    return df.select(*cols)


def aggregate_at_points(
    events_df,
    points_df,
    keys: Sequence[str],
    ts_col: str,
    aggregations: Sequence[Aggregation],
    created_col: str | None = None,
    *,
    point_id: str = "__point_id",
):
    """For every row of ``points_df`` (``keys``, ``ts_col``, a unique ``point_id``), each aggregation
    over that key's events in ``(t - window, t]``; same contract and semantics as
    :func:`transforms.compile_duckdb.aggregate_at_points_sql`. Returns a DataFrame with ``point_id``
    then one column per aggregation (``aggregation.name``).

    Strategy: union of events and points, window functions partitioned by the keys and ordered by
    event time in microseconds; a window ``w`` is ``rangeBetween(-(w - 1), 0)`` (rows of equal time
    are peers of the current row, so an event at ``t`` counts and one at ``t - w`` does not); ``last``
    is ``last(struct(value, time), ignorenulls)`` over rows ordered by (time, events before points,
    created nulls first). Runs entirely on the executors.
    """
    from pyspark.sql import functions as F

    value_cols = value_aliases(aggregations, keys, "aggregate_at_points")
    stacked = _events_and_points(events_df, points_df, keys, ts_col, value_cols, created_col, point_id)
    inner, outer = _window_columns(aggregations, value_cols, [F.col(quote_ident(k)) for k in keys])
    windowed = stacked.select(F.col("__fs_kind"), F.col("__fs_pid"), F.col("__fs_t"), *inner)
    return windowed.filter(F.col("__fs_kind") == 1).select(F.col("__fs_pid").alias(point_id), *outer)


# Aggregation function -> name of the pyspark.sql.functions function computing it.
_AGGREGATE_FN = {"sum": "sum", "count": "count", "mean": "avg", "min": "min", "max": "max",
                 "stddev": "stddev_samp"}


def _events_and_points(events_df, points_df, keys: Sequence[str], ts_col: str, value_cols: Mapping[str, str],
                       created_col: str | None, point_id: str):
    """The events (``__fs_kind`` 0, rows with a null key or time left out) and the points (kind 1,
    nulls for the values) stacked into one DataFrame with the same columns: the keys, ``__fs_t`` and
    ``__fs_c`` (event and created time in microseconds), ``__fs_kind``, ``__fs_pid`` and the values."""
    from pyspark.sql import functions as F

    q = quote_ident
    ev_types = dict(events_df.dtypes)
    pid_type = dict(points_df.dtypes)[point_id]
    not_null = None
    for k in [*keys, ts_col]:
        cond = F.col(q(k)).isNotNull()
        not_null = cond if not_null is None else not_null & cond
    events = events_df.filter(not_null).select(
        *[F.col(q(k)).alias(k) for k in keys],
        F.unix_micros(F.col(q(ts_col))).alias("__fs_t"),
        (F.unix_micros(F.col(q(created_col))) if created_col else F.lit(None).cast("bigint")).alias("__fs_c"),
        F.lit(0).alias("__fs_kind"),
        F.lit(None).cast(pid_type).alias("__fs_pid"),
        *[F.col(q(c)).alias(alias) for c, alias in value_cols.items()],
    )
    points = points_df.select(
        *[F.col(q(k)).alias(k) for k in keys],
        F.unix_micros(F.col(q(ts_col))).alias("__fs_t"),
        F.lit(None).cast("bigint").alias("__fs_c"),
        F.lit(1).alias("__fs_kind"),
        F.col(q(point_id)).alias("__fs_pid"),
        *[F.lit(None).cast(ev_types[c]).alias(alias) for c, alias in value_cols.items()],
    )
    return events.unionByName(points)


def _window_columns(aggregations: Sequence[Aggregation], value_cols: Mapping[str, str],
                    part: list) -> tuple[list, list]:
    """``(inner, outer)``: the window-function columns computed over the stacked rows (partitioned by
    ``part``), and the result columns that read them, one per aggregation."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    t = F.col("__fs_t")
    inner = []
    outer = []
    last_cols: dict[str, str] = {}  # value alias -> column of its latest (value, time) struct
    w_last = (
        Window.partitionBy(*part)
        .orderBy(t.asc_nulls_first(), F.col("__fs_kind").asc(), F.col("__fs_c").asc_nulls_first())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    for i, a in enumerate(aggregations):
        v = value_cols[a.column]
        if a.function == "last":
            if v not in last_cols:
                last_cols[v] = f"__fs_l{len(last_cols)}"
                struct = F.when(F.col("__fs_kind") == 0, F.struct(F.col(v).alias("v"), t.alias("t")))
                inner.append(F.last(struct, ignorenulls=True).over(w_last).alias(last_cols[v]))
            outer.append(_last_in_window(F.col(last_cols[v]), a.window_micros).alias(a.name))
            continue
        inner.append(_sliding_aggregate(a, v, part).alias(f"__fs_a{i}"))
        outer.append(F.col(f"__fs_a{i}").alias(a.name))
    return inner, outer


def _last_in_window(latest, w_us: int | None):
    """The value of the ``latest`` (value, time) struct when its time is inside the window ending at
    the row's time."""
    from pyspark.sql import functions as F

    t = F.col("__fs_t")
    cond = t.isNotNull() if w_us is None else latest["t"] > t - F.lit(int(w_us))
    return F.when(cond, latest["v"])


def _sliding_aggregate(a: Aggregation, v: str, part: list):
    """``a`` of value column ``v`` over a RANGE window of its length (or lifetime) ending at each row;
    counts as bigint."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w_us = a.window_micros
    ordered = Window.partitionBy(*part).orderBy(F.col("__fs_t").asc_nulls_first())
    if w_us is None:
        w = ordered.rangeBetween(Window.unboundedPreceding, Window.currentRow)
    else:
        w = ordered.rangeBetween(-(int(w_us) - 1), Window.currentRow)
    expr = getattr(F, _AGGREGATE_FN[a.function])(F.col(v)).over(w)
    if a.function == "count":
        expr = expr.cast("bigint")
    return expr
