"""The Flink SQL compiler: pure rendering tests (main venv), and one slow test that runs the compiled
SQL on a PyFlink 2.2 mini-cluster in ``.venv-flink`` and compares with the conformance reference.

Outside CI a missing or stale ``.venv-flink`` skips the slow test (``make flink-env`` creates it);
under CI=true the test creates it.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from featurestore.errors import DefinitionError
from featurestore.types import Float64, Int64, String, Timestamp
from tests.conformance import reference
from tests.conformance.test_transforms_conformance import (
    CHECKS,
    DROPS,
    EXPRESSIONS,
    FILTERS,
    SCHEMA,
    _same_value,
    expected_checks,
)
from transforms import Aggregation, coalesce, col, lit, when
from transforms import compile_flink as cf
from transforms.checks import failed, first_failed

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc


# ------------------------------------------------------------------------------------ pure tests


def test_module_imports_no_pyflink():
    code = "import sys, transforms.compile_flink; print('pyflink' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_identifiers_and_string_literals_are_quoted():
    assert cf.quote_ident("amount") == "`amount`"
    assert cf.quote_ident("a`b c'd") == "`a``b c'd`"
    assert cf.quote_string("it's `x` \\ ") == "'it''s `x` \\ '"
    sql, params = cf.to_sql(col("we`ird 'n") == "O'Brien`s ')--", {"we`ird 'n": String})
    assert params == {}
    assert sql == "(`we``ird 'n` = CAST('O''Brien`s '')--' AS STRING))"
    for bad in ("", "a\x00b"):
        with pytest.raises(DefinitionError):
            cf.quote_ident(bad)
    with pytest.raises(DefinitionError):
        cf.to_sql(lit("a\x00b"))


def test_numbers_and_other_literals():
    r = cf.render_literal
    assert r(5, Int64) == "CAST(5 AS BIGINT)"
    assert r(-(2**63), Int64) == "CAST(-9223372036854775808 AS BIGINT)"
    assert r(2.5, Float64) == "CAST(2.5E0 AS DOUBLE)"
    assert r(1e-300, Float64) == "CAST(1E-300 AS DOUBLE)"
    assert r(float("nan"), Float64) == "CAST('NaN' AS DOUBLE)"
    assert r(float("inf"), Float64) == "CAST('Infinity' AS DOUBLE)"
    assert r(float("-inf"), Float64) == "CAST('-Infinity' AS DOUBLE)"
    assert r(None, Float64) == "CAST(NULL AS DOUBLE)"
    assert r(None, None) == "NULL"
    assert r(True, cf._t.Bool) == "TRUE"
    assert r(b"\n\xff'", cf._t.Bytes) == "CAST(X'0aff27' AS BYTES)"
    ts = datetime(1969, 12, 31, 20, 0, 0, 5, tzinfo=timezone(timedelta(hours=-5)))
    assert r(ts, Timestamp) == "TIMESTAMP '1970-01-01 01:00:00.000005'"
    for value, t in [("1; DROP", Int64), (True, Int64), ("x", Float64), (2**63, Int64), (3, String)]:
        with pytest.raises(DefinitionError):
            r(value, t)


def test_unsupported_nodes_are_refused_at_plan_time():
    assert "BinaryOp:%float" in cf.UNSUPPORTED
    assert cf.supports(col("i") % 3)
    assert not cf.supports(col("f") % 2.5)  # the float literal reveals it without a schema
    assert not cf.supports(col("f") % col("g"), SCHEMA)
    assert cf.supports(col("f") % col("g"))  # types unknown: Flink's validator refuses it before the job
    with pytest.raises(DefinitionError, match="flink"):
        cf.FlinkCompiler.check_supported(col("x").cast(Float64) % 2, view="v")
    with pytest.raises(DefinitionError, match="floating-point"):
        cf.to_sql(col("f") % col("g"), SCHEMA)
    assert not cf.supports(Aggregation("x", "sum", timedelta(hours=1)))  # windowed aggregations: later
    supported = {k for k, e in EXPRESSIONS.items() if cf.supports(e, SCHEMA)}
    assert set(EXPRESSIONS) - supported == {"mod_float"}


def test_integer_arithmetic_is_overflow_checked_when_types_are_known():
    sql, _ = cf.to_sql(col("i") + 1, SCHEMA)
    assert sql == (
        "(CASE WHEN (CAST(`i` AS DECIMAL(19, 0)) + CAST(CAST(1 AS BIGINT) AS DECIMAL(19, 0))) "
        "NOT BETWEEN -9223372036854775808 AND 9223372036854775807 "
        "THEN CAST('integer overflow in +: ' || CAST(`i` AS STRING) AS BIGINT) "
        "ELSE (`i` + CAST(1 AS BIGINT)) END)"
    )
    assert cf.to_sql(col("i") + 1)[0] == "(`i` + CAST(1 AS BIGINT))"  # no schema: plain
    assert cf.to_sql(col("f") * col("g"), SCHEMA)[0] == "(`f` * `g`)"  # floats: never checked
    assert cf.to_sql(-col("f"), SCHEMA)[0] == "(- `f`)"


def test_errors_as_values_give_null_and_a_message_instead_of_failing():
    checked = ("(CAST(`i` AS DECIMAL(19, 0)) + CAST(CAST(1 AS BIGINT) AS DECIMAL(19, 0))) "
               "{} -9223372036854775808 AND 9223372036854775807")
    sql, err = cf.to_sql_with_error(col("i") + 1, SCHEMA)
    assert sql == f"(CASE WHEN {checked.format('BETWEEN')} THEN (`i` + CAST(1 AS BIGINT)) END)"
    assert err == (f"(CASE WHEN {checked.format('NOT BETWEEN')} "
                   "THEN 'integer overflow in +: ' || CAST(`i` AS STRING) END)")
    assert "CAST('integer overflow" not in sql + err  # nothing that throws
    # the default compile is unchanged: it still fails the row (and the job)
    assert cf.to_sql(col("i") + 1, SCHEMA)[0].startswith(f"(CASE WHEN {checked.format('NOT BETWEEN')} THEN CAST(")
    # nothing that can fail: no error; no schema: plain (wrapping) arithmetic, no error either
    assert cf.to_sql_with_error(col("f") * col("g"), SCHEMA) == ("(`f` * `g`)", None)
    assert cf.to_sql_with_error(col("i") + 1) == ("(`i` + CAST(1 AS BIGINT))", None)
    # nested: every checked operation contributes, the innermost (evaluated first) first
    _, err = cf.to_sql_with_error(col("i") * col("i") * col("i"), SCHEMA)
    assert err.startswith("COALESCE((CASE WHEN ") and err.count("'integer overflow in *: '") == 2


def test_errors_as_values_count_only_where_the_operation_is_evaluated():
    big = col("i") * col("j")
    _, big_err = cf.to_sql_with_error(big, SCHEMA)
    big_sql, _ = cf.to_sql_with_error(big, SCHEMA)
    # a when branch: only when its condition holds; the otherwise: only when none does
    _, err = cf.to_sql_with_error(when(col("b"), big).otherwise(lit(0)), SCHEMA)
    assert err == f"(CASE WHEN `b` THEN {big_err} ELSE CAST(NULL AS STRING) END)"
    _, err = cf.to_sql_with_error(when(col("b"), lit(0)).otherwise(big), SCHEMA)
    assert err == f"(CASE WHEN `b` THEN CAST(NULL AS STRING) ELSE {big_err} END)"
    # a coalesce argument: only when the ones before it are null
    _, err = cf.to_sql_with_error(coalesce(col("i"), big), SCHEMA)
    assert err == f"(CASE WHEN `i` IS NULL THEN {big_err} END)"
    _, err = cf.to_sql_with_error(coalesce(big, col("i")), SCHEMA)
    assert err == big_err
    assert big_sql in cf.to_sql_with_error(coalesce(big, col("i")), SCHEMA)[0]
    # & and | evaluate both sides
    _, err = cf.to_sql_with_error(col("b") & (big > 0), SCHEMA)
    assert err == big_err


def test_compile_view_with_an_error_column():
    sql = cf.compile_view("src", [(col("i") + 1).alias("i1"), col("s")], col("b"), ["id"], SCHEMA,
                          error_column="err")
    assert "CAST('integer overflow" not in sql
    assert " AS `i1`, `s` AS `s`, (CASE WHEN " in sql
    assert sql.endswith(" END) AS `err` FROM `src` WHERE `b`")  # a filter that cannot fail: unchanged
    # nothing can fail: the error column is a null string
    sql = cf.compile_view("src", [col("s").alias("s2")], None, ["id"], SCHEMA, error_column="err")
    assert sql == "SELECT `id`, `s` AS `s2`, CAST(NULL AS STRING) AS `err` FROM `src`"
    # a filter that can fail keeps its failing rows (to report them), and its error comes first (the
    # test is not `IS NOT NULL`, on which Calcite's simplifier takes exponential time)
    flt = (col("j") * 2) > 0
    f_sql, f_err = cf.to_sql_with_error(flt, SCHEMA)
    t_sql, t_err = cf.to_sql_with_error(col("i") + 1, SCHEMA)
    sql = cf.compile_view("src", [(col("i") + 1).alias("i1")], flt, [], SCHEMA, error_column="err")
    assert sql == (f"SELECT {t_sql} AS `i1`, COALESCE({f_err}, {t_err}) AS `err` FROM `src` "
                   f"WHERE ({f_sql} OR CHAR_LENGTH({f_err}) > 0)")
    # without error_column: the same as before
    assert cf.compile_view("src", [(col("i") + 1).alias("i1")], flt, [], SCHEMA) == (
        f"SELECT {cf.to_sql(col('i') + 1, SCHEMA)[0]} AS `i1` FROM `src` WHERE {cf.to_sql(flt, SCHEMA)[0]}")


def test_compile_view_shape():
    sql = cf.compile_view("src`t", [(col("i") + 1).alias("i1"), col("s")], col("b"), ["id"], SCHEMA)
    assert sql.startswith("SELECT `id`, (CASE WHEN ")
    assert sql.endswith(" END) AS `i1`, `s` AS `s` FROM `src``t` WHERE `b`")
    with pytest.raises(DefinitionError):
        cf.compile_view("t", [], None, [])


# ------------------------------------------------------------------------------ on real Flink

WEIRD = "we`ird 'col\""  # a column name needing quoting, carrying a string with quotes and backquotes
NASTY = "it's `q` \\ \n é '') --"
N_ROWS = 32


def _rows() -> list[dict]:
    rnd = random.Random(20240310)
    texts = ["", "a", "Ab", " zé ", "bZz", "a-1", "  ", "BAAB", "é", "zaBa"]
    nums = ["12", " 7 ", "-3", "+4", "1.5", "-2.25e1", ".5", "5.", "abc", "", "1e3", "1 2", "99999999999999999999"]
    stamps = [
        datetime(2024, 3, 10, 6, 30, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # before the epoch with a fraction
        datetime(1968, 6, 1, 0, 0, 0, 500000, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2000, 2, 29, 23, 59, 59, 1, tzinfo=UTC),
        datetime(2024, 12, 29, 12, 0, tzinfo=UTC),  # a Sunday
    ]
    rows = []
    for n in range(N_ROWS):
        def pick(values, none_every=5):
            return None if rnd.randrange(none_every) == 0 else rnd.choice(values)

        rows.append({
            "id": n,
            "i": pick(list(range(-50, 51)) + [2**40, -(2**40)]),
            "j": pick(list(range(-5, 6))),
            "f": pick([k / 4 for k in range(-400, 401)] + [1e19, -1e19, 3e9, -0.0]),
            "g": pick([0.0, -0.0, 0.25, -1.5, 2.0, 3.75, 100.0]),
            "s": pick(texts),
            "u": pick(["", "a", "B", "z", "aB", "zz"]),
            "num": pick(nums),
            "b": pick([True, False], 3),
            "c": pick([True, False], 3),
            "ts": pick(stamps + [datetime(1969, 1, 1, tzinfo=UTC) + timedelta(seconds=rnd.randrange(-10**8, 10**9),
                                                                             microseconds=rnd.randrange(10**6))]),
        })
    rows[0] = {"id": 0, **{k: None for k in SCHEMA if k != "id"}}  # all nulls
    rows[1]["i"], rows[2]["i"] = 2**40, -(2**40)  # large enough to overflow i**4
    return rows


_SCRIPT = r"""
import json, sys
spec = json.loads(sys.argv[1])
from pyflink.table import EnvironmentSettings, TableEnvironment
t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
conf = t_env.get_config()
conf.set("parallelism.default", "1")
conf.set("table.local-time-zone", "America/New_York")  # results must not depend on it
t_env.execute_sql(spec["view"])
out = {}
for name, query in spec["queries"].items():
    result = t_env.execute_sql(query)
    names = result.get_table_schema().get_field_names()
    with result.collect() as rows:
        out[name] = [dict(zip(names, [row[i] for i in range(len(names))])) for row in rows]
