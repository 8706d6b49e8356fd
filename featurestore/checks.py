"""Data checks a feature view declares, and what a run's counts make of them.

>>> from datetime import timedelta
>>> from transforms import col
>>> checks = [Check(col("amount") >= 0, name="amount_non_negative", on_fail="drop"),
...           Check(col("country").isin(["US", "DE", "FR"]), on_fail="warn"),
...           Check.not_null("user_id"), Check.row_count(min=1000), Check.fresh(max_age=timedelta(hours=2))]
>>> [c.name for c in checks]
['amount_non_negative', "col('country').isin(['US', 'DE', 'FR'])", 'user_id_not_null', 'row_count', 'fresh']

**Row checks** (``Check(expr)``, ``Check.not_null(column)``) are Bool expressions of the transform IR
over the view's rows after its filter and transforms (for an aggregation view: its events, before they
are aggregated). A row fails a check when the expression is false **or null** (``transforms.checks``);
``Check.not_null`` is how nullness itself is checked. Every check sees every row the filter keeps, so
a row failing two checks counts for both. What a failing row does depends on ``on_fail``:

- ``"warn"`` (the default): the row is written like the others; the failures are counted;
- ``"drop"``: the row is kept out of both stores (and out of exports that read the source: a drop
  check is the last step of the view's row pipeline, ``ViewData.checks``) and put, with the name of
  the first drop check it fails, in the view's quarantine table of the offline store, which each run
  replaces for its interval (a stream job dead-letters it instead, reason ``check <name> failed``);
- ``"fail"``: a materialization with any failing row stops before writing anything to the offline or
  online store (``CheckFailedError``; the stopped run is still recorded in the quality area); a stream
  job, which cannot stop, dead-letters the row as for ``"drop"``.

Rows are checked where they come in: materialization checks the source's rows, a stream job its
events; rows a stream job or ``push`` appended are not checked again by materialization (pushed rows
are validated by type only). An integer overflow inside a check raises on the batch engines, as in a
transform; in a stream job the check's value is null there, so the event fails the check.

**Run checks** judge a materialization run as a whole, on the rows it reads from the source (after the
filter, before row checks drop any): ``Check.row_count(min=, max=)`` bounds their number and
``Check.fresh(max_age=)`` wants the newest event time no older than ``max_age`` at the run's end
(the interval's end, or now if that is earlier). They take ``"warn"`` or ``"fail"``. Stream commits
hold a handful of events each, so they record row checks only.

Every run's outcome is one entry per check in the quality record (``featurestore.quality_runs``):
``{"name", "on_fail", "rows_checked", "rows_failed", "action", "detail"}``, action ``passed``,
``warned``, ``dropped`` or ``failed``; a run check that fails counts every row of the run as failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Sequence

from featurestore.errors import DefinitionError
from transforms import ir

ON_FAIL = ("drop", "warn", "fail")
ROW, ROW_COUNT, FRESH = "row", "row_count", "fresh"
_ACTION = {"warn": "warned", "drop": "dropped", "fail": "failed"}


@dataclass(frozen=True, eq=False)
class Check:
    """A data check of a feature view (see the module docs). ``Check(expr, name=, on_fail=)`` is a row
    check; ``Check.not_null``, ``Check.row_count`` and ``Check.fresh`` make the others."""

    expr: ir.Expr | None = None
    name: str | None = None
    on_fail: str = "warn"
    kind: str = ROW
    min: int | None = None
    max: int | None = None
    max_age: timedelta | None = None

    def __post_init__(self) -> None:
        if self.kind not in (ROW, ROW_COUNT, FRESH):
            raise DefinitionError(f"unknown check kind {self.kind!r}")
        if self.kind == ROW and not isinstance(self.expr, ir.Expr):
            raise DefinitionError(f"Check takes a Bool expression such as col(\"amount\") >= 0, got {self.expr!r}",
                                  field="checks")
        name = self.name
        if name is None:
            name = repr(self.expr) if self.kind == ROW else self.kind
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError(f"a check's name must be a non-empty string, got {self.name!r}", field="checks")
        object.__setattr__(self, "name", name)
        allowed = ON_FAIL if self.kind == ROW else ("warn", "fail")
        if self.on_fail not in allowed:
            raise DefinitionError(f"check {name!r}: on_fail must be one of {', '.join(map(repr, allowed))}, "
                                  f"got {self.on_fail!r}", obj=name, field="on_fail")
        if self.kind == ROW_COUNT:
            for label, bound in (("min", self.min), ("max", self.max)):
                if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 0):
                    raise DefinitionError(f"check {name!r}: {label} must be a non-negative int, got {bound!r}",
                                          obj=name, field=label)
            if self.min is None and self.max is None:
                raise DefinitionError(f"check {name!r}: row_count needs min=, max= or both", obj=name)
            if self.min is not None and self.max is not None and self.min > self.max:
                raise DefinitionError(f"check {name!r}: min {self.min} is above max {self.max}", obj=name)
        if self.kind == FRESH and (not isinstance(self.max_age, timedelta) or self.max_age <= timedelta(0)):
            raise DefinitionError(f"check {name!r}: max_age must be a positive timedelta, got {self.max_age!r}",
                                  obj=name, field="max_age")

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def not_null(cls, column: str, *, name: str | None = None, on_fail: str = "warn") -> "Check":
        """Rows whose ``column`` is null fail."""
        return cls(ir.col(column).is_not_null(), name=name or f"{column}_not_null", on_fail=on_fail)

    @classmethod
    def row_count(cls, min: int | None = None, max: int | None = None, *, name: str | None = None,
                  on_fail: str = "warn") -> "Check":
        """A run reads at least ``min`` and at most ``max`` rows."""
        return cls(None, name=name, on_fail=on_fail, kind=ROW_COUNT, min=min, max=max)

    @classmethod
    def fresh(cls, max_age: timedelta, *, name: str | None = None, on_fail: str = "warn") -> "Check":
        """A run's newest event is at most ``max_age`` old at the run's end."""
        return cls(None, name=name, on_fail=on_fail, kind=FRESH, max_age=max_age)

    @property
    def is_row(self) -> bool:
        return self.kind == ROW

    # -- specs ----------------------------------------------------------------------------------
    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind, "name": self.name, "on_fail": self.on_fail}
        if self.kind == ROW:
            spec["expr"] = ir.to_spec(self.expr)
        elif self.kind == ROW_COUNT:
            spec.update(min=self.min, max=self.max)
        else:
            spec["max_age_seconds"] = self.max_age.total_seconds()
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Check":
        kind = spec.get("kind", ROW)
        common = {"name": spec["name"], "on_fail": spec.get("on_fail", "warn"), "kind": kind}
        if kind == ROW:
            return cls(ir.from_spec(spec["expr"]), **common)
        if kind == ROW_COUNT:
            return cls(None, min=spec.get("min"), max=spec.get("max"), **common)
        return cls(None, max_age=timedelta(seconds=spec["max_age_seconds"]), **common)

    def __repr__(self) -> str:
        return f"Check(name={self.name!r}, on_fail={self.on_fail!r})"


def check_list(view: str, checks: Sequence[Any]) -> tuple[Check, ...]:
    """``checks`` as a tuple of Check objects with distinct names, else a DefinitionError naming the view."""
    out = tuple(checks)
    for c in out:
        if not isinstance(c, Check):
            raise DefinitionError(f"FeatureView {view!r}: checks takes Check objects, got {c!r}", obj=view,
                                  field="checks")
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DefinitionError(f"FeatureView {view!r}: check {dupes[0]!r} is declared twice (give each a name=)",
                              obj=view, field="checks")
    return out


@dataclass(frozen=True)
class CheckCounts:
    """What an engine counted over a run's rows: how many (``rows``), how many failed each row check
    (by name) and the newest event time (None without rows)."""

    rows: int
    failed: dict[str, int]
    latest: datetime | None


def outcomes(checks: Sequence[Check], counts: CheckCounts, end: datetime) -> list[dict[str, Any]]:
    """One quality-record entry per check (see the module docs); ``end`` is the run's end, for ``fresh``."""
    out = []
    for c in checks:
        if c.is_row:
            failed = counts.failed.get(c.name, 0)
            detail = f"{failed} of {counts.rows} rows failed"
        else:
            failing, detail = _run_check(c, counts, end)
            failed = counts.rows if failing else 0
        failing = failed > 0 if c.is_row else failing
        out.append({"name": c.name, "on_fail": c.on_fail, "rows_checked": counts.rows, "rows_failed": failed,
                    "action": _ACTION[c.on_fail] if failing else "passed", "detail": detail})
    return out


