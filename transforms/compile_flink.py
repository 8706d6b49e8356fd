"""Compile transform IR to Flink SQL text (the stream engine): row expressions and filters.

Windowed aggregations are not compiled here (every ``agg:`` function is in :data:`UNSUPPORTED`).
Compiling is pure: :func:`to_sql` returns SQL text for one expression and :func:`compile_view` a whole
``SELECT``; running them needs a PyFlink ``TableEnvironment`` (in ``.venv-flink``, see
``featurestore.streaming.env``). This module imports only the standard library and the project's own
modules, never pyflink.

Literals are written into the text (``TableEnvironment.execute_sql`` has no bound parameters), so they
are rendered from validated Python values only, never from raw user text:

- integers: ``repr`` of a Python ``int`` (bools excluded), inside ``CAST(... AS BIGINT|INT)``;
- floats: ``repr`` of a Python ``float`` with an ``E`` exponent (an approximate DOUBLE literal);
  NaN and infinities as ``CAST('NaN' AS DOUBLE)``, ``CAST('Infinity' AS DOUBLE)``, ``CAST('-Infinity'
  AS DOUBLE)``;
- strings: a SQL string literal with every single quote doubled (``it's`` -> ``'it''s'``), cast to
  ``STRING`` (Flink types a bare literal as a padded CHAR); NUL characters are refused;
- bytes: a hexadecimal ``X'..'`` literal; booleans ``TRUE``/``FALSE``; timestamps ``TIMESTAMP
  'YYYY-MM-DD HH:MM:SS.ffffff'`` from a ``datetime`` converted to UTC;
- identifiers: backquoted with embedded backquotes doubled (```a``b```).

Timestamps: a ``Timestamp`` column must reach Flink as ``TIMESTAMP(6)`` holding the UTC wall clock
(not ``TIMESTAMP_LTZ``), so nothing depends on ``table.local-time-zone``. Date parts are computed
from whole days and minutes since the epoch (``TIMESTAMPDIFF`` with a floor correction), because
Flink's own ``EXTRACT``/``CAST AS DATE`` are wrong for instants before 1970 with a fractional second.

Where Flink's own semantics differ from the documented ones (``transforms/__init__.py``), the compiler
emulates them: ``/`` and ``%`` by zero give null through ``CASE``; ``CAST`` of a double to an integer
is guarded by a range check (Flink saturates and maps NaN to 0); narrowing BIGINT -> INT is range
checked (Flink wraps); string -> number accepts only trimmed decimal text (a regex, then
``TRY_CAST``); Bool -> String gives ``true``/``false`` (Flink writes ``TRUE``); ``trim`` removes
spaces only. ``%`` on floating-point numbers has no exact Flink equivalent (``MOD`` takes exact
numerics only), so it is refused (``"BinaryOp:%float"`` in :data:`UNSUPPORTED`).

Integer overflow: Flink's ``+ - *`` and negation wrap around silently. When the operand types are
known (pass ``schema``), integer arithmetic is checked: the exact result is computed as
``DECIMAL(19, 0)``/``DECIMAL(38, 0)`` and, outside the result type's range, the row fails the job
with ``NumberFormatException: ... 'integer overflow in +: <left operand>'`` (a non-TRY cast of a text
that is not a number), like the other engines, which raise. Operands are repeated in the checked form,
so the SQL text grows with the nesting depth of integer arithmetic. Without a schema the plain
(wrapping) operators are emitted.

Errors as values (the stream job): a failing row must not fail a job that never ends, so
``compile_view(..., error_column=...)`` (and :func:`to_sql_with_error`) compile the same checks without
the throwing cast: an overflowing operation gives null, and the view gets one more column, the first
failure's message (``integer overflow in +: <left operand>``) or null. A failure counts only where the
reference semantics evaluate the failing operation: a ``when`` branch when its condition holds (and
the earlier ones do not), a ``coalesce`` argument when the arguments before it are null; both sides of
``&``/``|`` and every operand elsewhere are always evaluated. A row whose filter fails is kept (with
its error) instead of being dropped, so the job can report it; a row the filter drops reports nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from featurestore import types as _t
from featurestore.errors import DefinitionError
from featurestore.types import DataType
from transforms import ir
from transforms.aggregation import Aggregation
from transforms.compile_duckdb import FLOAT_TEXT, INT_TEXT
from transforms.compiler import Compiler
from transforms.type_rules import _Checker, output_name, promote

_FLINK_TYPES = {
    "Int32": "INT",
    "Int64": "BIGINT",
    "Float32": "FLOAT",
    "Float64": "DOUBLE",
    "String": "STRING",
    "Bool": "BOOLEAN",
    "Bytes": "BYTES",
    "Timestamp": "TIMESTAMP(6)",
}
_CMP = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_INT_RANGE = {"Int64": (-(2**63), 2**63 - 1), "Int32": (-(2**31), 2**31 - 1)}
# float -> integer: trunc(x) is in range  <=>  lo - 1 < x < hi + 1 (as doubles: lo <= x for Int64)
_FLOAT_TO_INT_GUARD = {
    "Int64": "{x} >= -9.223372036854775808E18 AND {x} < 9.223372036854775808E18",
    "Int32": "{x} > -2.147483649E9 AND {x} < 2.147483648E9",
}
_EPOCH = "TIMESTAMP '1970-01-01 00:00:00'"
FLOAT_MOD = "BinaryOp:%float"


def quote_ident(name: str) -> str:
    """``amount`` -> ```amount```; ``a`b`` -> ```a``b```."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise DefinitionError(f"invalid identifier {name!r}")
    return "`" + name.replace("`", "``") + "`"


