"""Windowed aggregations: ``Aggregation(column=, function=, window=)``.

The value of an aggregation at time ``t`` (for one entity key) covers the events of that key whose
event time ``e`` satisfies ``t - window < e <= t`` (lower end excluded, upper end included); with
``window=None`` (lifetime) every event with ``e <= t``. Timestamps have microsecond precision, so the
window is exactly the events with ``t - window + 1us <= e <= t``. Windows slide continuously (no
tiles). Events with a null event time or a null key never count; a point with a null time sees no
events.

Functions (nulls in the column are ignored, as in SQL, except by ``last``):

=========  =========================================================  ============================
function   value                                                      type
=========  =========================================================  ============================
sum        sum of the non-null values; **null** if there are none     Int64 for integers, else
           (SQL semantics: an empty window has sum null, not 0)       Float64
count      number of non-null values; 0 for an empty window           Int64
mean       arithmetic mean of the non-null values; null if none       Float64
min, max   smallest / largest non-null value; null if none            the column's type
stddev     sample standard deviation (n - 1); null for < 2 values     Float64
last       the value of the latest event in the window (even if that  the column's type
           value is null); ties on event time go to the largest
           created time when a created column is given (a null
           created time is the smallest), then arbitrary; null if
           the window has no event
=========  =========================================================  ============================

Default name: ``{column}_{function}_{window}``, the window written in the largest unit that divides
it exactly (``7d``, ``1h``, ``30m``, ``90s``) or ``lifetime``: ``amount_sum_1h``. Windows must be a
positive whole number of seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from featurestore import types as _t
from featurestore.errors import DefinitionError
from featurestore.types import DataType

FUNCTIONS = ("sum", "count", "mean", "min", "max", "stddev", "last")
NUMERIC_ONLY = frozenset({"sum", "mean", "stddev"})
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def window_name(window: timedelta | None) -> str:
    """``timedelta(hours=1)`` -> ``"1h"``, ``timedelta(minutes=90)`` -> ``"90m"``, ``None`` -> ``"lifetime"``."""
    if window is None:
        return "lifetime"
    seconds = _window_seconds(window, "window")
    for unit, size in _UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def window_micros(window: timedelta) -> int:
    """The window length in microseconds (exact integer)."""
    return window.days * 86_400_000_000 + window.seconds * 1_000_000 + window.microseconds


def _window_seconds(window: timedelta, who: str) -> int:
    if not isinstance(window, timedelta):
        raise DefinitionError(f"{who}: window must be a timedelta or None, got {window!r}")
    if window <= timedelta(0):
        raise DefinitionError(f"{who}: window must be positive, got {window}")
    if window.microseconds:
        raise DefinitionError(f"{who}: window must be a whole number of seconds, got {window}")
    return window.days * 86400 + window.seconds


@dataclass(frozen=True)
class Aggregation:
    """One windowed aggregate of a column of the (transformed) view.

    >>> from datetime import timedelta
    >>> Aggregation(column="amount", function="sum", window=timedelta(hours=1)).name
    'amount_sum_1h'
    """

    column: str
    function: str
    window: timedelta | None = None
    name: str | None = None

    def __post_init__(self):
        who = f"Aggregation({self.column!r}, {self.function!r}, {window_name_safe(self.window)})"
        if not isinstance(self.column, str) or not self.column:
            raise DefinitionError(f"{who}: column must be a non-empty string", obj=who)
        if self.function not in FUNCTIONS:
            raise DefinitionError(
                f"{who}: unknown function {self.function!r}; known: {', '.join(FUNCTIONS)}",
                obj=who,
                field=self.column,
            )
        if self.window is not None:
            try:
                _window_seconds(self.window, who)
            except DefinitionError as e:
                raise DefinitionError(str(e), obj=who, field=self.column) from None
        if self.name is None:
            object.__setattr__(self, "name", f"{self.column}_{self.function}_{window_name(self.window)}")
        elif not isinstance(self.name, str) or not self.name:
            raise DefinitionError(f"{who}: name must be a non-empty string", obj=who, field=self.column)

    @property
    def window_micros(self) -> int | None:
        return None if self.window is None else window_micros(self.window)

    def output_type(self, schema: Mapping[str, DataType], *, obj: str | None = None) -> DataType:
        """The result type given the view's columns; raises DefinitionError naming the aggregation
        for an unknown column or a function that does not fit the column's type."""
        who = obj or f"aggregation {self.name!r}"
        if self.column not in schema:
            raise DefinitionError(
                f"{who}: unknown column {self.column!r} (columns: {', '.join(sorted(schema)) or 'none'})",
                obj=who,
                field=self.column,
            )
        t = schema[self.column]
        fam = "list" if isinstance(t, _t.Array) else t.family
        numeric = fam in ("integer", "float")
        if self.function in NUMERIC_ONLY and not numeric:
            raise DefinitionError(
                f"{who}: {self.function} needs a numeric column, {self.column!r} is {t!r}",
                obj=who,
                field=self.column,
            )
        if self.function in ("min", "max") and fam == "list":
            raise DefinitionError(
                f"{who}: {self.function} of an array column {self.column!r} is not defined",
                obj=who,
                field=self.column,
            )
        if self.function == "count":
            return _t.Int64
        if self.function == "sum":
            return _t.Int64 if fam == "integer" else _t.Float64
        if self.function in ("mean", "stddev"):
            return _t.Float64
        return t

    def to_spec(self) -> dict:
        """JSON-safe form; the window is stored in whole seconds (``null`` for lifetime)."""
        return {
            "column": self.column,
            "function": self.function,
            "window_seconds": None if self.window is None else _window_seconds(self.window, self.name),
            "name": self.name,
        }

    @classmethod
    def from_spec(cls, spec: Mapping) -> Aggregation:
        unknown = set(spec) - {"column", "function", "window_seconds", "name"}
        if unknown:
            raise DefinitionError(f"unknown fields {sorted(unknown)} in aggregation spec")
        ws = spec.get("window_seconds")
        return cls(
            column=spec["column"],
            function=spec["function"],
            window=None if ws is None else timedelta(seconds=ws),
            name=spec.get("name"),
        )


def window_name_safe(window: object) -> str:
    try:
        return window_name(window)  # type: ignore[arg-type]
    except DefinitionError:
        return repr(window)


def value_aliases(aggregations: Sequence[Aggregation], keys: Sequence[str], who: str) -> dict[str, str]:
    """The columns the aggregations read, each with the internal alias the engines' plans give it;
    raises when there is nothing to aggregate or nothing to group by."""
    if not aggregations:
        raise DefinitionError(f"{who} needs at least one aggregation")
    if not keys:
        raise DefinitionError(f"{who} needs at least one key column")
    aliases: dict[str, str] = {}
    for a in aggregations:
        aliases.setdefault(a.column, f"__fs_v{len(aliases)}")
    return aliases
