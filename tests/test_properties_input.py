"""Property-based tests of the shared input rules (issue #13) at the SDK level: ``store.push``,
``store.get_online_features`` and the stream jobs' message parser (``featurestore.streaming.events.parse``)
judge a value the same way, by one set of rules, and mean the same instant by it.

The rules (``judge``, ``instant`` and ``feature_value`` below are their executable form, the oracle the
properties compare against; ``test_the_rules_as_written`` checks it on the values the rules name):

- an instant is ISO 8601 text (no zone is UTC) or an integer of epoch MILLISECONDS; bool and floats are
  never instants; accepted only from 1678-01-01T00:00:00Z up to, not including, 2262-01-01T00:00:00Z;
- Int64: an integer in range (bool is not an integer, 1.0 is not an integer, a string is never a
  number); Bool: true/false only (an integer is not a bool); String: a string (a number is not one);
- Float32/Float64: a number; NaN and +/-infinity are refused; Float32 refuses a finite value beyond its
  range; null is a value for a feature, never for a join key or the event time.

The generated values are hostile on purpose: the whole int64 range, pandas' nanoseconds and
microseconds of today, bools, NaN, infinities, huge and tiny floats, Unicode digit strings, numeric text,
ISO text in every year from 1 to 9999 and with zone offsets that cross the accepted range's ends.

Values whose verdict the rules leave open are not generated: an integer for a Float column beyond
2**24 (exactly representable either way), finite floats within half a unit of Float32's largest value
(round-to-nearest would bring them into range), and digit-only text that Python reads as ISO 8601's
basic format.
"""

from __future__ import annotations

import json
import math
import re
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from featurestore import FeatureStore
from featurestore import types as fstypes
from featurestore.errors import InvalidInputError
from featurestore.streaming import events
from featurestore.streaming.blueprint import EventColumn
from tests.repo_helpers import write_repo

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")

# ------------------------------------------------------------------------------------------ the repo

VIEW, PUSH_SOURCE, KEY, TIME = "live", "live_push", "driver_id", "ts"
FEATURES = {"speed": "Float32", "score": "Float64", "trips": "Int64", "label": "String", "active": "Bool",
            "seen": "Timestamp"}
CODE = f"""
from featurestore import Entity, FeatureView, Field, FileSource, PushSource
from featurestore.types import Bool, Float32, Float64, Int64, String, Timestamp

driver = Entity(name="driver", join_keys=["{KEY}"])
{PUSH_SOURCE} = PushSource(name="{PUSH_SOURCE}",
    batch_source=FileSource(name="live_src", path="data/live.parquet", timestamp_field="{TIME}"))
{VIEW} = FeatureView(name="{VIEW}", entities=[driver], source={PUSH_SOURCE}, schema=[
    {", ".join(f'Field(name="{name}", dtype={dtype})' for name, dtype in FEATURES.items())}])
"""
REFS = [f"{VIEW}:{name}" for name in FEATURES]


def applied_store(path: Path, *, online_store: str = "{type: sqlite, path: data/online.db}",
                  project: str = "props") -> FeatureStore:
    """The repo above at ``path``, applied, with an empty batch source and nothing online."""
    arrow = {"Float32": pa.float32(), "Float64": pa.float64(), "Int64": pa.int64(), "String": pa.string(),
             "Bool": pa.bool_(), "Timestamp": TS}
    empty = pa.table({KEY: pa.array([], pa.int64()), TIME: pa.array([], TS),
                      **{name: pa.array([], arrow[dtype]) for name, dtype in FEATURES.items()}})
    store = FeatureStore(write_repo(path, CODE, tables={"live": empty}, online_store=online_store,
                                    project=project))
    store.apply()
    return store


# ------------------------------------------------------------------------------------ the rules (oracle)

FIRST_INSTANT = datetime(1678, 1, 1, tzinfo=UTC)
END_INSTANT = datetime(2262, 1, 1, tzinfo=UTC)  # not included
FIRST_MS = (FIRST_INSTANT - EPOCH) // timedelta(milliseconds=1)
END_MS = (END_INSTANT - EPOCH) // timedelta(milliseconds=1)
INT64 = (-(2**63), 2**63 - 1)
FLOAT32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
# Finite doubles at or above this round to infinity in Float32; between FLOAT32_MAX and it they round
# down to FLOAT32_MAX, a band the rules leave open (see the module docs).
FLOAT32_OVERFLOW = float(2**128 - 2**103)  # FLOAT32_MAX plus half its last digit
EXACT_FLOAT_INT = 2**24
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:\d{2})?", re.ASCII)


