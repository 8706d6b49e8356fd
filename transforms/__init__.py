"""The declarative transform language: row expressions, filters and windowed aggregations.

One definition compiles to every engine (``transforms.compile_duckdb`` for the local engine,
``transforms.compile_spark`` for Spark) and gives the same values on each; the conformance suite in
``tests/conformance/`` proves it against a brute-force Python reference.

Spelling
--------
>>> from datetime import timedelta
>>> from featurestore.types import Float64
>>> from transforms import col, lit, coalesce, when, Aggregation
>>> amount = col("amount").cast(Float64).alias("amount")        # cast, then name the output
>>> foreign = (col("country") != "US").alias("foreign")          # comparison -> Bool
>>> settled = col("status") == "settled"                         # a filter is a Bool expression
>>> big = ((col("amount") > 100) & ~col("refunded")).alias("big")
>>> score = (coalesce(col("a"), 0) + col("b") * 2).alias("score")
>>> label = when(col("x") > 10, "big").when(col("x") > 0, "small").otherwise("none").alias("label")
>>> Aggregation(column="amount", function="sum", window=timedelta(hours=1)).name
'amount_sum_1h'

Expressions (``e`` is any expression; a plain Python value where an expression is expected becomes a
literal: bool -> Bool, int -> Int64, float -> Float64, str -> String, bytes -> Bytes, datetime ->
Timestamp (naive = UTC), None -> untyped null; ``lit(value, type)`` gives a typed literal):

- ``col(name)``, ``lit(value[, type])``, ``e.alias(name)``, ``e.cast(Type)``
- arithmetic ``e + e``, ``-``, ``*``, ``/``, ``%``, ``-e``. ``/`` is float division (Float64) and
  dividing by zero gives null (not inf, not an error); ``%`` takes the sign of the dividend (SQL/C
  remainder, ``-7 % 3 == -1``) and ``% 0`` is null. Integer overflow is not checked at plan time: at
  run time both engines raise an error. See ``transforms.type_rules`` for result types.
- comparisons ``== != < <= > >=``; boolean ``&``, ``|``, ``~`` (use these, not and/or/not).
- ``coalesce(e, ...)``, ``e.fill_null(v)``, ``e.is_null()``, ``e.is_not_null()``
- ``e.isin([v, ...])``: non-null constants of ``e``'s kind; null when ``e`` is null, else whether a value
  equals it (SQL's ``IN``)
- ``when(cond, value).when(...).otherwise(value)`` (``.end()`` for a null default)
- strings: ``e.str.lower()``, ``.upper()``, ``.length()`` (code points), ``.trim()`` (spaces only),
  ``.substring(start, length=None)`` (1-based start), ``.contains(s)``, ``.starts_with(s)``,
  ``.ends_with(s)``, ``concat(a, b, ...)`` / ``e.str.concat(b, ...)``
- timestamps: ``e.dt.year()``, ``.month()``, ``.day()``, ``.hour()``, ``.minute()``,
  ``.day_of_week()`` (ISO: Monday 1 .. Sunday 7), always in UTC whatever the session time zone.

Null semantics are SQL's: any operator or function with a null input gives null (comparisons too:
``null == null`` is null), except ``&``/``|`` which use three-valued logic (``False & null`` is False,
``True | null`` is True), ``coalesce``, ``is_null``/``is_not_null`` and ``when`` (``isin`` is null only
for a null input). A filter keeps the
rows where it is True (null drops the row). NaN is not given special treatment: avoid it.

Casts (with the source type known, see ``transforms.type_rules.cast_allowed``): float -> integer truncates
toward zero; string -> number accepts only trimmed decimal text (``"12"``, ``"-1.5e3"``), anything else
is null; a value out of the target's range is null; Bool -> number is 1/0; integer -> Bool is ``!= 0``;
integer/Bool -> String is decimal text / ``"true"``/``"false"``.

Structural equality is ``a.same_as(b)`` (``==`` builds an expression). ``to_spec``/``from_spec``
round-trip nodes through JSON-safe dicts; ``Aggregation.to_spec``/``Aggregation.from_spec`` likewise.

Aggregations: see ``transforms.aggregation`` for the exact window definition ``(t - window, t]``,
functions, null handling and output types.
"""

from transforms.aggregation import FUNCTIONS, Aggregation, window_name
from transforms.ir import (
    NODE_TYPES,
    Alias,
    BinaryOp,
    Case,
    Cast,
    Coalesce,
    Column,
    Concat,
    Contains,
    DatePart,
    EndsWith,
    Expr,
    IsIn,
    IsNotNull,
    IsNull,
    Length,
    Literal,
    Lower,
    StartsWith,
    Substring,
    Trim,
    UnaryOp,
    Upper,
    coalesce,
    col,
    concat,
    from_spec,
    lit,
    to_spec,
    when,
)
from transforms.type_rules import infer_type, output_name

__all__ = [
    "FUNCTIONS",
    "NODE_TYPES",
    "Aggregation",
    "Alias",
    "BinaryOp",
    "Case",
    "Cast",
    "Coalesce",
    "Column",
    "Concat",
    "Contains",
    "DatePart",
    "EndsWith",
    "Expr",
    "IsIn",
    "IsNotNull",
    "IsNull",
    "Length",
    "Literal",
    "Lower",
    "StartsWith",
    "Substring",
    "Trim",
    "UnaryOp",
    "Upper",
    "coalesce",
    "col",
    "concat",
    "from_spec",
    "infer_type",
    "lit",
    "output_name",
    "to_spec",
    "when",
    "window_name",
]
