"""One suite, every engine: transforms, filters and windowed aggregations against the brute-force
reference in ``reference.py``.

Comparison rule: exact equality everywhere (test floats are multiples of 1/4 of bounded size, so sums
and products are exact in any order), except ``mean`` and ``stddev`` which are compared with
``math.isclose(rel_tol=1e-9, abs_tol=1e-9)`` because engines accumulate them with different
algorithms. ``last`` with a tie on event and created time accepts any of the tied values.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.types import Bool, Float64, Int32, Int64, String, Timestamp
from tests.conformance import reference
from transforms import Aggregation, coalesce, col, concat, lit, when
from transforms.compile_duckdb import supports as duckdb_supports
from transforms.compile_spark import supports as spark_supports

UTC = timezone.utc
TS_TYPE = pa.timestamp("us", tz="UTC")

# ------------------------------------------------------------------------------------------------
# Row expressions
# ------------------------------------------------------------------------------------------------

SCHEMA = {
    "id": Int64,
    "i": Int64,
    "j": Int64,
    "f": Float64,
    "g": Float64,
    "s": String,
    "u": String,
    "num": String,
    "b": Bool,
    "c": Bool,
    "ts": Timestamp,
}
ARROW_SCHEMA = pa.schema([(name, t.to_arrow()) for name, t in SCHEMA.items()])

T0 = datetime(2024, 3, 10, 6, 30, tzinfo=UTC)

EXPRESSIONS = {
    "col": col("i"),
    "lit_str": lit("x"),
    "lit_typed_null_plus": lit(None, Float64) + col("f"),
    "add_int": col("i") + col("j"),
    "sub_int": col("i") - col("j"),
    "mul_int": col("i") * col("j"),
    "div_int": col("i") / col("j"),
    "mod_int": col("i") % col("j"),
    "add_float": col("f") + col("g"),
    "sub_mixed": col("f") - col("i"),
    "mul_float": col("f") * col("g"),
    "div_float": col("f") / col("g"),
    "mod_float": col("f") % col("g"),
    "neg_int": -col("i"),
    "neg_float": -col("f"),
    "add_lit": col("i") + 1,
    "rmul_lit": 2.5 * col("f"),
    "rsub_lit": 10 - col("i"),
    "eq": col("i") == col("j"),
    "ne": col("i") != col("j"),
    "lt_mixed": col("i") < col("f"),
    "le_str": col("s") <= col("u"),
    "ge_str_lit": col("s") >= "a",
    "eq_bool": col("b") == col("c"),
    "gt_ts": col("ts") > T0,
    "and": col("b") & col("c"),
    "or": col("b") | col("c"),
    "not": ~col("b"),
    "and_cmp": (col("i") > 0) & (col("f") < 0),
    "cast_int_float": col("i").cast(Float64),
    "cast_float_int": col("f").cast(Int64),
    "cast_str_int": col("num").cast(Int64),
    "cast_str_float": col("num").cast(Float64),
    "cast_int_str": col("i").cast(String),
    "cast_bool_int": col("b").cast(Int64),
    "cast_int_bool": col("i").cast(Bool),
    "cast_bool_str": col("b").cast(String),
    "cast_bool_float": col("b").cast(Float64),
    "cast_int_int32": col("i").cast(Int32),
    "cast_same": col("s").cast(String),
    "coalesce3": coalesce(col("i"), col("j"), 0),
    "coalesce_mixed": coalesce(col("f"), col("i")),
    "coalesce_str": coalesce(col("s"), "none"),
    "coalesce_untyped_null": coalesce(lit(None), col("i")),
    "fill_null": col("i").fill_null(-1),
    "isin_str": col("s").isin(["a", "B", "", "zé"]),
    "isin_mixed_numbers": col("i").isin([1, 2.5, -3]),
    "isin_float": col("f").isin([0.25, -1, 100]),
    "isin_bool": col("b").isin([True]),
    "is_null": col("s").is_null(),
    "is_not_null": col("f").is_not_null(),
    "lower": col("s").str.lower(),
    "upper": col("s").str.upper(),
    "length": col("s").str.length(),
    "trim": col("s").str.trim(),
    "substring": col("s").str.substring(2, 3),
    "substring_to_end": col("s").str.substring(2),
    "substring_empty": col("s").str.substring(3, 0),
    "concat": concat(col("s"), "-", col("u")),
    "concat_method": col("u").str.concat(col("s")),
    "contains_lit": col("s").str.contains("a"),
    "contains_col": col("s").str.contains(col("u")),
    "starts_with": col("s").str.starts_with("a"),
    "ends_with": col("s").str.ends_with(col("u")),
    "year": col("ts").dt.year(),
    "month": col("ts").dt.month(),
    "day": col("ts").dt.day(),
    "hour": col("ts").dt.hour(),
    "minute": col("ts").dt.minute(),
    "day_of_week": col("ts").dt.day_of_week(),
    "case_str": when(col("i") > 0, "pos").when(col("i") < 0, "neg").otherwise("zero"),
    "case_mixed": when(col("b"), col("f")).otherwise(col("i")),
    "case_null_default": when(col("c"), 1).end(),
    "nested": ((col("i") * 2 + col("j")) % 7 == 1) | col("s").str.lower().str.starts_with("b"),
}

FILTERS = {
    "cmp_and_bool": (col("i") > 0) & col("b"),
    "string_or_null": col("s").str.starts_with("a") | col("c").is_null(),
    "negated": ~(col("f") < 1.0),
    "on_ts_part": col("ts").dt.hour() >= 12,
}

_texts = st.text(alphabet="aAbBzZé -1", max_size=5)
_quarters = st.integers(-400, 400).map(lambda k: k / 4)
_nums = st.sampled_from(["12", " 7 ", "-3", "+4", "1.5", "-2.25e1", ".5", "5.", "abc", "", "1e3", "1 2"])
_ts = st.integers(-2 * 365 * 86400, 60 * 365 * 86400).map(
    lambda s: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=s, microseconds=s % 7)
)


def _opt(strategy):
    return st.one_of(st.none(), strategy)


_row = st.fixed_dictionaries(
    {
        "i": _opt(st.integers(-50, 50)),
        "j": _opt(st.integers(-5, 5)),
        "f": _opt(_quarters),
        "g": _opt(st.sampled_from([0.0, -0.0, 0.25, -1.5, 2.0, 3.75, 100.0])),
        "s": _opt(_texts),
        "u": _opt(st.text(alphabet="aBz", max_size=2)),
        "num": _opt(_nums),
        "b": _opt(st.booleans()),
        "c": _opt(st.booleans()),
        "ts": _opt(_ts),
    }
)
_rows = st.lists(_row, min_size=0, max_size=25).map(lambda rs: [{"id": n, **r} for n, r in enumerate(rs)])


def _same_value(expected, actual) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, float):
        return isinstance(actual, float) and (expected == actual or (math.isnan(expected) and math.isnan(actual)))
    if isinstance(expected, bool):
        return isinstance(actual, bool) and expected == actual
    if isinstance(expected, int):
        return isinstance(actual, int) and not isinstance(actual, bool) and expected == actual
    return expected == actual


def test_every_node_kind_is_covered_and_supported():
    from transforms import NODE_TYPES

    seen = {type(n).__name__ for e in [*EXPRESSIONS.values(), *FILTERS.values()] for n in e.walk()}
    assert {c.__name__ for c in NODE_TYPES} - {"Alias"} <= seen
    for e in EXPRESSIONS.values():
        assert duckdb_supports(e) and spark_supports(e)


def test_expressions_match_reference(engine):
    transform = [e.alias(name) for name, e in EXPRESSIONS.items()]

    @settings(max_examples=engine.examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(rows=_rows)
    def run(rows):
        got = engine.view(rows, ARROW_SCHEMA, transform, None, ["id"], SCHEMA)
        got = sorted(got, key=lambda r: r["id"])
        assert [r["id"] for r in got] == [r["id"] for r in rows]
        for name, e in EXPRESSIONS.items():
            expected = reference.evaluate(e, rows, SCHEMA)
            for row, want, have in zip(rows, expected, (r[name] for r in got)):
                assert _same_value(want, have), f"{engine.name}: {name} = {e!r} on {row}: want {want!r}, got {have!r}"

    run()


def test_filters_match_reference(engine):
    @settings(max_examples=max(3, engine.examples // 2), deadline=None, suppress_health_check=list(HealthCheck))
    @given(rows=_rows)
    def run(rows):
        for name, flt in FILTERS.items():
            # the filter sees source columns; the transform output is computed after it
            got = engine.view(rows, ARROW_SCHEMA, [(col("i") + 1).alias("i1")], flt, ["id"], SCHEMA)
            kept = reference.filter_rows(flt, rows, SCHEMA)
            assert sorted(r["id"] for r in got) == [r["id"] for r in kept], f"{engine.name}: filter {name}"
            want_i1 = {r["id"]: (None if r["i"] is None else r["i"] + 1) for r in kept}
            assert {r["id"]: r["i1"] for r in got} == want_i1

    run()


def test_filter_on_source_column_before_transform_renames(engine):
    rows = [{"id": 0, "i": 5, "j": None, "f": None, "g": None, "s": "x", "u": None, "num": None,
             "b": None, "c": None, "ts": None}]
    got = engine.view(rows, ARROW_SCHEMA, [(col("i") * 0).alias("i")], col("i") > 1, ["id"], SCHEMA)
    assert got == [{"id": 0, "i": 0}]


# ------------------------------------------------------------------------------------------------
# Checks: a row fails a check whose expression is false or null (transforms.checks)
# ------------------------------------------------------------------------------------------------

CHECKS = {  # name -> (expression, on_fail)
    "non_negative": (col("i") >= 0, "drop"),
    "known": (col("s").isin(["a", "B", "zé"]), "drop"),
    "flag_or_null": (col("b") | col("c").is_null(), "warn"),
    "not_null_f": (col("f").is_not_null(), "fail"),
    "bounded": ((col("f") > -10) & (col("f") <= col("g") * 4), "drop"),
}
DROPS = [(name, e) for name, (e, on_fail) in CHECKS.items() if on_fail == "drop"]


def expected_checks(rows: list[dict]) -> tuple[dict[str, int], dict[int, str]]:
    """Per check, the rows failing it; per dropped row, the first drop check it fails."""
    verdicts = {name: reference.evaluate(e, rows, SCHEMA) for name, (e, _) in CHECKS.items()}
    failed = {name: sum(v is not True for v in vs) for name, vs in verdicts.items()}
    dropped = {}
    for n, row in enumerate(rows):
        first = next((name for name, _ in DROPS if verdicts[name][n] is not True), None)
        if first is not None:
            dropped[row["id"]] = first
    return failed, dropped


def test_checks_keep_drop_and_count_the_same_rows(engine):
    checks = [(name, e) for name, (e, _) in CHECKS.items()]

    @settings(max_examples=max(3, engine.examples // 2), deadline=None, suppress_health_check=list(HealthCheck))
    @given(rows=_rows)
    def run(rows):
        counts, kept, quarantined = engine.checks(rows, ARROW_SCHEMA, checks, DROPS, SCHEMA)
        failed, dropped = expected_checks(rows)
        assert counts.rows == len(rows) and counts.failed == failed, engine.name
        assert sorted(kept) == sorted(r["id"] for r in rows if r["id"] not in dropped), engine.name
        assert dict(quarantined) == dropped and len(quarantined) == len(dropped), engine.name
        assert counts.latest == max((r["ts"] for r in rows if r["ts"] is not None), default=None)

    run()


# ------------------------------------------------------------------------------------------------
# Windowed aggregations
# ------------------------------------------------------------------------------------------------

BASE = datetime(2024, 1, 1, tzinfo=UTC)
WINDOWS = [timedelta(minutes=30), timedelta(hours=1), timedelta(days=1), None]
AGG_FUNCTIONS = ["sum", "count", "mean", "min", "max", "stddev", "last"]
AGGS = (
    [Aggregation("x", f, w) for f in AGG_FUNCTIONS for w in WINDOWS]
    + [Aggregation("y", f, w) for f in AGG_FUNCTIONS for w in WINDOWS]
    + [Aggregation("s", f, w) for f in ("count", "min", "max", "last") for w in WINDOWS]
)
EV_SCHEMA_T = {"k": Int64, "ts": Timestamp, "created": Timestamp, "x": Int64, "y": Float64, "s": String}
EV_ARROW = pa.schema([(n, t.to_arrow()) for n, t in EV_SCHEMA_T.items()])
PT_ARROW = pa.schema([("k", pa.int64()), ("ts", TS_TYPE), ("__point_id", pa.int64())])
TOLERANT = {"mean", "stddev"}

_event = st.fixed_dictionaries(
    {
        "k": st.one_of(st.sampled_from([1, 2, 3]), st.sampled_from([1, None])),
        # a 15-minute grid over 3 days (plus a microsecond jitter sometimes) makes ties and exact edges
        "ts": st.tuples(st.integers(0, 4 * 24 * 3), st.sampled_from([0, 0, 0, 1])).map(
            lambda p: BASE + timedelta(minutes=15 * p[0], microseconds=p[1])
        ),
        "created": _opt(st.integers(0, 3).map(lambda m: BASE + timedelta(minutes=m))),
        "x": _opt(st.integers(-100, 100)),
        "y": _opt(_quarters),
        "s": _opt(st.text(alphabet="abc", max_size=3)),
    }
)


@st.composite
def _agg_case(draw):
    events = draw(st.lists(_event, min_size=0, max_size=40))
    # duplicates: exact copies, and same key/time/created with another value (a tie for `last`)
    for e in draw(st.lists(st.sampled_from(events), max_size=4)) if events else []:
        events.append(dict(e))
    for e in draw(st.lists(st.sampled_from(events), max_size=3)) if events else []:
        events.append({**e, "x": draw(_opt(st.integers(-100, 100)))})
    events = draw(st.permutations(events))  # late, out-of-order arrival
    times = []
    for e in events[:10]:
        times.append(e["ts"])  # an event exactly at t is included
        for w in WINDOWS[:3]:
            times.append(e["ts"] + w)  # ... and exactly at t - window excluded
            times.append(e["ts"] + w - timedelta(microseconds=1))
    times += draw(st.lists(st.integers(-4, 4 * 24 * 4).map(lambda m: BASE + timedelta(minutes=15 * m)),
                           max_size=10))
    points = []
    for n, t in enumerate(times):
        points.append({"k": draw(st.sampled_from([1, 2, 3, None]) if n % 9 == 8 else st.sampled_from([1, 2, 3])),
                       "ts": t, "__point_id": n})
    if draw(st.booleans()):
        points.append({"k": 1, "ts": None, "__point_id": len(points)})
    return events, points


def _check_agg(engine, events, points, created_col):
    got_rows = engine.aggregate(events, EV_ARROW, points, PT_ARROW, ["k"], "ts", AGGS, created_col, EV_SCHEMA_T)
    got = {r["__point_id"]: r for r in got_rows}
    assert sorted(got) == sorted(p["__point_id"] for p in points), "one row per point"
    expected = reference.aggregate_at_points(events, points, ["k"], "ts", AGGS, created_col)
    for p in points:
        want_row, have_row = expected[p["__point_id"]], got[p["__point_id"]]
        for a in AGGS:
            want, have = want_row[a.name], have_row[a.name]
            where = f"{engine.name}: {a.name} at {p}: want {want!r}, got {have!r}"
            if isinstance(want, reference.AnyOf):
                assert have in want.values, where
            elif a.function in TOLERANT and want is not None and have is not None:
                assert math.isclose(want, have, rel_tol=1e-9, abs_tol=1e-9), where
            else:
                assert _same_value(want, have), where


@pytest.mark.parametrize("created_col", ["created", None])
def test_aggregations_match_reference(engine, created_col):
    @settings(max_examples=max(4, engine.examples // 2 if engine.name == "spark" else engine.examples),
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=_agg_case())
    def run(case):
        events, points = case
        _check_agg(engine, events, points, created_col)

    run()


def test_aggregation_window_edges_and_empty_windows(engine):
    t = BASE + timedelta(hours=5)
    ev = lambda k, dt, x, y=None, created=None, s=None: {  # noqa: E731
        "k": k, "ts": t - dt, "created": created, "x": x, "y": y, "s": s}
    events = [
        ev(1, timedelta(hours=1), 100),  # exactly t - 1h: out of the 1h window, in the 1d window
        ev(1, timedelta(hours=1) - timedelta(microseconds=1), 1),  # just inside
        ev(1, timedelta(0), 2, 0.5),  # exactly at t: included
        ev(1, timedelta(0), None, None, BASE, "late"),  # same time, created later -> wins `last`
        ev(1, -timedelta(microseconds=1), 1000),  # after t: never
        ev(None, timedelta(0), 5),  # null key: never
    ]
    points = [
        {"k": 1, "ts": t, "__point_id": 0},
        {"k": 2, "ts": t, "__point_id": 1},  # no events: count 0, sum null
        {"k": None, "ts": t, "__point_id": 2},
    ]
    rows = {r["__point_id"]: r for r in engine.aggregate(
        events, EV_ARROW, points, PT_ARROW, ["k"], "ts", AGGS, "created", EV_SCHEMA_T)}
    p = rows[0]
    assert p["x_sum_1h"] == 3 and p["x_count_1h"] == 2
    assert p["x_sum_1d"] == 103 and p["x_count_lifetime"] == 3
    assert p["x_last_1h"] is None and p["s_last_1h"] == "late"  # the latest event's value, even null
    assert p["y_stddev_1h"] is None  # one value
    for empty in (rows[1], rows[2]):
        assert empty["x_count_1h"] == 0 and empty["x_count_lifetime"] == 0
        assert empty["x_sum_1h"] is None and empty["x_mean_lifetime"] is None and empty["s_last_1d"] is None


def test_output_column_order_and_names(engine):
    aggs = [Aggregation("x", "sum", timedelta(hours=1)), Aggregation("x", "count", None, name="n")]
    rows = engine.aggregate([], EV_ARROW, [{"k": 1, "ts": BASE, "__point_id": 7}], PT_ARROW, ["k"], "ts",
                            aggs, None, EV_SCHEMA_T)
    assert rows == [{"__point_id": 7, "x_sum_1h": None, "n": 0}]