class Refused(Exception):
    """The rules refuse the value; the text says why."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def instant(value: Any) -> datetime:
    """The instant ``value`` means, or ``Refused``."""
    if _is_int(value):
        if not FIRST_MS <= value < END_MS:
            raise Refused(f"{value} epoch ms is out of the accepted range")
        return EPOCH + timedelta(milliseconds=value)
    if isinstance(value, str):
        if not _ISO.fullmatch(value):
            raise Refused(f"{value!r} is not ISO 8601 text")
        try:
            t = datetime.fromisoformat(value)
            t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
        except (ValueError, OverflowError):
            raise Refused(f"{value!r} is not a valid time or is outside years 1..9999") from None
        if not FIRST_INSTANT <= t < END_INSTANT:
            raise Refused(f"{value!r} is out of the accepted range")
        return t
    raise Refused(f"{value!r} ({type(value).__name__}) is not a timestamp")


def float32(value: float) -> float:
    """``value`` rounded to Float32 (infinite beyond its range, as a cast would make it)."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def feature_value(dtype: str, value: Any) -> Any:
    """The value a feature of ``dtype`` stores for ``value`` (None for null), or ``Refused``."""
    if value is None:
        return None
    if dtype == "Int64":
        if not _is_int(value) or not INT64[0] <= value <= INT64[1]:
            raise Refused(f"{value!r} is not an Int64")
        return value
    if dtype in ("Float32", "Float64"):
        if _is_int(value) and abs(value) <= EXACT_FLOAT_INT:
            value = float(value)
        if not isinstance(value, float) or not math.isfinite(value):
            raise Refused(f"{value!r} is not a finite number")
        if dtype == "Float32":
            if abs(value) > FLOAT32_MAX:
                raise Refused(f"{value!r} is beyond Float32's range")
            return float32(value)
        return value
    if dtype == "String":
        if not isinstance(value, str):
            raise Refused(f"{value!r} is not a string")
        return value
    if dtype == "Bool":
        if not isinstance(value, bool):
            raise Refused(f"{value!r} is not a bool")
        return value
    if dtype == "Timestamp":
        return instant(value)
    raise AssertionError(dtype)


def join_key(value: Any) -> int:
    """The Int64 join key ``value`` names, or ``Refused``."""
    if value is None:
        raise Refused("a join key must have a value")
    return feature_value("Int64", value)


@dataclass(frozen=True)
class Row:
    """One pushed row as the rules read it."""

    key: int
    at: datetime
    values: dict[str, Any]  # every feature; None where null or not pushed


def judge(row: dict[str, Any]) -> Row:
    """The row the rules make of a pushed one (its columns: the key, the time, some features), or
    ``Refused``."""
    return Row(join_key(row[KEY]), instant(row[TIME]) if row[TIME] is not None else _no_time(),
               {name: feature_value(dtype, row.get(name)) for name, dtype in FEATURES.items()})


def _no_time() -> datetime:
    raise Refused("the event time must have a value")


def verdict(fn, *args) -> tuple[bool, Any]:
    """(accepted, result or the reason)."""
    try:
        return True, fn(*args)
    except Refused as exc:
        return False, str(exc)


# ------------------------------------------------------------------------------------- hostile values

def _ms(t: datetime) -> int:
    return (t - EPOCH) // timedelta(milliseconds=1)


NOW = datetime(2024, 5, 17, 12, 30, 15, 123000, tzinfo=UTC)
_offsets = st.sampled_from([None, UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5)),
                            timezone(timedelta(hours=14)), timezone(timedelta(hours=-12, minutes=-30))])


@st.composite
def iso_text(draw, years: tuple[int, int] = (1, 9999)) -> str:
    """ISO 8601 text of a wall-clock time in ``years`` (naive, UTC as ``Z`` or ``+00:00``, or an offset),
    to the second or the microsecond."""
    t = draw(st.datetimes(min_value=datetime(years[0], 1, 1), max_value=datetime(years[1], 12, 31, 23, 59, 59)))
    zone = draw(_offsets)
    text = t.replace(tzinfo=zone).isoformat(timespec=draw(st.sampled_from(["seconds", "microseconds"])))
    if zone is UTC and draw(st.booleans()):
        text = text.replace("+00:00", "Z")
    return text


_EDGES = ["1678-01-01T00:00:00Z", "1678-01-01T00:00:00", "1677-12-31T23:59:59.999999Z",
          "1678-01-01T00:30:00+01:00", "1677-12-31T23:30:00-01:00", "2261-12-31T23:59:59.999999Z",
          "2262-01-01T00:00:00Z", "2261-12-31T23:30:00-01:00", "2262-01-01T00:30:00+01:00",
          "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1970-01-01T00:00:00Z"]


