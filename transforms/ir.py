"""The transform IR: small, typed, immutable expression nodes and the builder API that makes them.

Every node is a frozen dataclass. Because ``==`` (and ``<``, ``&``, ...) build expressions, structural
equality is spelled ``a.same_as(b)`` (or compare ``a.key()``); ``bool(expr)`` raises so that
``if col("a") == 1:`` or ``col("a") == 1 and ...`` cannot silently do the wrong thing. Nodes hash by
identity; use ``expr.key()`` as a dictionary key when you need structural lookup.

``to_spec(node)`` gives a JSON-safe dict and ``from_spec(spec)`` rebuilds the node; the round trip is
exact (``from_spec(to_spec(e)).same_as(e)`` and ``to_spec(from_spec(s)) == s``).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

from featurestore import types as _t
from featurestore.errors import DefinitionError
from featurestore.types import DataType

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

ARITHMETIC_OPS = ("+", "-", "*", "/", "%")
COMPARISON_OPS = ("==", "!=", "<", "<=", ">", ">=")
BOOLEAN_OPS = ("&", "|")
BINARY_OPS = ARITHMETIC_OPS + COMPARISON_OPS + BOOLEAN_OPS
UNARY_OPS = ("not", "neg")
DATE_PARTS = ("year", "month", "day", "hour", "minute", "day_of_week")

_NODE_CLASSES: dict[str, type[Expr]] = {}


def _wrap(value: Any) -> Expr:
    """A node as is; any other Python value becomes a :class:`Literal`."""
    return value if isinstance(value, Expr) else lit(value)


@dataclass(frozen=True, eq=False)
class Expr:
    """Base of every node. Operators build new nodes; nothing is evaluated here."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _NODE_CLASSES[cls.__name__] = cls

    # -- structure -------------------------------------------------------------------------------
    def key(self) -> tuple:
        """A hashable structural key: two nodes are the same expression iff their keys are equal."""
        return (type(self).__name__,) + tuple(_key_of(getattr(self, f.name)) for f in fields(self))

    def same_as(self, other: object) -> bool:
        """Structural equality (``==`` builds an expression instead)."""
        return isinstance(other, Expr) and self.key() == other.key()

    def children(self) -> tuple[Expr, ...]:
        """The direct sub-expressions, in field order."""
        out: list[Expr] = []
        for f in fields(self):
            _collect_exprs(getattr(self, f.name), out)
        return tuple(out)

    def walk(self):
        """This node and every node below it, depth first (pre-order)."""
        yield self
        for child in self.children():
            yield from child.walk()

    def columns(self) -> list[str]:
        """Names of the source columns the expression reads, in first-use order, without repeats."""
        seen: dict[str, None] = {}
        for node in self.walk():
            if isinstance(node, Column):
                seen.setdefault(node.name, None)
        return list(seen)

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise TypeError(
            "a transform expression has no truth value: use & | ~ instead of and/or/not, "
            "and .same_as() to compare expressions"
        )

    # -- builder ---------------------------------------------------------------------------------
    def alias(self, name: str) -> Alias:
        return Alias(self, name)

    def cast(self, to: DataType) -> Cast:
        return Cast(self, to)

    def is_null(self) -> IsNull:
        return IsNull(self)

    def is_not_null(self) -> IsNotNull:
        return IsNotNull(self)

    def fill_null(self, value: Any) -> Coalesce:
        return Coalesce((self, _wrap(value)))

    def isin(self, values: Any) -> IsIn:
        """True when the value equals one of ``values`` (non-null constants of one kind), False when
        it equals none, null when it is null: ``col("country").isin(["US", "DE"])``."""
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise DefinitionError(f"isin takes a list of values, got {values!r}")
        return IsIn(self, tuple(_wrap(v) for v in values))

    @property
    def str(self) -> _StrNamespace:
        return _StrNamespace(self)

    @property
    def dt(self) -> _DtNamespace:
        return _DtNamespace(self)

    def _bin(self, op: str, other: Any, reflected: bool = False) -> BinaryOp:
        other = _wrap(other)
        return BinaryOp(op, other, self) if reflected else BinaryOp(op, self, other)

    def __add__(self, o):
        return self._bin("+", o)

    def __radd__(self, o):
        return self._bin("+", o, True)

    def __sub__(self, o):
        return self._bin("-", o)

    def __rsub__(self, o):
        return self._bin("-", o, True)

    def __mul__(self, o):
        return self._bin("*", o)

    def __rmul__(self, o):
        return self._bin("*", o, True)

    def __truediv__(self, o):
        return self._bin("/", o)

    def __rtruediv__(self, o):
        return self._bin("/", o, True)

    def __mod__(self, o):
        return self._bin("%", o)

    def __rmod__(self, o):
        return self._bin("%", o, True)

    def __eq__(self, o):  # type: ignore[override]
        return self._bin("==", o)

    def __ne__(self, o):  # type: ignore[override]
        return self._bin("!=", o)

    def __lt__(self, o):
        return self._bin("<", o)

    def __le__(self, o):
        return self._bin("<=", o)

    def __gt__(self, o):
        return self._bin(">", o)

    def __ge__(self, o):
        return self._bin(">=", o)

    def __and__(self, o):
        return self._bin("&", o)

    def __rand__(self, o):
        return self._bin("&", o, True)

    def __or__(self, o):
        return self._bin("|", o)

    def __ror__(self, o):
        return self._bin("|", o, True)

    def __invert__(self):
        return UnaryOp("not", self)

    def __neg__(self):
        return UnaryOp("neg", self)

    def __repr__(self) -> str:
        return _render(self)


