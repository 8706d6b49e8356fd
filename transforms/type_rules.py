"""Type checking of transform expressions against a source schema.

``infer_type(expr, schema)`` returns the value type of an expression or raises
:class:`~featurestore.errors.DefinitionError` whose ``field`` names the column at fault: an unknown
column, or a type mismatch (the message quotes the offending sub-expression).

Type rules (the same ones DuckDB and Spark apply, so both engines agree without extra casts):

- arithmetic ``+ - * %`` and ``-e`` on numbers: any Float64 operand gives Float64, else any Float32
  gives Float32, else any Int64 gives Int64, else Int32. Integer literals are Int64, so
  ``col("i32") + 1`` is Int64. ``/`` is always float division and gives Float64.
- comparisons need two numbers, or two values of one family (String, Bool, Timestamp, Bytes); Bool.
- ``& | ~`` need Bool. ``coalesce`` and ``when`` unify their values with the arithmetic rule
  (numbers) or need one family. An untyped null (``lit(None)``) fits anywhere.
- string functions need String; ``length`` gives Int64; ``contains``/``starts_with``/``ends_with``
  give Bool. Date parts need a Timestamp and give Int64.
- casts allowed: between numbers; Bool <-> integer; Bool -> float; String -> number; number
  (integer only), Bool or String -> String; a type to itself. Float -> String and Timestamp -> String
  are refused (engines print them differently).
"""

from __future__ import annotations

from collections.abc import Mapping

from featurestore import types as _t
from featurestore.errors import DefinitionError
from featurestore.types import DataType
from transforms import ir

_NUMERIC = ("integer", "float")


def _family(t: DataType) -> str:
    return "list" if isinstance(t, _t.Array) else t.family


def is_numeric(t: DataType | None) -> bool:
    return t is not None and _family(t) in _NUMERIC


def promote(a: DataType | None, b: DataType | None) -> DataType | None:
    """The arithmetic result type of two numeric types (``None`` is the untyped null)."""
    if a is None:
        return b
    if b is None:
        return a
    for t in (_t.Float64, _t.Float32, _t.Int64):
        if t in (a, b):
            return t
    return _t.Int32


def cast_allowed(src: DataType | None, dst: DataType) -> bool:
    if src is None or src == dst:
        return True
    s, d = _family(src), _family(dst)
    if s in _NUMERIC and d in _NUMERIC:
        return True
    if s == "bool" and d in _NUMERIC:
        return True
    if s == "integer" and d == "bool":
        return True
    if s == "string" and d in _NUMERIC:
        return True
    if d == "string" and s in ("integer", "bool", "string"):
        return True
    return False