def _not_basic_iso(digits: str) -> bool:
    """Digit strings Python reads as ISO 8601's basic format (``18051020405``) are left out: whether such
    text is a time or a number is left open."""
    try:
        datetime.fromisoformat(digits)
    except ValueError:
        return True
    return False


_numeric_text = st.sampled_from(["1700000000000", "1700000000000000000", "1700000000", " 1700000000000 ",
                                 "1_700_000_000_000", "1.7e12", "١٧٠٠٠٠٠٠٠٠٠٠٠", "１７００００００００００００",
                                 "-1", "0", "NaN", "", "now", "yesterday", "2024-13-01T00:00:00Z",
                                 "2024-01-01T25:00:00Z", "2024-1-1"])

epoch_ms_in_range = st.integers(FIRST_MS, END_MS - 1)
# Integers as clients send them: the whole int64 range, pandas' epoch nanoseconds (its datetime64[ns]
# range), epoch microseconds and seconds of recent times, milliseconds at and across the range's ends.
hostile_ints = st.one_of(
    st.integers(*INT64),
    st.integers(-(2**63) + 1, 2**63 - 1).filter(lambda ns: abs(ns) > 10**16),  # pandas ns
    st.integers(_ms(NOW) * 1000 - 10**12, _ms(NOW) * 1000 + 10**12),  # µs of today
    st.integers(_ms(NOW) // 1000 - 10**8, _ms(NOW) // 1000 + 10**8),  # s of today
    st.sampled_from([FIRST_MS - 1, FIRST_MS, END_MS - 1, END_MS, 0, -1, 1, 2**53, 2**53 + 1, 9 * 10**18,
                     1_700_000_000_000_000_000, INT64[0], INT64[1]]),
)
hostile_floats = st.one_of(
    st.floats(),  # NaN, infinities, subnormals, huge
    st.sampled_from([math.nan, math.inf, -math.inf, 1.7e12, 9e18, 1e39, -1e39, 3.5e38, FLOAT32_OVERFLOW, 1e308,
                     0.0, -0.0, 1.0, 1.5, 5e-324]),
)
hostile_text = st.one_of(_numeric_text, st.text(max_size=8), iso_text(), st.sampled_from(_EDGES),
                         st.integers(10**9, 10**18).map(str).filter(_not_basic_iso))


def either(*groups: st.SearchStrategy) -> st.SearchStrategy:
    """One of ``groups``, each as likely as the others (``st.one_of`` flattens nested choices, so a group
    of many alternatives would crowd out a group of one)."""
    return st.sampled_from(groups).flatmap(lambda group: group)


hostile_scalars = either(st.none(), st.booleans(), hostile_ints, hostile_floats, hostile_text)
hostile_times = either(hostile_ints, epoch_ms_in_range, hostile_floats, hostile_text, st.booleans() | st.none(),
                       iso_text(years=(1678, 2261)))


def _not_float32_edge(value: Any) -> bool:
    return not (isinstance(value, float) and FLOAT32_MAX < abs(value) < FLOAT32_OVERFLOW)


def _not_open_float_int(value: Any) -> bool:
    return not (_is_int(value) and abs(value) > EXACT_FLOAT_INT)


valid_ms = st.one_of(epoch_ms_in_range, st.integers(_ms(NOW) - 10**10, _ms(NOW) + 10**10))
valid_iso = iso_text(years=(1678, 2261))
valid_times = st.one_of(valid_ms, valid_iso)
VALID = {
    "Int64": st.integers(*INT64),
    "Float32": st.one_of(st.floats(-FLOAT32_MAX, FLOAT32_MAX), st.integers(-EXACT_FLOAT_INT, EXACT_FLOAT_INT)),
    "Float64": st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                         st.integers(-EXACT_FLOAT_INT, EXACT_FLOAT_INT)),
    "String": st.text(max_size=12),
    "Bool": st.booleans(),
    "Timestamp": valid_times,
}


_CONFUSIONS = {  # what a careless client sends for each type, besides anything else hostile
    "Float32": st.sampled_from([math.nan, math.inf, -math.inf, 1e39, -1e39, FLOAT32_OVERFLOW, 1e308, True, False,
                                "1.5", "NaN", "1e3"]),
    "Float64": st.sampled_from([math.nan, math.inf, -math.inf, True, False, "1.5", "NaN", "Infinity"]),
    "Int64": st.sampled_from([True, False, 1.0, -0.0, 1001.0, 1e19, "1001", "١٠٠١", "1_001", " 1001 ", "0x10"]),
    "String": st.one_of(st.integers(*INT64), st.floats(), st.booleans()),
    "Bool": st.sampled_from([0, 1, -1, 1.0, 0.0, "true", "false", "1", "", "yes"]),
}