class _StrNamespace:
    """``col("s").str.<function>()``: string functions (all null in, null out)."""

    def __init__(self, expr: Expr):
        self._e = expr

    def lower(self) -> Lower:
        return Lower(self._e)

    def upper(self) -> Upper:
        return Upper(self._e)

    def length(self) -> Length:
        return Length(self._e)

    def trim(self) -> Trim:
        return Trim(self._e)

    def substring(self, start: int, length: int | None = None) -> Substring:
        return Substring(self._e, start, length)

    def concat(self, *others: Any) -> Concat:
        return Concat((self._e,) + tuple(_wrap(o) for o in others))

    def contains(self, pattern: Any) -> Contains:
        return Contains(self._e, _wrap(pattern))

    def starts_with(self, prefix: Any) -> StartsWith:
        return StartsWith(self._e, _wrap(prefix))

    def ends_with(self, suffix: Any) -> EndsWith:
        return EndsWith(self._e, _wrap(suffix))


class _DtNamespace:
    """``col("ts").dt.<part>()``: calendar parts of a timestamp, always in UTC, as Int64."""

    def __init__(self, expr: Expr):
        self._e = expr

    def year(self) -> DatePart:
        return DatePart(self._e, "year")

    def month(self) -> DatePart:
        return DatePart(self._e, "month")

    def day(self) -> DatePart:
        return DatePart(self._e, "day")

    def hour(self) -> DatePart:
        return DatePart(self._e, "hour")

    def minute(self) -> DatePart:
        return DatePart(self._e, "minute")

    def day_of_week(self) -> DatePart:
        """ISO day of week: Monday = 1 ... Sunday = 7."""
        return DatePart(self._e, "day_of_week")


# ------------------------------------------------------------------------------------------------
# Nodes
# ------------------------------------------------------------------------------------------------


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"{what} must be a non-empty string, got {name!r}")


def _check_expr(value: object, what: str) -> None:
    if not isinstance(value, Expr):
        raise DefinitionError(f"{what} must be a transform expression, got {value!r}")


@dataclass(frozen=True, eq=False, repr=False)
class Column(Expr):
    """A column of the source (or of the view, for filters written after transforms)."""

    name: str

    def __post_init__(self):
        _check_name(self.name, "a column name")


@dataclass(frozen=True, eq=False, repr=False)
class Literal(Expr):
    """A constant. ``dtype`` is ``None`` only for an untyped null (it takes its context's type)."""

    value: Any
    dtype: DataType | None

    def __post_init__(self):
        if self.dtype is None and self.value is not None:
            object.__setattr__(self, "dtype", _python_type(self.value))
        object.__setattr__(self, "value", _normalise_literal(self.value, self.dtype))


