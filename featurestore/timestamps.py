"""Time, defined once: stored as an integer number of microseconds since 1970-01-01 UTC, and accepted
as input by one rule on every path (push, Kafka messages, lookups' request data, source columns).

Every store, engine and stream path converts through this module, so a value means the same instant
everywhere:

- a naive datetime or timestamp column is UTC; a zoned one is converted to UTC;
- finer units (nanoseconds) are floored to the microsecond at or before the instant, negative values
  included: -1,500 ns is -2 µs, never -1 µs (truncation) and never an error;
- dates are midnight UTC;
- stored values may span Python's datetime range, years 1 to 9999 (``MIN_US`` .. ``MAX_US``).

The Arrow type of every stored time is ``TS`` (``timestamp[us, tz=UTC]``).

Accepted input (``parse_instant`` for one value, ``instant_column`` for an Arrow column,
``check_instants`` for a timestamp column read from a source):

- ISO 8601 text (a time without a zone is UTC), a datetime or date, a timestamp or date column;
- an integer (JSON, Python, or an integer column) is epoch MILLISECONDS: ``1700000000000`` is
  2023-11-14T22:13:20Z; never seconds, microseconds or nanoseconds;
- ``true``/``false`` and floats are never instants;
- the instant must lie in ``1678-01-01T00:00:00Z <= t < 2262-01-01T00:00:00Z`` (``INPUT_MIN`` ..
  ``INPUT_END``), so every output (pandas' ``datetime64[ns]`` included) can carry it.

Anything else is an ``InvalidInputError`` naming the field (the REST API answers 422, a stream job
dead-letters the message, materialization stops naming the source column).
"""

from __future__ import annotations

import numbers
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from featurestore.errors import InvalidInputError

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def as_utc(t: datetime) -> datetime:
    """``t`` as an aware UTC datetime (naive means UTC)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def to_us(t: datetime) -> int:
    """Microseconds since the epoch (naive means UTC)."""
    return (as_utc(t) - EPOCH) // _US


def from_us(us: int) -> datetime:
    """The aware UTC datetime of ``us`` microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=us)


MIN_US = to_us(datetime(1, 1, 1, tzinfo=UTC))
MAX_US = to_us(datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC))


def column_us(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A timestamp (any unit, naive or zoned) or date column as ``TS``, by the rules above."""
    t = column.type
    if pa.types.is_date(t):
        return pc.cast(pc.cast(column, pa.timestamp("us")), TS)
    if not pa.types.is_timestamp(t):
        raise TypeError(f"expected a timestamp or date column, got {t}")
    if t == TS:
        return column
    if t.unit == "ns":
        # Floor on the zone-free values (a plain cast would truncate towards zero).
        naive = pc.cast(column, pa.timestamp("ns"))
        column = pc.cast(pc.floor_temporal(naive, unit="microsecond"), pa.timestamp("us"))
    return pc.cast(column, TS)


# -- accepted input ----------------------------------------------------------------------------------
INPUT_MIN = datetime(1678, 1, 1, tzinfo=UTC)
INPUT_END = datetime(2262, 1, 1, tzinfo=UTC)  # exclusive
INPUT_RANGE = "1678-01-01T00:00:00Z <= t < 2262-01-01T00:00:00Z"
INPUT_MIN_US, INPUT_END_US = to_us(INPUT_MIN), to_us(INPUT_END)
_MIN_MS, _END_MS = INPUT_MIN_US // 1000, INPUT_END_US // 1000  # exact: whole seconds
ACCEPTED = "ISO 8601 text or an integer of epoch milliseconds"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _out_of_range(what: str, shown: str) -> InvalidInputError:
    return InvalidInputError(f"{what} has {shown}, outside the accepted time range {INPUT_RANGE}")


def from_epoch_ms(ms: int, what: str) -> datetime:
    """The instant of an integer of epoch milliseconds, in the accepted range."""
    if not _MIN_MS <= ms < _END_MS:
        raise _out_of_range(what, f"{ms} (epoch milliseconds)")
    return EPOCH + timedelta(milliseconds=ms)


def check_instant(t: datetime, what: str, shown: str | None = None) -> datetime:
    """``t`` as aware UTC, if it lies in the accepted range (naive means UTC)."""
    try:
        utc = as_utc(t)
    except OverflowError:  # a zone offset pushing year 1 or 9999 past Python's range
        raise _out_of_range(what, shown or t.isoformat()) from None
    if not INPUT_MIN <= utc < INPUT_END:
        raise _out_of_range(what, shown or t.isoformat())
    return utc


def parse_instant(value: Any, what: str) -> datetime:
    """One input instant (ISO 8601 text, integer epoch milliseconds, a datetime or a date) as an aware
    UTC datetime, or ``InvalidInputError`` starting with ``what`` (e.g. "field 'ts'")."""
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(f"{what} should be an ISO 8601 timestamp (or an integer of epoch "
                                    f"milliseconds), got {_show(value)}") from None
        return check_instant(t, what, _show(value))
    if isinstance(value, datetime):
        return check_instant(value, what)
    if isinstance(value, date):
        return check_instant(datetime(value.year, value.month, value.day), what)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return from_epoch_ms(int(value), what)
    raise InvalidInputError(f"{what} should be a timestamp ({ACCEPTED}), got {_show(value)}"
                            + (" (true/false are not timestamps)" if isinstance(value, bool) else ""))


def check_instants(column: pa.Array | pa.ChunkedArray, what: str) -> pa.Array | pa.ChunkedArray:
    """``column`` (``TS``) if every value lies in the accepted range, else ``InvalidInputError``
    naming the first value outside it."""
    if len(column) == column.null_count:
        return column
    bounds = pc.min_max(column.cast(pa.int64()))
    for us in (bounds["min"].as_py(), bounds["max"].as_py()):
        if not INPUT_MIN_US <= us < INPUT_END_US:
            shown = from_us(us).isoformat() if MIN_US <= us <= MAX_US else f"{us} microseconds since the epoch"
            raise _out_of_range(what, shown)
    return column


def instant_column(column: pa.Array | pa.ChunkedArray, what: str) -> pa.Array | pa.ChunkedArray:
    """An input column of instants as ``TS`` by the rules above: ISO 8601 text, integers of epoch
    milliseconds, timestamps or dates (nulls stay null); ``InvalidInputError`` naming ``what``."""
    t = column.type
    if pa.types.is_dictionary(t):
        column, t = column.cast(t.value_type), t.value_type
    if pa.types.is_null(t):
        return column.cast(TS)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.array([None if v is None else parse_instant(v, what) for v in column.to_pylist()], TS)
    if pa.types.is_integer(t):
        if len(column) > column.null_count:
            bounds = pc.min_max(column)
            for ms in (bounds["min"].as_py(), bounds["max"].as_py()):
                from_epoch_ms(ms, what)
        return pc.multiply(column.cast(pa.int64()), 1000).cast(pa.timestamp("us")).cast(TS)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return check_instants(column_us(column), what)
    hint = " (true/false are not timestamps)" if pa.types.is_boolean(t) else ""
    raise InvalidInputError(f"{what} should hold timestamps ({ACCEPTED}), got {t} values{hint}")