def _run_check(c: Check, counts: CheckCounts, end: datetime) -> tuple[bool, str]:
    """Whether run check ``c`` fails on ``counts``, and what it saw."""
    if c.kind == ROW_COUNT:
        failing = (c.min is not None and counts.rows < c.min) or (c.max is not None and counts.rows > c.max)
        wanted = " and ".join(w for w in (f"at least {c.min}" if c.min is not None else "",
                                          f"at most {c.max}" if c.max is not None else "") if w)
        return failing, f"{counts.rows} rows, expected {wanted}"
    oldest_allowed = end - c.max_age
    newest = "no rows" if counts.latest is None else f"newest event {counts.latest.isoformat()}"
    return (counts.latest is None or counts.latest < oldest_allowed,
            f"{newest}, expected one at or after {oldest_allowed.isoformat()}")


def failures(view: str, results: Sequence[dict[str, Any]]) -> str | None:
    """The message of a run stopped by its ``fail`` checks, None when none failed."""
    failed = [r for r in results if r["action"] == "failed"]
    if not failed:
        return None
    parts = "; ".join(f"check {r['name']!r} failed ({r['detail']})" for r in failed)
    return f"feature view {view!r}: {parts}"


def stream_outcomes(checks: Sequence[tuple[str, str]], rows: int, failed: dict[str, int]) -> list[dict[str, Any]]:
    """Entries of a stream commit for row checks ``(name, on_fail)`` over ``rows`` events: a failing
    event of a drop or fail check was dead-lettered (action ``dropped``), of a warn check written
    (``warned``)."""
    action = {"warn": "warned", "drop": "dropped", "fail": "dropped"}
    return [{"name": name, "on_fail": on_fail, "rows_checked": rows, "rows_failed": failed.get(name, 0),
             "action": action[on_fail] if failed.get(name, 0) else "passed",
             "detail": f"{failed.get(name, 0)} of {rows} rows failed"}
            for name, on_fail in checks]
