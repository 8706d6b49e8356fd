"""Transform IR: builder, structural equality, spec round trip, type checking, aggregations, and the
pure parts of the compilers (quoting, parameters, supports)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.errors import DefinitionError
from featurestore.types import Array, Bool, Bytes, Float32, Float64, Int32, Int64, String, Timestamp
from transforms import (
    Aggregation,
    Alias,
    BinaryOp,
    Case,
    Cast,
    Coalesce,
    Column,
    DatePart,
    IsNull,
    Literal,
    Lower,
    UnaryOp,
    coalesce,
    col,
    compile_duckdb,
    compile_spark,
    concat,
    from_spec,
    infer_type,
    lit,
    output_name,
    to_spec,
    when,
    window_name,
)

UTC = timezone.utc

# -- builder ---------------------------------------------------------------------------------------


def test_builder_makes_the_documented_nodes():
    e = col("amount").cast(Float64).alias("amount")
    assert isinstance(e, Alias) and isinstance(e.expr, Cast) and e.expr.to == Float64
    assert e.same_as(Alias(Cast(Column("amount"), Float64), "amount"))
    f = (col("country") != "US").alias("foreign")
    assert f.expr.same_as(BinaryOp("!=", Column("country"), Literal("US", String)))
    assert (col("status") == "settled").same_as(BinaryOp("==", Column("status"), lit("settled")))
    assert (col("a") + 1).same_as(BinaryOp("+", Column("a"), Literal(1, Int64)))
    assert (1 - col("a")).same_as(BinaryOp("-", Literal(1, Int64), Column("a")))
    assert col("s").str.lower().same_as(Lower(Column("s")))
    assert col("ts").dt.hour().same_as(DatePart(Column("ts"), "hour"))
    assert col("x").is_null().same_as(IsNull(Column("x")))
    assert coalesce(col("a"), 0).same_as(Coalesce((Column("a"), Literal(0, Int64))))
    assert (~col("b")).same_as(UnaryOp("not", Column("b")))
    assert (-col("b")).same_as(UnaryOp("neg", Column("b")))
    assert isinstance(when(col("b"), 1).otherwise(2), Case)


def test_python_literals_get_their_types():
    assert lit(True).dtype == Bool and lit(1).dtype == Int64 and lit(1.5).dtype == Float64
    assert lit("x").dtype == String and lit(b"x").dtype == Bytes
    assert lit(datetime(2024, 1, 1)).value == datetime(2024, 1, 1, tzinfo=UTC)  # naive = UTC
    assert lit(None).dtype is None and lit(None, Float64).dtype == Float64
    assert lit(1, Float64).value == 1.0 and isinstance(lit(1, Float64).value, float)
    with pytest.raises(DefinitionError):
        lit(2**63)
    with pytest.raises(DefinitionError):
        lit("x", Int64)
    with pytest.raises(DefinitionError):
        lit(object())


def test_structural_equality_distinguishes_literal_types():
    assert not lit(1).same_as(lit(1.0))
    assert not lit(1).same_as(lit(True))
    assert not lit(0.0).same_as(lit(-0.0))
    assert lit(float("nan")).same_as(lit(float("nan")))
    assert (col("a") + 1).same_as(col("a") + 1) and not (col("a") + 1).same_as(col("a") + 2)


def test_expressions_have_no_truth_value():
    with pytest.raises(TypeError):
        bool(col("a") == 1)
    with pytest.raises(TypeError):
        _ = (col("a") > 1) and (col("b") > 2)


def test_invalid_nodes_are_refused():
    with pytest.raises(DefinitionError):
        col("")
    with pytest.raises(DefinitionError):
        col("s").str.substring(0)
    with pytest.raises(DefinitionError):
        BinaryOp("**", col("a"), col("b"))
    with pytest.raises(DefinitionError):
        DatePart(col("ts"), "week")


# -- spec round trip -------------------------------------------------------------------------------

_names = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=6)
_literals = st.one_of(
    st.none().map(lambda _: lit(None)),
    st.integers(-(2**63), 2**63 - 1).map(lit),
    st.floats(allow_nan=True, allow_infinity=True).map(lit),
    st.text(max_size=5).map(lit),
    st.booleans().map(lit),
    st.binary(max_size=5).map(lit),
    st.datetimes(timezones=st.just(UTC)).map(lit),
    st.sampled_from([Int64, Float64, String, Timestamp, Bool]).map(lambda t: lit(None, t)),
)
_leaves = st.one_of(_names.map(col), _literals)
_types = st.sampled_from([Int32, Int64, Float32, Float64, String, Bool, Bytes, Timestamp, Array(Int64)])


def _extend(children):
    return st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&", "|"]),
                  children, children).map(lambda t: BinaryOp(*t)),
        st.tuples(st.sampled_from(["not", "neg"]), children).map(lambda t: UnaryOp(*t)),
        st.tuples(children, _types).map(lambda t: t[0].cast(t[1])),
        st.tuples(children, _names).map(lambda t: t[0].alias(t[1])),
        st.lists(children, min_size=1, max_size=3).map(lambda a: coalesce(*a)),
        st.lists(children, min_size=1, max_size=3).map(lambda a: concat(*a)),
        children.map(lambda c: c.is_null()),
        children.map(lambda c: c.is_not_null()),
        children.map(lambda c: c.str.upper()),
        children.map(lambda c: c.str.trim()),
        children.map(lambda c: c.str.length()),
        st.tuples(children, st.integers(1, 10), st.one_of(st.none(), st.integers(0, 10))).map(
            lambda t: t[0].str.substring(t[1], t[2])),
        st.tuples(children, children).map(lambda t: t[0].str.contains(t[1])),
        st.tuples(children, children).map(lambda t: t[0].str.starts_with(t[1])),
        st.tuples(children, children).map(lambda t: t[0].str.ends_with(t[1])),
        st.tuples(children, st.sampled_from(["year", "month", "day", "hour", "minute", "day_of_week"])).map(
            lambda t: DatePart(*t)),
        st.tuples(st.lists(st.tuples(children, children), min_size=1, max_size=2), children).map(
            lambda t: Case(tuple(t[0]), t[1])),
    )


exprs = st.recursive(_leaves, _extend, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(exprs)
def test_spec_round_trip_is_exact_and_json_safe(e):
    spec = to_spec(e)
    text = json.dumps(spec, allow_nan=False)
    back = from_spec(json.loads(text))
    assert back.same_as(e)
    assert to_spec(back) == spec


def test_spec_rejects_unknown_nodes_and_fields():
    with pytest.raises(DefinitionError):
        from_spec({"node": "Eval", "code": "1"})
    with pytest.raises(DefinitionError):
        from_spec({"node": "Column", "name": "a", "extra": 1})


# -- typing ----------------------------------------------------------------------------------------

SCHEMA = {"amount": Float64, "n": Int64, "i32": Int32, "f32": Float32, "country": String, "ok": Bool,
          "ts": Timestamp, "raw": Bytes, "tags": Array(String)}


def test_infer_types():
    t = lambda e: infer_type(e, SCHEMA)  # noqa: E731
    assert t(col("n") + 1) == Int64
    assert t(col("i32") + col("i32")) == Int32
    assert t(col("i32") + 1) == Int64
    assert t(col("f32") * 2) == Float32
    assert t(col("n") + col("amount")) == Float64
    assert t(col("n") / 2) == Float64
    assert t(col("country") != "US") == Bool
    assert t(col("country").str.length()) == Int64
    assert t(col("ts").dt.hour()) == Int64
    assert t(coalesce(col("n"), 0.5)) == Float64
    assert t(coalesce(lit(None), col("country"))) == String
    assert t(when(col("ok"), col("n")).otherwise(col("amount"))) == Float64
    assert t(col("amount").cast(Int64).alias("a")) == Int64
    assert t(lit(None, String)) == String


@pytest.mark.parametrize(
    "expr, field",
    [
        (col("amount") + "US", "amount"),
        (col("n").str.lower(), "n"),
        (col("country") > 1, "country"),
        (col("ok") & col("n"), "ok"),
        (~col("n"), "n"),
        (-col("country"), "country"),
        (col("amount").cast(String), "amount"),
        (col("ts").cast(Int64), "ts"),
        (col("country").dt.year(), "country"),
        (coalesce(col("n"), "x"), "n"),
        (when(col("n"), 1).otherwise(2), "n"),
        (col("tags") == col("tags"), "tags"),
    ],
)
def test_type_mismatch_names_the_column_and_the_expression(expr, field):
    with pytest.raises(DefinitionError) as err:
        infer_type(expr, SCHEMA, obj="user_txn")
    assert err.value.field == field
    assert err.value.obj == "user_txn"
    assert repr(expr) in str(err.value)


def test_unknown_column_is_named():
    with pytest.raises(DefinitionError) as err:
        infer_type((col("amount") + col("amout")).alias("x"), SCHEMA)
    assert err.value.field == "amout" and "amout" in str(err.value)


def test_bare_untyped_null_has_no_type():
    with pytest.raises(DefinitionError):
        infer_type(lit(None), SCHEMA)


def test_output_name():
    assert output_name(col("a")) == "a"
    assert output_name((col("a") + 1).alias("b")) == "b"
    with pytest.raises(DefinitionError, match="alias"):
        output_name(col("a") + 1)


# -- aggregations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window, name",
    [
        (timedelta(minutes=30), "30m"),
        (timedelta(hours=1), "1h"),
        (timedelta(days=7), "7d"),
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=90), "90m"),
        (timedelta(hours=36), "36h"),
        (timedelta(days=1, seconds=1), "86401s"),
        (None, "lifetime"),
    ],
)
def test_window_names(window, name):
    assert window_name(window) == name


def test_aggregation_defaults_and_validation():
    a = Aggregation(column="amount", function="sum", window=timedelta(hours=1))
    assert a.name == "amount_sum_1h"
    assert Aggregation("amount", "mean", timedelta(days=7)).name == "amount_mean_7d"
    assert Aggregation("foreign", "count", None).name == "foreign_count_lifetime"
    assert Aggregation("a", "max", timedelta(hours=1), name="m").name == "m"
    for bad in [dict(function="median", window=None), dict(function="sum", window=timedelta(0)),
                dict(function="sum", window=-timedelta(hours=1)),
                dict(function="sum", window=timedelta(milliseconds=1500))]:
        with pytest.raises(DefinitionError) as err:
            Aggregation(column="amount", **bad)
        assert "amount" in str(err.value)


def test_aggregation_output_types_and_type_errors():
    out = lambda c, f: Aggregation(c, f, timedelta(hours=1)).output_type(SCHEMA)  # noqa: E731
    assert out("n", "sum") == Int64 and out("i32", "sum") == Int64 and out("amount", "sum") == Float64
    assert out("f32", "sum") == Float64
    assert out("country", "count") == Int64 and out("n", "mean") == Float64 and out("n", "stddev") == Float64
    assert out("country", "min") == String and out("ts", "max") == Timestamp and out("ok", "last") == Bool
    for c, f in [("country", "sum"), ("ok", "mean"), ("ts", "stddev"), ("tags", "min"), ("nope", "count")]:
        with pytest.raises(DefinitionError) as err:
            out(c, f)
        assert f"{c}_{f}_1h" in str(err.value) and err.value.field == c


@settings(max_examples=100)
@given(
    column=_names,
    function=st.sampled_from(["sum", "count", "mean", "min", "max", "stddev", "last"]),
    seconds=st.one_of(st.none(), st.integers(1, 10**8)),
    name=st.one_of(st.none(), _names),
)
def test_aggregation_spec_round_trip(column, function, seconds, name):
    a = Aggregation(column, function, None if seconds is None else timedelta(seconds=seconds), name)
    spec = json.loads(json.dumps(a.to_spec()))
    assert Aggregation.from_spec(spec) == a


# -- compilers (pure) ------------------------------------------------------------------------------


def test_duckdb_quotes_identifiers_and_parameterises_every_literal():
    evil = 'x"; DROP TABLE t; --'
    sql, params = compile_duckdb.to_sql((col(evil) == "'; DROP TABLE t; --") & (col("n") > 3))
    assert '"x""; DROP TABLE t; --"' in sql
    assert "DROP TABLE t; --'" not in sql and "3" not in sql
    assert list(params.values()) == ["'; DROP TABLE t; --", 3]


def test_duckdb_compile_view_shape():
    sql, params = compile_duckdb.compile_view(
        "SELECT * FROM src", [col("amount").cast(Float64).alias("amount")], col("status") == "settled", ["user_id"],
        schema={"amount": Int64, "status": String, "user_id": Int64},
    )
    assert sql.startswith('SELECT "user_id", ')
    assert 'AS "amount" FROM (SELECT * FROM src) AS __fs_src WHERE ' in sql
    assert list(params.values()) == ["settled"]


def test_duckdb_runs_the_compiled_sql():
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    sql, params = compile_duckdb.to_sql((col("a") + 1) * 2)
    assert con.sql(f"SELECT {sql} AS v FROM (SELECT 4 AS a)", params=params).fetchall() == [(10,)]


def test_supports_every_node_and_aggregation_without_importing_engines():
    e = when(col("ts").dt.day_of_week() > 5, col("s").str.upper()).otherwise(concat(col("s"), "!"))
    for mod in (compile_duckdb, compile_spark):
        assert mod.supports(e)
        assert mod.supports([Aggregation("a", f, None) for f in ("sum", "stddev", "last")])
        assert isinstance(mod.UNSUPPORTED, frozenset)


def test_unsupported_nodes_are_reported_before_running():
    class Restricted(compile_duckdb.DuckDBCompiler):
        UNSUPPORTED = frozenset({"DatePart", "agg:stddev"})

    assert not Restricted.supports(col("ts").dt.hour() + 1)
    assert Restricted.unsupported_in([col("a") + 1, col("ts").dt.hour(), Aggregation("a", "stddev")]) == [
        "DatePart", "agg:stddev"]
    with pytest.raises(DefinitionError, match="DatePart"):
        Restricted.check_supported(col("ts").dt.hour(), view="v")


def test_literal_floats_survive_spec_exactly():
    for v in [0.1, -0.0, 1e308, 5e-324, math.inf, -math.inf]:
        e = lit(v)
        assert from_spec(json.loads(json.dumps(to_spec(e), allow_nan=False))).same_as(e)