def hostile_values(dtype: str) -> st.SearchStrategy:
    """Hostile values for a column of ``dtype`` (``"key"``, ``"time"`` or a feature type), most of them
    refused by the rules, leaving out the values the rules leave open."""
    if dtype in ("time", "Timestamp"):
        return hostile_times
    values = either(_CONFUSIONS[{"key": "Int64"}.get(dtype, dtype)], hostile_scalars)
    if dtype in ("Float32", "Float64"):
        values = values.filter(_not_open_float_int)
    return values.filter(_not_float32_edge) if dtype == "Float32" else values


def column_values(dtype: str, *, hostile: bool) -> st.SearchStrategy:
    """Values for a column of ``dtype``: valid ones (features are sometimes null), or (``hostile``) valid
    and hostile ones mixed."""
    valid = st.one_of(VALID[dtype], VALID[dtype], st.none()) if dtype not in ("key", "time") else (
        VALID["Int64"] if dtype == "key" else valid_times)
    return either(valid, hostile_values(dtype)) if hostile else valid


# --------------------------------------------------------------------- the stream parser's columns

STREAM_COLUMNS = [EventColumn(KEY, KEY, fstypes.Int64, True), EventColumn(TIME, TIME, fstypes.Timestamp, True),
                  *(EventColumn(name, name, fstypes.from_spec(dtype), False) for name, dtype in FEATURES.items())]


def parse_event(row: dict[str, Any]) -> tuple[bool, Any]:
    """The stream parser's verdict on ``row`` as a Kafka message (JSON text, NaN and infinities as the
    standard library writes them): (accepted, the row as the rules' ``Row`` or the reason)."""
    message = {c.json: row.get(c.json) for c in STREAM_COLUMNS}
    text = json.dumps(message)
    try:
        values = events.parse(text, STREAM_COLUMNS)
    except events.EventError as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - anything else would stop the stream job, not dead-letter
        raise AssertionError(f"the stream parser raised {type(exc).__name__} ({exc}) for {text}; a bad "
                             "message must be an EventError (a dead letter)") from exc
    parsed = dict(zip([c.json for c in STREAM_COLUMNS], values))
    as_time = lambda text: datetime.fromisoformat(text).replace(tzinfo=UTC)  # noqa: E731
    return True, Row(parsed[KEY], as_time(parsed[TIME]), {
        name: (as_time(parsed[name]) if dtype == "Timestamp" and parsed[name] is not None
               else float32(parsed[name]) if dtype == "Float32" and parsed[name] is not None
               else parsed[name])
        for name, dtype in FEATURES.items()})


def stored_row(store: FeatureStore, key: int) -> Row | None:
    """What a lookup of ``key`` answers, as a ``Row`` (None: no row)."""
    response = store.get_online_features(REFS, {KEY: [key]})
    at = response.event_timestamps["speed"][0]
    if at is None:
        return None
    return Row(response.values[KEY][0], at, {name: response.values[name][0] for name in FEATURES})


def same_values(a: Row, b: Row) -> bool:
    """Equal rows, values of the same type (True is not 1, 1 is not 1.0), NaN equal to NaN (so a wrongly
    accepted NaN shows as itself, not as a mismatch)."""
    def same(x, y):
        if type(x) is not type(y):
            return False
        return x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
    return a.key == b.key and a.at == b.at and all(same(a.values[n], b.values[n]) for n in FEATURES)


# ------------------------------------------------------------------------------------------ the tests

# One failure per test is shrunk and reported (several take minutes to shrink); each column is a test.
# Hypothesis' explain phase (which parts of a failing example matter) is left out: on these examples it
# can take minutes.
NO_EXPLAIN = [phase for phase in Phase if phase is not Phase.explain]
PROFILE = settings(max_examples=100, deadline=None, database=None, report_multiple_bugs=False, phases=NO_EXPLAIN,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                          HealthCheck.function_scoped_fixture])


@pytest.fixture
def sdk_store(tmp_path):
    store = applied_store(tmp_path / "repo")
    yield store
    store.close()


@contextmanager
def emptied_after(store: FeatureStore):
    """Each example starts from an empty online view."""
    try:
        yield
    finally:
        store.online_store.delete_view(VIEW)


