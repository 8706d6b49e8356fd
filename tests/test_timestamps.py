"""One rule for time on every path (featurestore.timestamps): naive is UTC, nanoseconds floor to the
microsecond at or before the instant (negative values included), years 1 to 9999."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.offline_delta import DeltaOfflineStore, DeltaOfflineStoreConfig
from connectors.online_codec import timestamps_us
from featurestore import timestamps as ts
from featurestore.retrieval import normalise_timestamps

UTC = timezone.utc
NS = [-1_500, -1_000, -1, 0, 1, 1_500, 1_700_000_000_123_456_789]
FLOORED_US = [-2, -1, -1, 0, 0, 1, 1_700_000_000_123_456]


def _ns(tz: str | None = "UTC") -> pa.Array:
    return pa.array(NS, pa.timestamp("ns", tz=tz))


@pytest.mark.parametrize("tz", [None, "UTC", "America/New_York"])
def test_nanoseconds_floor_to_the_microsecond_before(tz):
    out = ts.column_us(_ns(tz))
    assert out.type == ts.TS
    assert out.cast(pa.int64()).to_pylist() == FLOORED_US  # the same instants, whatever the zone


def test_every_store_and_the_export_use_the_same_rule(tmp_path: Path):
    assert timestamps_us(_ns(), name="t", nullable=False).tolist() == FLOORED_US  # online rows
    entity = normalise_timestamps(pa.table({"t": _ns(None)}), "t")  # export entity times
    assert entity.column("t").cast(pa.int64()).to_pylist() == FLOORED_US
    store = DeltaOfflineStore(DeltaOfflineStoreConfig(), tmp_path, "p")  # offline rows
    store.append("v", pa.table({"id": list(range(len(NS))), "event_timestamp": _ns()}), "event_timestamp")
    got = store.read("v").sort_by("id").column("event_timestamp").cast(pa.int64()).to_pylist()
    assert got == FLOORED_US


def test_naive_is_utc_dates_are_midnight_and_the_range_is_years_1_to_9999():
    naive = datetime(2024, 5, 1, 12, 0)
    assert ts.to_us(naive) == ts.to_us(naive.replace(tzinfo=UTC))
    assert ts.to_us(datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))) == ts.to_us(naive)
    assert ts.column_us(pa.array([date(2024, 5, 1)])).to_pylist() == [datetime(2024, 5, 1, tzinfo=UTC)]
    assert ts.from_us(ts.MIN_US) == datetime(1, 1, 1, tzinfo=UTC)
    assert ts.from_us(ts.MAX_US) == datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert ts.to_us(ts.from_us(-2)) == -2
    edges = pa.array([ts.MIN_US, ts.MAX_US], pa.timestamp("us"))
    assert timestamps_us(edges, name="t", nullable=False).tolist() == [ts.MIN_US, ts.MAX_US]