class _Checker:
    def __init__(self, schema: Mapping[str, DataType], obj: str | None):
        self.schema = schema
        self.obj = obj

    def fail(self, node: ir.Expr, message: str) -> DefinitionError:
        cols = node.columns()
        field = cols[0] if cols else None
        return DefinitionError(f"type mismatch in {node!r}: {message}", obj=self.obj, field=field)

    def t(self, node: ir.Expr) -> DataType | None:
        method = getattr(self, f"t_{type(node).__name__}", None)
        if method is None:  # pragma: no cover - every node has a rule
            raise DefinitionError(f"no type rule for {type(node).__name__}", obj=self.obj)
        return method(node)

    def t_Column(self, n: ir.Column):
        if n.name not in self.schema:
            known = ", ".join(sorted(self.schema)) or "none"
            raise DefinitionError(
                f"unknown column {n.name!r} (columns: {known})", obj=self.obj, field=n.name
            )
        return self.schema[n.name]

    def t_Literal(self, n: ir.Literal):
        return n.dtype

    def t_Alias(self, n: ir.Alias):
        return self.t(n.expr)

    def t_Cast(self, n: ir.Cast):
        src = self.t(n.expr)
        if not cast_allowed(src, n.to):
            raise self.fail(n, f"cannot cast {src!r} to {n.to!r}")
        return n.to

    def t_BinaryOp(self, n: ir.BinaryOp):
        lt, rt = self.t(n.left), self.t(n.right)
        if n.op in ir.ARITHMETIC_OPS:
            for side, t in (("left", lt), ("right", rt)):
                if t is not None and not is_numeric(t):
                    raise self.fail(n, f"{n.op!r} needs numbers, the {side} side is {t!r}")
            if n.op == "/":
                return _t.Float64
            return promote(lt, rt) or _t.Int64
        if n.op in ir.COMPARISON_OPS:
            if lt is not None and rt is not None:
                ok = (is_numeric(lt) and is_numeric(rt)) or (
                    _family(lt) == _family(rt) and _family(lt) not in ("list",)
                )
                if not ok:
                    raise self.fail(n, f"cannot compare {lt!r} with {rt!r}")
            return _t.Bool
        for side, t in (("left", lt), ("right", rt)):
            if t is not None and t != _t.Bool:
                raise self.fail(n, f"{n.op!r} needs Bool operands, the {side} side is {t!r}")
        return _t.Bool

    def t_UnaryOp(self, n: ir.UnaryOp):
        t = self.t(n.operand)
        if n.op == "not":
            if t is not None and t != _t.Bool:
                raise self.fail(n, f"~ needs a Bool, got {t!r}")
            return _t.Bool
        if t is not None and not is_numeric(t):
            raise self.fail(n, f"negation needs a number, got {t!r}")
        return t or _t.Int64

    def _unify(self, n: ir.Expr, values: list[ir.Expr]) -> DataType | None:
        out: DataType | None = None
        for v in values:
            t = self.t(v)
            if t is None:
                continue
            if out is None:
                out = t
            elif is_numeric(out) and is_numeric(t):
                out = promote(out, t)
            elif out != t:
                raise self.fail(n, f"values of different types {out!r} and {t!r}")
        return out

    def t_Coalesce(self, n: ir.Coalesce):
        return self._unify(n, list(n.args))

    def t_Case(self, n: ir.Case):
        for c, _ in n.branches:
            ct = self.t(c)
            if ct is not None and ct != _t.Bool:
                raise self.fail(n, f"a when condition must be Bool, got {ct!r} in {c!r}")
        return self._unify(n, [v for _, v in n.branches] + [n.otherwise])

    def _string_arg(self, n: ir.Expr, arg: ir.Expr, what: str) -> None:
        t = self.t(arg)
        if t is not None and t != _t.String:
            raise self.fail(n, f"{what} needs a String, got {t!r}")

    def t_IsNull(self, n):
        self.t(n.expr)
        return _t.Bool

    t_IsNotNull = t_IsNull

    def t_IsIn(self, n: ir.IsIn):
        t = self.t(n.expr)
        for v in n.values:
            vt = self.t(v)
            if t is None:
                t = vt
            elif not ((is_numeric(t) and is_numeric(vt)) or (_family(t) == _family(vt) and _family(t) != "list")):
                raise self.fail(n, f"isin compares {t!r} with a {vt!r} value")
        return _t.Bool

    def _str_unary(self, n, name, result):
        self._string_arg(n, n.expr, name)
        return result

    def t_Lower(self, n):
        return self._str_unary(n, "lower()", _t.String)

    def t_Upper(self, n):
        return self._str_unary(n, "upper()", _t.String)

    def t_Trim(self, n):
        return self._str_unary(n, "trim()", _t.String)

    def t_Length(self, n):
        return self._str_unary(n, "length()", _t.Int64)

    def t_Substring(self, n):
        return self._str_unary(n, "substring()", _t.String)

    def t_Concat(self, n):
        for a in n.args:
            self._string_arg(n, a, "concat()")
        return _t.String

    def t_Contains(self, n):
        self._string_arg(n, n.expr, "contains()")
        self._string_arg(n, n.pattern, "contains()")
        return _t.Bool

    def t_StartsWith(self, n):
        self._string_arg(n, n.expr, "starts_with()")
        self._string_arg(n, n.prefix, "starts_with()")
        return _t.Bool

    def t_EndsWith(self, n):
        self._string_arg(n, n.expr, "ends_with()")
        self._string_arg(n, n.suffix, "ends_with()")
        return _t.Bool

    def t_DatePart(self, n):
        t = self.t(n.expr)
        if t is not None and t != _t.Timestamp:
            raise self.fail(n, f".dt.{n.part}() needs a Timestamp, got {t!r}")
        return _t.Int64


def infer_type(expr: ir.Expr, schema: Mapping[str, DataType], *, obj: str | None = None) -> DataType:
    """The value type of ``expr`` over columns ``schema`` (name -> type).

    Raises ``DefinitionError(field=<column>)`` for an unknown column or a type mismatch; ``obj``
    (e.g. the feature view's name) is passed on to the error. An expression that is only an untyped
    null has no type and is refused: write ``lit(None, Float64)``.

    >>> from featurestore.types import Int64
    >>> from transforms import col
    >>> infer_type(col("a") + 1, {"a": Int64})
    Int64
    """
    if not isinstance(expr, ir.Expr):
        raise DefinitionError(f"not a transform expression: {expr!r}", obj=obj)
    t = _Checker(schema, obj).t(expr)
    if t is None:
        raise DefinitionError(
            f"cannot infer the type of {expr!r} (only untyped nulls): use lit(None, <type>)", obj=obj
        )
    return t


def output_name(expr: ir.Expr) -> str:
    """The output column name: the alias, or the column's own name for a bare column."""
    if isinstance(expr, ir.Alias):
        return expr.name
    if isinstance(expr, ir.Column):
        return expr.name
    cols = expr.columns() if isinstance(expr, ir.Expr) else []
    raise DefinitionError(
        f"{expr!r} needs a name: add .alias(\"<name>\")", field=cols[0] if cols else None
    )
