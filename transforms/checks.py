"""Row checks as transform IR, so every engine compiles them with its own compiler.

A row check is a Bool expression over a view's rows; a row **fails** it when the expression is false
or null (SQL's three-valued logic: ``col("amount") >= 0`` fails a row whose amount is null; write
``col("amount").is_null() | (col("amount") >= 0)`` to let nulls pass, or check nullness on its own
with ``is_not_null()``). The expressions below are never null, so every engine counts and drops the
same rows:

- :func:`failed` — True when the row fails the check;
- :func:`first_failed` — the name of the first check (in the order given) the row fails, else null.

>>> from transforms import col
>>> failed(col("amount") >= 0)
~coalesce((col('amount') >= 0), False)
"""

from __future__ import annotations

from collections.abc import Sequence

from transforms.ir import Expr, coalesce, lit, when


def failed(check: Expr) -> Expr:
    """True when ``check`` is false or null for the row; never null."""
    return ~coalesce(check, lit(False))


def first_failed(checks: Sequence[tuple[str, Expr]]) -> Expr:
    """The name of the first ``(name, expression)`` the row fails, null when it fails none."""
    if not checks:
        raise ValueError("first_failed needs at least one check")
    (name, check), *rest = checks
    case = when(failed(check), lit(name))
    for name, check in rest:
        case = case.when(failed(check), lit(name))
    return case.end()