for name, query in spec.get("must_fail", {}).items():
    try:
        with t_env.execute_sql(query).collect() as rows:
            out[name] = [list(row) for row in rows]
    except Exception as e:  # the job fails: report the root cause
        out[name] = "ERROR " + " | ".join(ln for ln in str(e).splitlines() if "Exception:" in ln)[-2000:]
print("FS-RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_flink_sql_matches_the_conformance_reference(flink_python: Path):
    from featurestore.streaming import env as flink_env

    rows = _rows()
    schema = {**SCHEMA, WEIRD: String}
    for n, r in enumerate(rows):
        r[WEIRD] = None if n % 4 == 0 else NASTY[: n % len(NASTY)] + NASTY
    names = list(schema)
    values = ",\n".join(
        "(" + ", ".join(cf.render_literal(r[c], schema[c]) for c in names) + ")" for r in rows
    )
    view = (f"CREATE TEMPORARY VIEW `src` AS SELECT * FROM (VALUES {values}) AS t("
            + ", ".join(cf.quote_ident(c) for c in names) + ")")

    exprs = {k: e for k, e in EXPRESSIONS.items() if cf.supports(e, SCHEMA)}
    exprs["weird_concat"] = col(WEIRD).str.concat(lit(NASTY))
    exprs["weird_eq"] = col(WEIRD) == NASTY
    exprs["ts_literal_pre_epoch"] = col("ts") >= datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    for k, f in FILTERS.items():
        exprs[f"filter_{k}"] = f
    covered = {type(n).__name__ for e in exprs.values() for n in e.walk()}
    from transforms import NODE_TYPES
    assert {c.__name__ for c in NODE_TYPES} - {"Alias"} <= covered

    flt = FILTERS["string_or_null"] | FILTERS["on_ts_part"]
    queries = {
        "exprs": cf.compile_view("src", [e.alias(k) for k, e in exprs.items()], None, ["id"], schema),
        "filtered": cf.compile_view("src", [(col("i") + 1).alias("i1")], flt, ["id"], schema),
    }
    # integer overflow fails the job, as on the other engines (Flink alone would wrap around)
    i4 = col("i") * col("i") * col("i") * col("i")
    must_fail = {"overflow": cf.compile_view("src", [i4.alias("p")], None, ["id"], schema)}
    # ... unless errors are values (the stream job): null and a message, the other rows unharmed
    queries["as_values"] = cf.compile_view("src", [i4.alias("p"), when(col("i") > 1000, i4).otherwise(0).alias("q")],
                                           None, ["id"], schema, error_column="err")
    queries["filter_fails"] = cf.compile_view("src", [col("i").alias("i0")], i4 > 0, ["id"], schema,
                                              error_column="err")
    # checks as the stream job compiles them (errors as values): the same rows fail each one
    queries["checks"] = cf.compile_view("src", [failed(e).alias(f"fail_{name}") for name, (e, _) in CHECKS.items()]
                                        + [first_failed(DROPS).alias("first")], None, ["id"], schema,
                                        error_column="err")
    spec = {"view": view, "queries": queries, "must_fail": must_fail}
    proc = subprocess.run([str(flink_python), "-c", _SCRIPT, json.dumps(spec)], capture_output=True,
                          text=True, timeout=600, env=flink_env.child_env(), cwd=ROOT, stdin=subprocess.DEVNULL)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FS-RESULT ")]
    assert proc.returncode == 0 and lines, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    got = json.loads(lines[-1][len("FS-RESULT "):])

    by_id = {r["id"]: r for r in got["exprs"]}
    assert sorted(by_id) == [r["id"] for r in rows]
    failures = []
    for name, e in exprs.items():
        want = reference.evaluate(e, rows, schema)
        for row, w in zip(rows, want):
            have = by_id[row["id"]][name]
            if not _same_value(w, have):
                failures.append(f"{name} = {e!r} on id={row['id']} {row}: want {w!r}, got {have!r}")
    assert not failures, "\n".join(failures[:20])

    kept = reference.filter_rows(flt, rows, schema)
    assert sorted(r["id"] for r in got["filtered"]) == [r["id"] for r in kept]
    assert {r["id"]: r["i1"] for r in got["filtered"]} == {
        r["id"]: (None if r["i"] is None else r["i"] + 1) for r in kept}
    assert not any(isinstance(v, float) and math.isnan(v) for r in got["filtered"] for v in r.values())
    assert any(r["i"] == 2**40 for r in rows)
    assert isinstance(got["overflow"], str) and "integer overflow in *" in got["overflow"], got["overflow"]

    def fits(v: int) -> bool:
        return -(2**63) <= v < 2**63

    def overflow(i: int) -> str | None:  # i * i overflows first
        return None if fits(i * i) else f"integer overflow in *: {i}"

    want = {r["id"]: {"id": r["id"], "p": None if r["i"] is None or not fits(r["i"] ** 4) else r["i"] ** 4,
                      "q": 0 if r["i"] is None or r["i"] <= 1000 else (r["i"] ** 4 if fits(r["i"] ** 4) else None),
                      "err": None if r["i"] is None else overflow(r["i"])} for r in rows}
    assert {r["id"]: r for r in got["as_values"]} == want
    assert {r["id"]: r["err"] for r in got["filter_fails"]} == {
        r["id"]: overflow(r["i"]) for r in rows if r["i"] not in (None, 0)}  # i ** 4 > 0, or it fails

    want_failed, want_dropped = expected_checks(rows)
    checked = got["checks"]
    assert len(checked) == len(rows) and all(r["err"] is None for r in checked)
    assert {name: sum(r[f"fail_{name}"] for r in checked) for name in CHECKS} == want_failed
    assert {r["id"]: r["first"] for r in checked if r["first"] is not None} == want_dropped