def quote_string(value: str) -> str:
    """A Flink SQL string literal: ``it's`` -> ``'it''s'`` (no other escapes exist in Flink SQL)."""
    if not isinstance(value, str) or "\x00" in value:
        raise DefinitionError(f"invalid string literal {value!r}")
    return "'" + value.replace("'", "''") + "'"


def flink_type(t: DataType) -> str:
    if isinstance(t, _t.Array):
        return f"ARRAY<{flink_type(t.element)}>"
    return _FLINK_TYPES[t.name]


def render_literal(value, dtype: DataType | None) -> str:
    """SQL text for a validated Python value of type ``dtype`` (see the module docs)."""
    if dtype is None:
        if value is not None:
            raise DefinitionError(f"untyped literal {value!r}")
        return "NULL"
    target = flink_type(dtype)
    if value is None:
        return f"CAST(NULL AS {target})"
    if isinstance(dtype, _t.Array):
        raise DefinitionError("array literals are not supported by the flink engine")
    fam = dtype.family
    if dtype == _t.Bool:
        if not isinstance(value, bool):
            raise DefinitionError(f"not a bool: {value!r}")
        return "TRUE" if value else "FALSE"
    if fam == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise DefinitionError(f"not an int: {value!r}")
        lo, hi = _INT_RANGE[dtype.name]
        if not lo <= value <= hi:
            raise DefinitionError(f"{value!r} is out of range for {dtype!r}")
        return f"CAST({int(value)!r} AS {target})"
    if fam == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DefinitionError(f"not a float: {value!r}")
        v = float(value)
        if math.isnan(v):
            return f"CAST('NaN' AS {target})"
        if math.isinf(v):
            return f"CAST('{'' if v > 0 else '-'}Infinity' AS {target})"
        text = repr(v)
        if "e" not in text:
            text += "E0"
        return f"CAST({text.upper()} AS {target})"
    if dtype == _t.String:
        return f"CAST({quote_string(value)} AS STRING)"
    if dtype == _t.Bytes:
        if not isinstance(value, (bytes, bytearray)):
            raise DefinitionError(f"not bytes: {value!r}")
        return f"CAST(X'{bytes(value).hex()}' AS BYTES)"
    if dtype == _t.Timestamp:
        if not isinstance(value, datetime):
            raise DefinitionError(f"not a datetime: {value!r}")
        u = value if value.tzinfo is None else value.astimezone(timezone.utc)
        return (f"TIMESTAMP '{u.year:04d}-{u.month:02d}-{u.day:02d} {u.hour:02d}:{u.minute:02d}:"
                f"{u.second:02d}.{u.microsecond:06d}'")
    raise DefinitionError(f"no Flink literal for {dtype!r}")  # pragma: no cover


class _LenientChecker(_Checker):
    """Types with unknown columns typed None (for ``supports`` without a schema)."""

    def t_Column(self, n: ir.Column):
        return self.schema.get(n.name)


def _is_float(t: DataType | None) -> bool:
    return t is not None and not isinstance(t, _t.Array) and t.family == "float"


