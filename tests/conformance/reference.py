"""Brute-force Python reference for transforms and windowed aggregations.

Written straight from the documented semantics (``transforms/__init__.py``,
``transforms/aggregation.py``), with no cleverness: every engine must agree with it.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from featurestore import types as T
from transforms import ir
from transforms.aggregation import Aggregation
from transforms.compile_duckdb import FLOAT_TEXT, INT_TEXT
from transforms.type_rules import _Checker

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class AnyOf:
    """More than one answer is right (``last`` with ties on event and created time)."""

    values: tuple


def _trunc_rem(a, b):
    if isinstance(a, int) and isinstance(b, int):
        r = abs(a) % abs(b)
        return -r if a < 0 else r
    return math.fmod(a, b)


class Evaluator:
    def __init__(self, schema):
        self.schema = schema
        self.checker = _Checker(schema, None)

    def type_of(self, node):
        return self.checker.t(node)

    def ev(self, node, row):
        return getattr(self, f"e_{type(node).__name__}")(node, row)

    def e_Column(self, n, row):
        return row[n.name]

    def e_Literal(self, n, row):
        return n.value

    def e_Alias(self, n, row):
        return self.ev(n.expr, row)

    def e_Cast(self, n, row):
        x = self.ev(n.expr, row)
        if x is None:
            return None
        src, dst = self.type_of(n.expr), n.to
        if src is None or src == dst:
            return x
        df = dst.family
        if df == "integer":
            if src.family == "string":
                s = x.strip(" ")
                if not re.fullmatch(INT_TEXT, s):
                    return None
                v = int(s)
            elif src.family == "float":
                if math.isnan(x) or math.isinf(x):
                    return None
                v = int(x)  # truncation toward zero
            else:
                v = int(x)
            lo, hi = (-(2**63), 2**63 - 1) if dst == T.Int64 else (-(2**31), 2**31 - 1)
            return v if lo <= v <= hi else None
        if df == "float":
            if src.family == "string":
                s = x.strip(" ")
                return float(s) if re.fullmatch(FLOAT_TEXT, s) else None
            return float(x)
        if df == "string":
            if isinstance(x, bool):
                return "true" if x else "false"
            return str(x)
        if df == "bool":
            return x != 0
        raise AssertionError(f"cast {src} -> {dst}")

    def e_BinaryOp(self, n, row):
        op = n.op
        a, b = self.ev(n.left, row), self.ev(n.right, row)
        if op == "&":
            if a is False or b is False:
                return False
            return None if a is None or b is None else True
        if op == "|":
            if a is True or b is True:
                return True
            return None if a is None or b is None else False
        if a is None or b is None:
            return None
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return None if b == 0 else float(a) / float(b)
        if op == "%":
            return None if b == 0 else _trunc_rem(a, b)
        return {
            "==": a == b,
            "!=": a != b,
            "<": a < b,
            "<=": a <= b,
            ">": a > b,
            ">=": a >= b,
        }[op]

    def e_UnaryOp(self, n, row):
        x = self.ev(n.operand, row)
        if x is None:
            return None
        return (not x) if n.op == "not" else -x

    def e_Coalesce(self, n, row):
        t = self.type_of(n)
        for a in n.args:
            v = self.ev(a, row)
            if v is not None:
                return float(v) if t is not None and t.family == "float" else v
        return None

    def e_IsNull(self, n, row):
        return self.ev(n.expr, row) is None

    def e_IsIn(self, n, row):
        x = self.ev(n.expr, row)
        return None if x is None else any(x == v.value for v in n.values)

    def e_IsNotNull(self, n, row):
        return self.ev(n.expr, row) is not None

    def _s(self, n, row, fn):
        x = self.ev(n.expr, row)
        return None if x is None else fn(x)

    def e_Lower(self, n, row):
        return self._s(n, row, str.lower)

    def e_Upper(self, n, row):
        return self._s(n, row, str.upper)

    def e_Length(self, n, row):
        return self._s(n, row, len)

    def e_Trim(self, n, row):
        return self._s(n, row, lambda s: s.strip(" "))

    def e_Substring(self, n, row):
        start = n.start - 1
        end = None if n.length is None else start + n.length
        return self._s(n, row, lambda s: s[start:end])

    def e_Concat(self, n, row):
        vals = [self.ev(a, row) for a in n.args]
        return None if any(v is None for v in vals) else "".join(vals)

    def _two(self, n, row, other, fn):
        a, b = self.ev(n.expr, row), self.ev(other, row)
        return None if a is None or b is None else fn(a, b)

    def e_Contains(self, n, row):
        return self._two(n, row, n.pattern, lambda a, b: b in a)

    def e_StartsWith(self, n, row):
        return self._two(n, row, n.prefix, str.startswith)

    def e_EndsWith(self, n, row):
        return self._two(n, row, n.suffix, str.endswith)

    def e_DatePart(self, n, row):
        x = self.ev(n.expr, row)
        if x is None:
            return None
        u = x.astimezone(timezone.utc)
        return {
            "year": u.year,
            "month": u.month,
            "day": u.day,
            "hour": u.hour,
            "minute": u.minute,
            "day_of_week": u.isoweekday(),
        }[n.part]

    def e_Case(self, n, row):
        t = self.type_of(n)
        for c, v in n.branches:
            if self.ev(c, row) is True:
                out = self.ev(v, row)
                break
        else:
            out = self.ev(n.otherwise, row)
        if out is not None and t is not None and t.family == "float":
            return float(out)
        return out


def evaluate(expr: ir.Expr, rows: list[dict], schema) -> list:
    e = Evaluator(schema)
    out = []
    for r in rows:
        v = e.ev(expr, r)
        t = e.type_of(expr)
        if v is not None and t is not None and t.family == "float":
            v = float(v)
        out.append(v)
    return out


def filter_rows(filter_expr: ir.Expr, rows: list[dict], schema) -> list[dict]:
    e = Evaluator(schema)
    return [r for r in rows if e.ev(filter_expr, r) is True]


def aggregate_at_points(
    events: list[dict],
    points: list[dict],
    keys: list[str],
    ts_col: str,
    aggregations: list[Aggregation],
    created_col: str | None = None,
    point_id: str = "__point_id",
) -> dict:
    """``{point_id: {aggregation name: value}}`` by scanning every event for every point."""
    out = {}
    for p in points:
        t = p[ts_col]
        pk = tuple(p[k] for k in keys)
        res = {}
        for a in aggregations:
            if t is None or any(k is None for k in pk):
                in_window = []
            else:
                lo = None if a.window is None else t - a.window
                in_window = [
                    e
                    for e in events
                    if e[ts_col] is not None
                    and tuple(e[k] for k in keys) == pk
                    and e[ts_col] <= t
                    and (lo is None or e[ts_col] > lo)
                ]
            vals = [e[a.column] for e in in_window if e[a.column] is not None]
            f = a.function
            if f == "count":
                res[a.name] = len(vals)
            elif not in_window and f == "last":
                res[a.name] = None
            elif f == "last":
                top = max(e[ts_col] for e in in_window)
                tied = [e for e in in_window if e[ts_col] == top]
                if created_col is not None:
                    def ckey(e):
                        c = e[created_col]
                        return (0, EPOCH) if c is None else (1, c)

                    best = max(ckey(e) for e in tied)
                    tied = [e for e in tied if ckey(e) == best]
                choices = tuple({_hashable(e[a.column]) for e in tied})
                res[a.name] = choices[0] if len(choices) == 1 else AnyOf(choices)
            elif not vals:
                res[a.name] = None
            elif f == "sum":
                res[a.name] = sum(vals) if all(isinstance(v, int) for v in vals) else math.fsum(vals)
            elif f == "mean":
                res[a.name] = math.fsum(vals) / len(vals)
            elif f == "min":
                res[a.name] = min(vals)
            elif f == "max":
                res[a.name] = max(vals)
            elif f == "stddev":
                res[a.name] = None if len(vals) < 2 else statistics.stdev([float(v) for v in vals])
            else:  # pragma: no cover
                raise AssertionError(f)
        out[p[point_id]] = res
    return out


def _hashable(v):
    return v


__all__ = ["AnyOf", "aggregate_at_points", "evaluate", "filter_rows", "timedelta"]