@dataclass(frozen=True, eq=False, repr=False)
class Alias(Expr):
    """Names an expression: the name of the output column."""

    expr: Expr
    name: str

    def __post_init__(self):
        _check_expr(self.expr, "alias target")
        _check_name(self.name, "an alias")


@dataclass(frozen=True, eq=False, repr=False)
class Cast(Expr):
    expr: Expr
    to: DataType

    def __post_init__(self):
        _check_expr(self.expr, "cast operand")
        if not isinstance(self.to, DataType):
            raise DefinitionError(f"cast target must be a type such as Float64, got {self.to!r}")


@dataclass(frozen=True, eq=False, repr=False)
class BinaryOp(Expr):
    op: str
    left: Expr
    right: Expr

    def __post_init__(self):
        if self.op not in BINARY_OPS:
            raise DefinitionError(f"unknown operator {self.op!r}; known: {' '.join(BINARY_OPS)}")
        _check_expr(self.left, "left operand")
        _check_expr(self.right, "right operand")


@dataclass(frozen=True, eq=False, repr=False)
class UnaryOp(Expr):
    """``op`` is ``"not"`` (``~e``, boolean) or ``"neg"`` (``-e``, numeric)."""

    op: str
    operand: Expr

    def __post_init__(self):
        if self.op not in UNARY_OPS:
            raise DefinitionError(f"unknown unary operator {self.op!r}; known: {', '.join(UNARY_OPS)}")
        _check_expr(self.operand, "operand")


@dataclass(frozen=True, eq=False, repr=False)
class Coalesce(Expr):
    args: tuple[Expr, ...]

    def __post_init__(self):
        object.__setattr__(self, "args", tuple(self.args))
        if len(self.args) < 1:
            raise DefinitionError("coalesce needs at least one argument")
        for a in self.args:
            _check_expr(a, "coalesce argument")


@dataclass(frozen=True, eq=False, repr=False)
class IsNull(Expr):
    expr: Expr


@dataclass(frozen=True, eq=False, repr=False)
class IsNotNull(Expr):
    expr: Expr


@dataclass(frozen=True, eq=False, repr=False)
class IsIn(Expr):
    """``expr.isin([v, ...])``: SQL's ``expr IN (v, ...)`` with non-null constant values, so it is
    null exactly when ``expr`` is null (three-valued logic), else whether one value equals it."""

    expr: Expr
    values: tuple[Literal, ...]

    def __post_init__(self):
        _check_expr(self.expr, "isin operand")
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise DefinitionError("isin needs at least one value")
        for v in self.values:
            if not isinstance(v, Literal) or v.value is None:
                raise DefinitionError(f"isin values must be non-null constants (test nulls with is_null()), "
                                      f"got {v!r}")


@dataclass(frozen=True, eq=False, repr=False)
class Lower(Expr):
    expr: Expr


@dataclass(frozen=True, eq=False, repr=False)
class Upper(Expr):
    expr: Expr


@dataclass(frozen=True, eq=False, repr=False)
class Length(Expr):
    """Number of characters (Unicode code points)."""

    expr: Expr


@dataclass(frozen=True, eq=False, repr=False)
class Trim(Expr):
    """Removes leading and trailing space characters (U+0020 only, as SQL ``trim``)."""

    expr: Expr


@dataclass(frozen=True, eq=False, repr=False)
class Substring(Expr):
    """Characters from 1-based ``start`` (>= 1), at most ``length`` of them (``None``: to the end)."""

    expr: Expr
    start: int
    length: int | None = None

    def __post_init__(self):
        _check_expr(self.expr, "substring operand")
        if isinstance(self.start, bool) or not isinstance(self.start, int) or self.start < 1:
            raise DefinitionError(f"substring start is 1-based and must be an int >= 1, got {self.start!r}")
        if self.length is not None and (
            isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 0
        ):
            raise DefinitionError(f"substring length must be None or an int >= 0, got {self.length!r}")
        if self.start > 2**31 - 1 or (self.length is not None and self.length > 2**31 - 1):
            raise DefinitionError("substring start and length must be below 2**31")