class FlinkCompiler(Compiler):
    ENGINE = "flink"
    # Node kinds (and pseudo-kinds) whose exact semantics Flink SQL cannot give:
    # - "BinaryOp:%float": remainder of floating-point numbers (Flink's MOD takes exact numerics only,
    #   and a - b * trunc(a / b) is not exact).
    UNSUPPORTED: frozenset[str] = frozenset({FLOAT_MOD, "agg:sum", "agg:count", "agg:mean", "agg:min",
                                             "agg:max", "agg:stddev", "agg:last"})

    @classmethod
    def unsupported_in(cls, obj, schema: Mapping[str, DataType] | None = None) -> list[str]:
        found = dict.fromkeys(super().unsupported_in(obj))
        items = [obj] if isinstance(obj, (ir.Expr, Aggregation)) else list(obj)
        checker = _LenientChecker(dict(schema or {}), None)
        for item in items:
            if not isinstance(item, ir.Expr):
                continue
            for node in item.walk():
                if isinstance(node, ir.BinaryOp) and node.op == "%":
                    try:
                        floaty = _is_float(checker.t(node))
                    except DefinitionError:
                        floaty = False
                    if floaty:
                        found.setdefault(FLOAT_MOD, None)
        return list(found)

    @classmethod
    def supports(cls, obj, schema: Mapping[str, DataType] | None = None) -> bool:
        return not cls.unsupported_in(obj, schema)

    def __init__(self, schema: Mapping[str, DataType] | None = None, *, errors_as_values: bool = False):
        super().__init__(schema)
        self.errors_as_values = errors_as_values
        # Error messages (SQL, null when the row does not fail) of the part being compiled.
        self._errors: list[str] = []

    def visit_with_error(self, node: ir.Expr) -> tuple[str, str | None]:
        """``(value sql, error sql or None)`` for ``node``: the error is the first failure's message, null
        when the row does not fail (always None unless ``errors_as_values``)."""
        outer, self._errors = self._errors, []
        try:
            return self.visit(node), _first_error(self._errors)
        finally:
            self._errors = outer

    def _type(self, node: ir.Expr) -> DataType | None:
        try:
            return _LenientChecker(dict(self.schema or {}), None).t(node)
        except DefinitionError:
            return None

    def _as_double(self, node: ir.Expr) -> str:
        x = self.visit(node)
        return x if self._type(node) == _t.Float64 else f"CAST({x} AS DOUBLE)"

    # -- nodes -----------------------------------------------------------------------------------
    def visit_Column(self, n: ir.Column) -> str:
        return quote_ident(n.name)

    def visit_Literal(self, n: ir.Literal) -> str:
        return render_literal(n.value, n.dtype)

    def visit_Alias(self, n: ir.Alias) -> str:
        return self.visit(n.expr)

    def visit_Cast(self, n: ir.Cast) -> str:
        x = self.visit(n.expr)
        dst = n.to
        target = flink_type(dst)
        src = self.source_type(n.expr)
        if src is None:
            return f"TRY_CAST({x} AS {target})"
        if src == dst:
            return x
        sf, df = src.family, dst.family
        if df == "integer" and sf == "float":
            guard = _FLOAT_TO_INT_GUARD[dst.name].format(x=x)
            return f"(CASE WHEN {guard} THEN CAST({x} AS {target}) END)"
        if df == "integer" and sf == "integer":
            lo, hi = _INT_RANGE[dst.name]
            return f"(CASE WHEN {x} BETWEEN {lo} AND {hi} THEN CAST({x} AS {target}) END)"
        if df in ("integer", "float") and sf == "string":
            body = INT_TEXT if df == "integer" else FLOAT_TEXT
            pattern = quote_string("^(?:" + body + ")\\z")
            trimmed = f"TRIM(BOTH ' ' FROM {x})"
            return f"(CASE WHEN REGEXP({trimmed}, {pattern}) THEN TRY_CAST({trimmed} AS {target}) END)"
        if df in ("integer", "float") and sf == "bool":
            return f"CAST((CASE WHEN {x} THEN 1 WHEN NOT {x} THEN 0 END) AS {target})"
        if df == "string" and sf == "bool":
            return f"(CASE WHEN {x} THEN 'true' WHEN NOT {x} THEN 'false' END)"
        if df == "bool" and sf == "integer":
            return f"({x} <> 0)"
        if df == "float" and sf == "float" and dst == _t.Float32:
            return (f"(CASE WHEN {x} BETWEEN -3.4028234663852886E38 AND 3.4028234663852886E38 "
                    f"THEN CAST({x} AS FLOAT) END)")
        return f"TRY_CAST({x} AS {target})"

    def visit_BinaryOp(self, n: ir.BinaryOp) -> str:
        op = n.op
        if op == "/":
            left, right = self._as_double(n.left), self._as_double(n.right)
            return f"(CASE WHEN {right} = 0 THEN CAST(NULL AS DOUBLE) ELSE {left} / {right} END)"
        if op == "%":
            if _is_float(self._type(n)):
                raise DefinitionError(f"the flink engine does not support % on floating-point numbers "
                                      f"(in {n!r})")
            left, right = self.visit(n.left), self.visit(n.right)
            return f"(CASE WHEN {right} = 0 THEN NULL ELSE MOD({left}, {right}) END)"
        left, right = self.visit(n.left), self.visit(n.right)
        if op in ("+", "-", "*"):
            return self._checked(n, (n.left, n.right), f"({left} {op} {right})", op,
                                 f"(CAST({left} AS DECIMAL(19, 0)) {op} CAST({right} AS DECIMAL(19, 0)))", left)
        if op in _CMP:
            return f"({left} {_CMP[op]} {right})"
        return f"({left} {'AND' if op == '&' else 'OR'} {right})"

    def visit_UnaryOp(self, n: ir.UnaryOp) -> str:
        x = self.visit(n.operand)
        if n.op == "not":
            return f"(NOT {x})"
        return self._checked(n, (n.operand,), f"(- {x})", "negation", f"(- CAST({x} AS DECIMAL(19, 0)))", x)

    def _checked(self, n: ir.Expr, operands: Sequence[ir.Expr], plain: str, what: str, exact: str,
                 shown: str) -> str:
        """``plain`` (an integer operation) guarded against overflow: ``exact`` is the same operation
        in DECIMAL; out of range, a failing cast raises an error naming the operation. Only when the
        result and every operand are known to be integers."""
        for node in (n, *operands):
            t = self._type(node)
            if t is None or isinstance(t, _t.Array) or t.family != "integer":
                return plain
        t = self._type(n)
        lo, hi = _INT_RANGE[t.name]
        message = f"'integer overflow in {what}: ' || CAST({shown} AS STRING)"
        if self.errors_as_values:
            self._errors.append(f"(CASE WHEN {exact} NOT BETWEEN {lo} AND {hi} THEN {message} END)")
            return f"(CASE WHEN {exact} BETWEEN {lo} AND {hi} THEN {plain} END)"
        fail = f"CAST({message} AS {flink_type(t)})"
        return f"(CASE WHEN {exact} NOT BETWEEN {lo} AND {hi} THEN {fail} ELSE {plain} END)"

    def _unified(self, n: ir.Expr, values: Sequence[ir.Expr]) -> list[tuple[str, str | None]]:
        """Values of a coalesce/case, cast to the result type when it is a float (mixed int/float),
        each with its own error (see :meth:`visit_with_error`)."""
        out = self._type(n)
        res = []
        for v in values:
            s, err = self.visit_with_error(v)
            vt = self._type(v)
            if _is_float(out) and vt is not None and vt != out:
                s = f"CAST({s} AS {flink_type(out)})"
            res.append((s, err))
        return res

    def visit_Coalesce(self, n: ir.Coalesce) -> str:
        args = self._unified(n, n.args)
        # an argument is evaluated only when the ones before it are null
        err = None
        for sql, own in reversed(args):
            later = f"(CASE WHEN {sql} IS NULL THEN {err} END)" if err is not None else None
            err = _first_error([e for e in (own, later) if e is not None])
        if err is not None:
            self._errors.append(err)
        return f"COALESCE({', '.join(sql for sql, _ in args)})"

    def visit_IsNull(self, n: ir.IsNull) -> str:
        return f"({self.visit(n.expr)} IS NULL)"

    def visit_IsNotNull(self, n: ir.IsNotNull) -> str:
        return f"({self.visit(n.expr)} IS NOT NULL)"

    def visit_IsIn(self, n: ir.IsIn) -> str:
        # numbers compared in one type (the arithmetic rule), as the other engines do implicitly
        kinds = [self._type(v) for v in (n.expr, *n.values)]
        common = None
        if all(t is not None and not isinstance(t, _t.Array) and t.family in ("integer", "float") for t in kinds):
            for t in kinds:
                common = t if common is None else promote(common, t)
        x = self.visit(n.expr)
        if common is not None and kinds[0] != common:
            x = f"CAST({x} AS {flink_type(common)})"
        values = [render_literal(v.value, common or v.dtype) for v in n.values]
        return f"({x} IN ({', '.join(values)}))"

    def visit_Lower(self, n: ir.Lower) -> str:
        return f"LOWER({self.visit(n.expr)})"

    def visit_Upper(self, n: ir.Upper) -> str:
        return f"UPPER({self.visit(n.expr)})"

    def visit_Length(self, n: ir.Length) -> str:
        return f"CAST(CHAR_LENGTH({self.visit(n.expr)}) AS BIGINT)"

    def visit_Trim(self, n: ir.Trim) -> str:
        return f"TRIM(BOTH ' ' FROM {self.visit(n.expr)})"

    def visit_Substring(self, n: ir.Substring) -> str:
        x = self.visit(n.expr)
        if n.length is None:
            return f"SUBSTRING({x} FROM {int(n.start)})"
        return f"SUBSTRING({x} FROM {int(n.start)} FOR {int(n.length)})"

    def visit_Concat(self, n: ir.Concat) -> str:
        return "(" + " || ".join(self.visit(a) for a in n.args) + ")"

    def visit_Contains(self, n: ir.Contains) -> str:
        return f"(POSITION({self.visit(n.pattern)} IN {self.visit(n.expr)}) > 0)"

    def visit_StartsWith(self, n: ir.StartsWith) -> str:
        # POSITION gives the first occurrence, 1 for an empty prefix
        return f"(POSITION({self.visit(n.prefix)} IN {self.visit(n.expr)}) = 1)"

    def visit_EndsWith(self, n: ir.EndsWith) -> str:
        x, s = self.visit(n.expr), self.visit(n.suffix)
        return (f"(CASE WHEN CHAR_LENGTH({s}) > CHAR_LENGTH({x}) THEN FALSE "
                f"ELSE RIGHT({x}, CHAR_LENGTH({s})) = {s} END)")

    def visit_DatePart(self, n: ir.DatePart) -> str:
        x = self.visit(n.expr)
        # whole days since the epoch, floored (TIMESTAMPDIFF truncates toward zero)
        d0 = f"TIMESTAMPDIFF(DAY, {_EPOCH}, {x})"
        days = f"(CAST({d0} AS BIGINT) - CASE WHEN {x} < TIMESTAMPADD(DAY, {d0}, {_EPOCH}) THEN 1 ELSE 0 END)"
        midnight = f"TIMESTAMPADD(DAY, CAST({days} AS INT), {_EPOCH})"
        part = n.part
        if part == "day_of_week":  # 1970-01-01 was a Thursday (ISO 4)
            return f"CAST(MOD(MOD({days} + 3, 7) + 7, 7) + 1 AS BIGINT)"
        if part == "hour":
            return f"CAST(TIMESTAMPDIFF(HOUR, {midnight}, {x}) AS BIGINT)"
        if part == "minute":
            return f"CAST(MOD(TIMESTAMPDIFF(MINUTE, {midnight}, {x}), 60) AS BIGINT)"
        unit = {"year": "YEAR", "month": "MONTH", "day": "DAY"}[part]
        return f"CAST(EXTRACT({unit} FROM {midnight}) AS BIGINT)"

    def visit_Case(self, n: ir.Case) -> str:
        conds = [self.visit_with_error(c) for c, _ in n.branches]
        values = self._unified(n, [v for _, v in n.branches] + [n.otherwise])
        parts = ["CASE"]
        for (c, _), (v, _) in zip(conds, values):
            parts.append(f"WHEN {c} THEN {v}")
        parts.append(f"ELSE {values[-1][0]} END")
        # a condition is evaluated when the ones before it are not true; a value when its condition is
        err = values[-1][1]
        for (c, c_err), (_, v_err) in zip(reversed(conds), reversed(values[:-1])):
            branch = None
            if v_err is not None or err is not None:
                branch = (f"(CASE WHEN {c} THEN {v_err or _NO_ERROR} "
                          f"ELSE {err or _NO_ERROR} END)")
            err = _first_error([e for e in (c_err, branch) if e is not None])
        if err is not None:
            self._errors.append(err)
        return "(" + " ".join(parts) + ")"