@pytest.mark.parametrize("column", [KEY, TIME, *FEATURES])
@PROFILE
@given(data=st.data())
def test_push_and_stream_parser_judge_a_value_alike(sdk_store, column, data):
    """``store.push`` and the Kafka event parser accept or refuse the same row, by the rules, and an
    accepted row is stored as the parser reads it: the same instant, the same values. The row has a
    valid key and time (ISO text, so only ``column`` is on trial) and a valid or hostile ``column``."""
    row = {KEY: data.draw(VALID["Int64"], label="key"), TIME: data.draw(valid_iso, label="time")}
    dtype = {KEY: "key", TIME: "time"}.get(column) or FEATURES[column]
    row[column] = data.draw(column_values(dtype, hostile=True), label=column)
    rules_accept, expected = verdict(judge, row)
    parser_accepts, parsed = parse_event(row)
    with emptied_after(sdk_store):
        try:
            result = sdk_store.push(PUSH_SOURCE, {name: [value] for name, value in row.items()})
            push_accepts, refusal = True, None
        except InvalidInputError as exc:
            push_accepts, refusal = False, str(exc)
        stored = stored_row(sdk_store, expected.key) if rules_accept else None
    assert push_accepts == parser_accepts, (
        f"push {'accepts' if push_accepts else 'refuses'} {row} but the stream parser "
        f"{'accepts' if parser_accepts else 'refuses'} it ({refusal or parsed})")
    assert push_accepts == rules_accept, (
        f"push {'accepts' if push_accepts else 'refuses'} {row}, the rules "
        f"{'accept' if rules_accept else 'refuse'} it ({refusal or expected})")
    if push_accepts:
        assert result.online_written == 1, (row, result)
        assert stored is not None and same_values(stored, parsed), (row, stored, parsed)
        assert same_values(stored, expected), (row, stored, expected)


lookup_keys = st.one_of(
    st.integers(*INT64), st.integers(-(2**64), 2**64), st.booleans(), hostile_floats, st.just(1001.0),
    st.sampled_from(["1001", "١٠٠١", "1_001", " 1001 ", "+1001", "1001.0", "1e3", "０", "²", "", "-0"]),
    st.integers(*INT64).map(str), st.text(max_size=6),
)


@PROFILE
@given(key=lookup_keys)
def test_lookup_keys_follow_the_rules(sdk_store, key):
    """An Int64 join key is an integer: anything else is refused with ``InvalidInputError`` (never
    another exception, never read as some entity), and a pushed entity is found by its key. An integer
    beyond Int64 may be refused or answered as not found (no entity can have it)."""
    accepted, reason = verdict(join_key, key)
    if _is_int(key) and not accepted:
        with emptied_after(sdk_store):
            try:
                response = sdk_store.get_online_features([f"{VIEW}:trips"], {KEY: [key]})
            except InvalidInputError:
                return
        assert response.statuses["trips"] == ["NOT_FOUND"], (key, response)
        return
    with emptied_after(sdk_store):
        if accepted:
            sdk_store.push(PUSH_SOURCE, {KEY: [key], TIME: ["2024-01-01T00:00:00Z"], "trips": [7]})
        try:
            response = sdk_store.get_online_features([f"{VIEW}:trips"], {KEY: [key]}).to_dict()
        except InvalidInputError:
            assert not accepted, f"lookup refused key {key!r}, which the rules accept"
            return
    assert accepted, f"lookup answered for key {key!r} ({reason}): {response}"
    assert response["trips"] == [7], (key, response)


def test_the_rules_as_written():
    """The oracle's own arithmetic, on values the rules name (so a failure of the properties is the
    product's, not the oracle's)."""
    assert judge({KEY: 1, TIME: 1_700_000_000_000}).at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert judge({KEY: 1, TIME: "1678-01-01T00:00:00Z"}).at == datetime(1678, 1, 1, tzinfo=UTC)
    for bad in (1_700_000_000_000_000_000, 9 * 10**18, True, 1.7e12, math.nan, "2262-01-01T00:00:00Z",
                "1678-01-01T00:30:00+01:00", "١٧٠٠٠٠٠٠٠٠٠٠٠"):
        with pytest.raises(Refused):
            judge({KEY: 1, TIME: bad})
    with pytest.raises(Refused):
        judge({KEY: True, TIME: 0})
    for dtype, bad in (("Float32", 1e39), ("Float32", math.nan), ("Float64", math.inf), ("Int64", 1.0),
                       ("Int64", True), ("Bool", 1), ("String", 5)):
        with pytest.raises(Refused):
            judge({KEY: 1, TIME: 0, next(n for n, d in FEATURES.items() if d == dtype): bad})