@dataclass(frozen=True, eq=False, repr=False)
class Concat(Expr):
    """String concatenation; null if any argument is null."""

    args: tuple[Expr, ...]

    def __post_init__(self):
        object.__setattr__(self, "args", tuple(self.args))
        if len(self.args) < 1:
            raise DefinitionError("concat needs at least one argument")
        for a in self.args:
            _check_expr(a, "concat argument")


@dataclass(frozen=True, eq=False, repr=False)
class Contains(Expr):
    expr: Expr
    pattern: Expr


@dataclass(frozen=True, eq=False, repr=False)
class StartsWith(Expr):
    expr: Expr
    prefix: Expr


@dataclass(frozen=True, eq=False, repr=False)
class EndsWith(Expr):
    expr: Expr
    suffix: Expr


@dataclass(frozen=True, eq=False, repr=False)
class DatePart(Expr):
    """A calendar part of a timestamp, in UTC whatever the engine's session time zone."""

    expr: Expr
    part: str

    def __post_init__(self):
        _check_expr(self.expr, "date part operand")
        if self.part not in DATE_PARTS:
            raise DefinitionError(f"unknown date part {self.part!r}; known: {', '.join(DATE_PARTS)}")


@dataclass(frozen=True, eq=False, repr=False)
class Case(Expr):
    """``when(c1, v1).when(c2, v2).otherwise(v)``: the value of the first true condition (a null
    condition counts as false), else ``otherwise`` (null if not given)."""

    branches: tuple[tuple[Expr, Expr], ...]
    otherwise: Expr

    def __post_init__(self):
        object.__setattr__(self, "branches", tuple((c, v) for c, v in self.branches))
        if not self.branches:
            raise DefinitionError("a case needs at least one when(condition, value)")
        for c, v in self.branches:
            _check_expr(c, "when condition")
            _check_expr(v, "when value")
        _check_expr(self.otherwise, "otherwise value")


class _CaseBuilder:
    """What ``when(cond, value)`` returns: add ``.when(...)`` branches, close with ``.otherwise(v)``
    (or ``.end()`` for a null default). A builder is not an expression until closed."""

    def __init__(self, branches: tuple[tuple[Expr, Expr], ...]):
        self._branches = branches

    def when(self, condition: Any, value: Any) -> _CaseBuilder:
        return _CaseBuilder(self._branches + ((_wrap(condition), _wrap(value)),))

    def otherwise(self, value: Any) -> Case:
        return Case(self._branches, _wrap(value))

    def end(self) -> Case:
        return Case(self._branches, Literal(None, None))


for _cls in (IsNull, IsNotNull, Lower, Upper, Length, Trim):

    def _post(self, _what=_cls.__name__):
        _check_expr(self.expr, f"{_what} operand")

    _cls.__post_init__ = _post  # type: ignore[attr-defined]

for _cls, _field in ((Contains, "pattern"), (StartsWith, "prefix"), (EndsWith, "suffix")):

    def _post2(self, _what=_cls.__name__, _f=_field):
        _check_expr(self.expr, f"{_what} operand")
        _check_expr(getattr(self, _f), f"{_what} {_f}")

    _cls.__post_init__ = _post2  # type: ignore[attr-defined]

# ------------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------------


def col(name: str) -> Column:
    """A reference to a column by name: ``col("amount")``."""
    return Column(name)


def lit(value: Any, dtype: DataType | None = None) -> Literal:
    """A constant. Without ``dtype`` the type follows the Python value: bool -> Bool, int -> Int64,
    float -> Float64, str -> String, bytes -> Bytes, datetime -> Timestamp (a naive datetime is taken
    as UTC), None -> an untyped null. ``lit(None, Float64)`` is a typed null; ``lit(1, Float64)`` is 1.0.
    """
    return value if isinstance(value, Literal) and dtype is None else Literal(value, dtype)


def coalesce(*args: Any) -> Coalesce:
    """The first non-null argument: ``coalesce(col("a"), 0)``."""
    return Coalesce(tuple(_wrap(a) for a in args))


def when(condition: Any, value: Any) -> _CaseBuilder:
    """``when(col("x") > 10, "big").when(col("x") > 0, "small").otherwise("none")``."""
    return _CaseBuilder(((_wrap(condition), _wrap(value)),))