_NO_ERROR = "CAST(NULL AS STRING)"


def _first_error(errors: Sequence[str]) -> str | None:
    """The first non-null of ``errors`` (SQL), None when there are none."""
    if not errors:
        return None
    return errors[0] if len(errors) == 1 else f"COALESCE({', '.join(errors)})"


UNSUPPORTED = FlinkCompiler.UNSUPPORTED


def supports(node: ir.Expr | Aggregation | Sequence, schema: Mapping[str, DataType] | None = None) -> bool:
    """True if the Flink compiler can run every node of ``node``. ``schema`` lets it see column types
    (``%`` on float columns is refused; without a schema only float literals/casts reveal it)."""
    return FlinkCompiler.supports(node, schema)


def to_sql(expr: ir.Expr, schema: Mapping[str, DataType] | None = None) -> tuple[str, dict]:
    """``(sql, params)`` for one expression; ``params`` is always empty (literals are inlined safely).

    >>> from transforms import col
    >>> to_sql(col("status") == "it's")
    ("(`status` = CAST('it''s' AS STRING))", {})
    """
    return FlinkCompiler(schema).visit(expr), {}


def to_sql_with_error(expr: ir.Expr, schema: Mapping[str, DataType] | None = None) -> tuple[str, str | None]:
    """``(sql, error sql or None)``: ``expr`` compiled with errors as values (see the module docs):
    where the default compile fails the job, the value is null and the error SQL gives the message.

    >>> from transforms import col
    >>> from featurestore.types import Int64
    >>> sql, err = to_sql_with_error(-col("i"), {"i": Int64})
    >>> err
    "(CASE WHEN (- CAST(`i` AS DECIMAL(19, 0))) NOT BETWEEN -9223372036854775808 AND 9223372036854775807 \
THEN 'integer overflow in negation: ' || CAST(`i` AS STRING) END)"
    """
    return FlinkCompiler(schema, errors_as_values=True).visit_with_error(expr)


