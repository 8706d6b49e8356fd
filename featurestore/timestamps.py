"""Time, defined once: an instant is an integer number of microseconds since 1970-01-01 UTC.

Every store, engine and stream path converts through this module, so a value means the same instant
everywhere:

- a naive datetime or timestamp column is UTC; a zoned one is converted to UTC;
- finer units (nanoseconds) are floored to the microsecond at or before the instant, negative values
  included: -1,500 ns is -2 µs, never -1 µs (truncation) and never an error;
- dates are midnight UTC;
- the range is Python's datetime range, years 1 to 9999 (``MIN_US`` .. ``MAX_US``).

The Arrow type of every stored time is ``TS`` (``timestamp[us, tz=UTC]``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc

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