def concat(*args: Any) -> Concat:
    return Concat(tuple(_wrap(a) for a in args))


# ------------------------------------------------------------------------------------------------
# Literals
# ------------------------------------------------------------------------------------------------


def _python_type(value: Any) -> DataType | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return _t.Bool
    if isinstance(value, int):
        return _t.Int64
    if isinstance(value, float):
        return _t.Float64
    if isinstance(value, str):
        return _t.String
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _t.Bytes
    if isinstance(value, datetime):
        return _t.Timestamp
    raise DefinitionError(
        f"cannot make a literal of {type(value).__name__} {value!r}: use bool, int, float, str, bytes, "
        "datetime or None"
    )


def _normalise_literal(value: Any, dtype: DataType | None) -> Any:
    natural = _python_type(value)
    if dtype is None:
        dtype = natural
    elif not isinstance(dtype, DataType):
        raise DefinitionError(f"literal type must be a type such as Int64, got {dtype!r}")
    if value is None:
        return None
    name = dtype.name
    fam = dtype.family if not isinstance(dtype, _t.Array) else "list"
    if fam == "integer" and natural is _t.Int64:
        lo, hi = (INT64_MIN, INT64_MAX) if name == "Int64" else (-(2**31), 2**31 - 1)
        if not lo <= value <= hi:
            raise DefinitionError(f"integer literal {value} does not fit in {name}")
        return int(value)
    if fam == "float" and natural in (_t.Int64, _t.Float64):
        return float(value)
    if fam == "string" and natural is _t.String:
        return str(value)
    if fam == "bool" and natural is _t.Bool:
        return bool(value)
    if fam == "bytes" and natural is _t.Bytes:
        return bytes(value)
    if fam == "timestamp" and natural is _t.Timestamp:
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    raise DefinitionError(f"literal {value!r} is not a {name}")


def _key_of(value: Any) -> Any:
    if isinstance(value, Expr):
        return value.key()
    if isinstance(value, tuple):
        return tuple(_key_of(v) for v in value)
    if isinstance(value, DataType):
        return ("type", value.name)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, bool):
        return ("bool", value)
    return value


def _collect_exprs(value: Any, out: list[Expr]) -> None:
    if isinstance(value, Expr):
        out.append(value)
    elif isinstance(value, tuple):
        for v in value:
            _collect_exprs(v, out)


# ------------------------------------------------------------------------------------------------
# Spec form (JSON-safe)
# ------------------------------------------------------------------------------------------------


def _encode_literal_value(value: Any, dtype: DataType | None) -> Any:
    if value is None:
        return None
    fam = dtype.family  # type: ignore[union-attr]
    if fam == "float":
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if fam == "bytes":
        return base64.b64encode(value).decode("ascii")
    if fam == "timestamp":
        return value.isoformat(timespec="microseconds")
    return value