def compile_view(
    source_table: str,
    transform: Sequence[ir.Expr],
    filter: ir.Expr | None,
    passthrough_columns: Sequence[str],
    schema: Mapping[str, DataType] | None = None,
    *,
    error_column: str | None = None,
    filter_column: str | None = None,
) -> str:
    """``SELECT <passthrough>, <transforms> FROM `<source_table>` WHERE <filter>``.

    ``source_table`` is a table (or view) name registered in the TableEnvironment; it is quoted as
    one identifier. The filter sees the source columns (before the transforms); a null filter drops
    the row. Each transform must be named; output order is passthrough columns, then transforms.

    With ``error_column`` a row that fails (integer overflow) does not fail the query: the failing
    value is null and the last column, ``error_column``, holds the first failure's message (the
    filter's, then the transforms' in order), null for rows that do not fail. A row whose filter fails
    is kept, so its error can be reported.

    With ``filter_column`` no row is dropped: the filter's outcome (true, or false for false and null)
    is that column, after the transforms and before ``error_column``. A stream job uses this to see
    every event (its offsets and event times) while applying only the ones the filter keeps.
    """
    c = FlinkCompiler(schema, errors_as_values=error_column is not None)
    errors = []
    where = None
    if filter is not None:
        where, err = c.visit_with_error(filter)
        if err is not None:
            # Not `<error> IS NOT NULL`: Calcite's simplifier pushes IS NOT NULL through the nested
            # CASE/COALESCE/|| of the error into every operand, exponential in the nesting depth.
            where = f"({where} OR CHAR_LENGTH({err}) > 0)"
            errors.append(err)
    items = [quote_ident(p) for p in passthrough_columns]
    for e in transform:
        sql, err = c.visit_with_error(e)
        items.append(f"{sql} AS {quote_ident(output_name(e))}")
        if err is not None:
            errors.append(err)
    if not items:
        raise DefinitionError("a view selects no columns")
    if filter_column is not None:
        items.append(f"COALESCE({where or 'TRUE'}, FALSE) AS {quote_ident(filter_column)}")
    if error_column is not None:
        items.append(f"{_first_error(errors) or _NO_ERROR} AS {quote_ident(error_column)}")
    sql = f"SELECT {', '.join(items)} FROM {quote_ident(source_table)}"
    if where is not None and filter_column is None:
        sql += f" WHERE {where}"
    return sql