def _decode_literal_value(value: Any, dtype: DataType | None) -> Any:
    if value is None or dtype is None:
        return value
    fam = dtype.family
    if fam == "float":
        return float(value) if isinstance(value, str) else float(value)
    if fam == "bytes":
        return base64.b64decode(value.encode("ascii"), validate=True)
    if fam == "timestamp":
        return datetime.fromisoformat(value)
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Expr):
        return to_spec(value)
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, DataType):
        return {"type": value.to_spec()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "node" in value:
            return from_spec(value)
        if set(value) == {"type"}:
            return _t.from_spec(value["type"])
        raise DefinitionError(f"not a transform spec: {value!r}")
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


def to_spec(node: Expr) -> dict:
    """The JSON-safe form of a node: ``{"node": "<ClassName>", <field>: <value>, ...}``."""
    if not isinstance(node, Expr):
        raise DefinitionError(f"not a transform expression: {node!r}")
    if isinstance(node, Literal):
        return {
            "node": "Literal",
            "type": None if node.dtype is None else node.dtype.to_spec(),
            "value": _encode_literal_value(node.value, node.dtype),
        }
    spec: dict[str, Any] = {"node": type(node).__name__}
    for f in fields(node):
        spec[f.name] = _encode(getattr(node, f.name))
    return spec


def from_spec(spec: dict) -> Expr:
    """Rebuild a node from :func:`to_spec` output."""
    if not isinstance(spec, dict) or "node" not in spec:
        raise DefinitionError(f"not a transform spec: {spec!r}")
    name = spec["node"]
    cls = _NODE_CLASSES.get(name)
    if cls is None or cls is Expr:
        raise DefinitionError(f"unknown transform node {name!r}")
    if cls is Literal:
        dtype = None if spec.get("type") is None else _t.from_spec(spec["type"])
        return Literal(_decode_literal_value(spec.get("value"), dtype), dtype)
    names = [f.name for f in fields(cls)]
    unknown = set(spec) - set(names) - {"node"}
    if unknown:
        raise DefinitionError(f"unknown fields {sorted(unknown)} in {name} spec")
    kwargs = {k: _decode(spec[k]) for k in names if k in spec}
    if cls is Case:
        kwargs["branches"] = tuple(tuple(b) for b in kwargs["branches"])
    return cls(**kwargs)


# ------------------------------------------------------------------------------------------------
# Rendering (repr in builder syntax)
# ------------------------------------------------------------------------------------------------

_STR_METHODS = {
    "Lower": "lower",
    "Upper": "upper",
    "Length": "length",
    "Trim": "trim",
}


def render(node: Expr) -> str:
    """The expression as the builder code that makes it, e.g. ``(col('amount') >= 0)`` (what ``repr``
    shows; the catalog prints filters, transforms and checks this way)."""
    return _render(node)


def _render(node: Expr) -> str:
    r = _render
    if isinstance(node, Column):
        return f"col({node.name!r})"
    if isinstance(node, Literal):
        if node.dtype is None or node.dtype.name in ("Int64", "Float64", "String", "Bool"):
            if node.dtype is None or (node.value is not None and not (
                isinstance(node.value, float) and not math.isfinite(node.value))):
                return repr(node.value)
        return f"lit({node.value!r}, {node.dtype!r})"
    if isinstance(node, Alias):
        return f"{r(node.expr)}.alias({node.name!r})"
    if isinstance(node, Cast):
        return f"{r(node.expr)}.cast({node.to!r})"
    if isinstance(node, BinaryOp):
        return f"({r(node.left)} {node.op} {r(node.right)})"
    if isinstance(node, UnaryOp):
        return f"{'~' if node.op == 'not' else '-'}{r(node.operand)}"
    if isinstance(node, Coalesce):
        return f"coalesce({', '.join(r(a) for a in node.args)})"
    if isinstance(node, IsNull):
        return f"{r(node.expr)}.is_null()"
    if isinstance(node, IsNotNull):
        return f"{r(node.expr)}.is_not_null()"
    if isinstance(node, IsIn):
        return f"{r(node.expr)}.isin([{', '.join(r(v) for v in node.values)}])"
    name = type(node).__name__
    if name in _STR_METHODS:
        return f"{r(node.expr)}.str.{_STR_METHODS[name]}()"  # type: ignore[attr-defined]
    if isinstance(node, Substring):
        extra = "" if node.length is None else f", {node.length}"
        return f"{r(node.expr)}.str.substring({node.start}{extra})"
    if isinstance(node, Concat):
        return f"concat({', '.join(r(a) for a in node.args)})"
    if isinstance(node, Contains):
        return f"{r(node.expr)}.str.contains({r(node.pattern)})"
    if isinstance(node, StartsWith):
        return f"{r(node.expr)}.str.starts_with({r(node.prefix)})"
    if isinstance(node, EndsWith):
        return f"{r(node.expr)}.str.ends_with({r(node.suffix)})"
    if isinstance(node, DatePart):
        return f"{r(node.expr)}.dt.{node.part}()"
    if isinstance(node, Case):
        s = "".join(
            f"{'when' if i == 0 else '.when'}({r(c)}, {r(v)})" for i, (c, v) in enumerate(node.branches)
        )
        return f"{s}.otherwise({r(node.otherwise)})"
    return f"{name}(...)"


NODE_TYPES: tuple[type[Expr], ...] = tuple(c for n, c in _NODE_CLASSES.items() if c is not Expr)
"""Every concrete node class (the names a compiler's ``visit_<Name>`` methods dispatch on)."""
