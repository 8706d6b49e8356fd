"""Checks in materialization: ``fail`` writes nothing, ``drop`` quarantines, ``warn`` counts, run checks
judge the whole run, and every run's outcome is recorded (``featurestore.quality_runs``)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from featurestore import Check, FeatureStore, col, quality_runs
from featurestore.definitions import FeatureView
from featurestore.errors import CheckFailedError, DefinitionError, FeatureStoreError
from tests.repo_helpers import write_repo

UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
END = T0 + timedelta(days=3)

HEAD = """
from datetime import timedelta
from featurestore import Aggregation, Check, Entity, FeatureView, Field, FileSource, col
from featurestore.types import Float64, Int64, String
user = Entity(name="user", join_keys=["user_id"])
src = FileSource(name="src", path="data/txn.parquet", timestamp_field="ts")
"""


def _txns(n: int = 200, seed: int = 7) -> pa.Table:
    """Transactions over two days with negative, zero and null amounts and odd countries."""
    rnd = random.Random(seed)
    rows = {"user_id": [], "ts": [], "amount": [], "country": []}
    for i in range(n):
        rows["user_id"].append(i % 17)
        rows["ts"].append(T0 + timedelta(minutes=13 * i))
        rows["amount"].append(rnd.choice([None, -5.0, -0.25, 0.0, 0.25, 3.5, 100.0]))
        rows["country"].append(rnd.choice([None, "US", "DE", "FR", "GB", "us"]))
    return pa.table({"user_id": pa.array(rows["user_id"], pa.int64()), "ts": pa.array(rows["ts"], TS),
                     "amount": pa.array(rows["amount"], pa.float64()),
                     "country": pa.array(rows["country"], pa.string())})


def _store(tmp_path, view_code: str, table: pa.Table | None = None) -> FeatureStore:
    store = FeatureStore(write_repo(tmp_path, HEAD + view_code, tables={"txn": table or _txns()}))
    store.apply()
    return store


def _fails(row: dict, check: str) -> bool:
    """Whether ``row`` fails a check by the documented rule: false or null fails."""
    if check == "amount_non_negative":
        return not (row["amount"] is not None and row["amount"] >= 0)
    if check == "known_country":
        return row["country"] not in ("US", "DE", "FR")
    raise AssertionError(check)


def _online(store: FeatureStore, users) -> dict:
    got = store.get_online_features(features=["txn:amount"], entity_rows=[{"user_id": u} for u in users]).to_dict()
    return dict(zip(got["user_id"], got["amount"]))


def _latest_kept(table: pa.Table, keep) -> dict:
    latest = {}
    for r in sorted(table.to_pylist(), key=lambda r: r["ts"]):
        if keep(r):
            latest[r["user_id"]] = r["amount"]
    return latest


VIEW = """
txn = FeatureView(name="txn", entities=[user], source=src,
    schema=[Field(name="amount", dtype=Float64), Field(name="country", dtype=String)],
    checks=[{checks}])
"""


def test_drop_quarantines_failing_rows_with_the_check_name_and_writes_the_rest(tmp_path):
    table = _txns()
    store = _store(tmp_path, VIEW.format(checks='Check(col("amount") >= 0, name="amount_non_negative", '
                                         'on_fail="drop"), Check(col("country").isin(["US", "DE", "FR"]), '
                                         'name="known_country", on_fail="drop")'), table)
    rows = table.to_pylist()
    result = store.materialize(T0, END)
    dropped = [r for r in rows if _fails(r, "amount_non_negative") or _fails(r, "known_country")]
    assert 0 < len(dropped) < len(rows)
    assert result.rows == len(rows) - len(dropped)

    offline = store.offline_store.read("txn").to_pylist()
    assert sorted(r["event_timestamp"] for r in offline) == sorted(r["ts"] for r in rows if r not in dropped)
    quarantine = store.offline_store.quarantine.read("txn").to_pylist()
    want = sorted((r["ts"], "amount_non_negative" if _fails(r, "amount_non_negative") else "known_country")
                  for r in dropped)  # the first drop check the row fails, in declaration order
    assert sorted((q["event_timestamp"], q["check"]) for q in quarantine) == want
    assert {"user_id", "amount", "country", "check", "quarantined_at"} <= set(quarantine[0])
    assert all(q["amount"] is None or q["amount"] < 0 or q["country"] not in ("US", "DE", "FR") for q in quarantine)
    # online: each user's latest row among the kept ones, never a dropped one
    assert _online(store, range(17)) == {u: _latest_kept(table, lambda r: r not in dropped).get(u) for u in range(17)}

    [run] = quality_runs.runs(store, "txn")
    assert run.kind == "materialize" and run.rows_in == len(rows) and run.rows_written == result.rows
    by_name = {c["name"]: c for c in run.checks}
    for name in ("amount_non_negative", "known_country"):
        failing = sum(_fails(r, name) for r in rows)  # each check counts every row it fails
        assert by_name[name] | {"detail": None} == {"name": name, "on_fail": "drop", "rows_checked": len(rows),
                                                    "rows_failed": failing, "action": "dropped", "detail": None}

    store.materialize(T0, END)  # a rerun replaces the interval's quarantined rows, it does not repeat them
    assert store.offline_store.quarantine.read("txn").num_rows == len(dropped)
    assert len(quality_runs.runs(store, "txn")) == 2


def test_an_export_from_the_source_leaves_out_the_rows_drop_checks_drop(tmp_path):
    table = _txns()
    store = _store(tmp_path, VIEW.format(checks='Check(col("amount") >= 0, name="amount_non_negative", '
                                         'on_fail="drop"), Check.not_null("country", on_fail="warn")'), table)
    entity = pa.table({"user_id": pa.array(range(17), pa.int64()), "ts": pa.array([END] * 17, TS)})
    got = store.get_historical_features(entity, ["txn:amount"], timestamp_field="ts").to_arrow().to_pylist()
    kept = _latest_kept(table, lambda r: not _fails(r, "amount_non_negative"))
    assert {r["user_id"]: r["amount"] for r in got} == {u: kept.get(u) for u in range(17)}
    assert any(kept.get(u) != _latest_kept(table, lambda r: True).get(u) for u in range(17))


def test_fail_stops_the_run_with_nothing_written_anywhere(tmp_path):
    table = _txns()
    store = _store(tmp_path, VIEW.format(checks='Check(col("amount") >= 0, name="amount_non_negative", '
                                         'on_fail="fail"), Check(col("country").isin(["US"]), on_fail="drop")'),
                   table)
    failing = sum(_fails(r, "amount_non_negative") for r in table.to_pylist())
    with pytest.raises(CheckFailedError, match=rf"check 'amount_non_negative' failed \({failing} of 200 rows") as exc:
        store.materialize(T0, END)
    assert exc.value.view == "txn"
    assert "txn" not in store.offline_store.views()
    assert "txn" not in store.offline_store.quarantine.views()
    assert set(_online(store, range(17)).values()) == {None}
    [run] = quality_runs.runs(store, "txn")  # the stopped run is on record, with what failed
    assert run.rows_written == 0
    assert [(c["name"], c["action"], c["rows_failed"]) for c in run.checks][0] == (
        "amount_non_negative", "failed", failing)


def test_warn_writes_every_row_and_records_the_count(tmp_path):
    table = _txns()
    store = _store(tmp_path, VIEW.format(checks='Check(col("country").isin(["US", "DE", "FR"]), on_fail="warn"), '
                                         'Check.not_null("amount")'), table)
    rows = table.to_pylist()
    assert store.materialize(T0, END).rows == len(rows)
    assert store.offline_store.read("txn").num_rows == len(rows)
    assert "txn" not in store.offline_store.quarantine.views()
    assert _online(store, range(17)) == {u: _latest_kept(table, lambda r: True).get(u) for u in range(17)}
    [run] = quality_runs.runs(store, "txn")
    assert store.materialize(T0, END).views[0].checks == run.checks  # the run's result says so too
    assert [(c["name"], c["on_fail"], c["rows_failed"], c["action"]) for c in run.checks] == [
        ("col('country').isin(['US', 'DE', 'FR'])", "warn", sum(_fails(r, "known_country") for r in rows), "warned"),
        ("amount_not_null", "warn", sum(r["amount"] is None for r in rows), "warned")]


def test_run_checks_judge_the_rows_a_run_reads(tmp_path):
    store = _store(tmp_path, VIEW.format(checks='Check.row_count(min=10, max=100, on_fail="fail"), '
                                         'Check.fresh(max_age=timedelta(hours=2))'))
    one_day = [T0, T0 + timedelta(days=1)]  # 13-minute steps: 111 rows
    with pytest.raises(CheckFailedError, match=r"check 'row_count' failed \(111 rows, expected at least 10 and "
                                               r"at most 100\)"):
        store.materialize(*one_day)
    assert "txn" not in store.offline_store.views()
    last = T0 + timedelta(minutes=13 * 199)
    result = store.materialize(last - timedelta(hours=3), last + timedelta(hours=1))  # 13 or 14 rows, fresh
    assert 10 <= result.rows <= 100
    stale = store.materialize(last - timedelta(hours=3), last + timedelta(hours=3))  # newest 3h before the end
    runs = quality_runs.runs(store, "txn")
    assert [{c["name"]: c["action"] for c in r.checks} for r in runs] == [
        {"row_count": "failed", "fresh": "passed"}, {"row_count": "passed", "fresh": "passed"},
        {"row_count": "passed", "fresh": "warned"}]
    assert stale.rows == result.rows  # warn: written all the same
    assert runs[2].checks[1]["rows_failed"] == result.rows


def test_checks_see_transform_outputs_and_source_columns_the_view_does_not_store(tmp_path):
    code = """
txn = FeatureView(name="txn", entities=[user], source=src,
    transform=[(col("amount") * 2).alias("double")],
    schema=[Field(name="double", dtype=Float64)],
    checks=[Check(col("double") > 1, name="big", on_fail="drop"),
            Check(col("country") == "US", name="us", on_fail="warn")])
"""
    table = _txns()
    store = _store(tmp_path, code, table)
    rows = table.to_pylist()
    kept = [r for r in rows if r["amount"] is not None and r["amount"] * 2 > 1]
    assert store.materialize(T0, END).rows == len(kept)
    assert sorted(store.offline_store.read("txn").column("double").to_pylist()) == sorted(r["amount"] * 2 for r in kept)
    assert set(store.offline_store.quarantine.read("txn").column("check").to_pylist()) == {"big"}
    [run] = quality_runs.runs(store, "txn")
    assert run.checks[1]["rows_failed"] == sum(r["country"] != "US" for r in rows)


def test_drop_checks_run_before_aggregation(tmp_path):
    code = """
txn = FeatureView(name="txn", entities=[user], source=src,
    aggregations=[Aggregation(column="amount", function="sum", window=None),
                  Aggregation(column="amount", function="count", window=None)],
    checks=[Check(col("amount") >= 0, name="amount_non_negative", on_fail="drop")])
"""
    table = _txns()
    store = _store(tmp_path, code, table)
    store.materialize(T0, END)
    got = store.get_online_features(features=["txn:amount_sum_lifetime", "txn:amount_count_lifetime"],
                                    entity_rows=[{"user_id": u} for u in range(17)]).to_dict()
    for u, total, count in zip(got["user_id"], got["amount_sum_lifetime"], got["amount_count_lifetime"]):
        kept = [r["amount"] for r in table.to_pylist() if r["user_id"] == u and not _fails(r, "amount_non_negative")]
        assert (total, count) == (pytest.approx(sum(kept)), len(kept))
    assert store.offline_store.read("txn").num_rows == sum(not _fails(r, "amount_non_negative")
                                                           for r in table.to_pylist())


def test_checks_round_trip_through_the_registry_and_old_specs_load(tmp_path):
    store = _store(tmp_path, VIEW.format(checks='Check(col("amount") >= 0, name="amount_non_negative", '
                                         'on_fail="drop"), Check(col("country").isin(["US", "DE"])), '
                                         'Check.not_null("user_id", on_fail="fail"), Check.row_count(min=3), '
                                         'Check.fresh(max_age=timedelta(hours=2), on_fail="fail")'))
    view = store.catalog().view("txn")
    assert [(c.name, c.kind, c.on_fail) for c in view.checks] == [
        ("amount_non_negative", "row", "drop"), ("col('country').isin(['US', 'DE'])", "row", "warn"),
        ("user_id_not_null", "row", "fail"), ("row_count", "row_count", "warn"), ("fresh", "fresh", "fail")]
    spec = view.to_spec()
    again = FeatureView.from_spec(spec)
    assert again.to_spec() == spec
    assert again.checks[1].expr.same_as(col("country").isin(["US", "DE"]))
    assert again.checks[4].max_age == timedelta(hours=2)
    del spec["checks"]  # a registry written before checks existed
    assert FeatureView.from_spec(spec).checks == ()


@pytest.mark.parametrize("checks, message", [
    ('Check(col("amount") + 1)', "must be a Bool expression"),
    ('Check(col("nope") > 1)', "unknown column 'nope'"),
    ('Check(col("country").isin([1, 2]))', "isin compares String with a Int64 value"),
])
def test_apply_refuses_a_check_that_cannot_run(tmp_path, checks, message):
    with pytest.raises(FeatureStoreError, match=message):
        _store(tmp_path, VIEW.format(checks=checks))


def test_a_view_with_drop_checks_leaves_the_quarantine_columns_free(tmp_path):
    code = """
from featurestore.types import Bool
txn = FeatureView(name="txn", entities=[user], source=src, transform=[(col("amount") > 0).alias("check")],
    schema=[Field(name="check", dtype=Bool)], checks=[Check(col("amount") >= 0, on_fail="drop")])
"""
    with pytest.raises(FeatureStoreError, match="field 'check' is a column of the quarantine table"):
        _store(tmp_path, code)


def test_check_definitions_are_validated():
    for bad, message in [
        (lambda: Check(col("a") > 1, on_fail="explode"), "on_fail must be one of"),
        (lambda: Check.row_count(on_fail="drop", min=1), "on_fail must be one of 'warn', 'fail'"),
        (lambda: Check.row_count(), "needs min=, max= or both"),
        (lambda: Check.row_count(min=5, max=2), "min 5 is above max 2"),
        (lambda: Check.fresh(max_age=timedelta(0)), "positive timedelta"),
        (lambda: Check("amount > 0"), "Bool expression"),
        (lambda: col("a").isin([]), "at least one value"),
        (lambda: col("a").isin([1, None]), "non-null constants"),
        (lambda: col("a").isin("US"), "a list of values"),
    ]:
        with pytest.raises(DefinitionError, match=message):
            bad()
    from featurestore import FileSource

    src = FileSource(name="s", path="x.parquet", timestamp_field="ts")
    with pytest.raises(DefinitionError, match="check 'a' is declared twice"):
        FeatureView(name="v", source=src, checks=[Check(col("a") > 1, name="a"), Check.not_null("b", name="a")])


# ------------------------------------------------------------------ the stream job's sink

STREAM = """
from featurestore import KafkaSource
from featurestore.types import Float64
hist = FileSource(name="clicks_history", path="data/clicks.parquet", timestamp_field="ts")
clicks = KafkaSource(name="clicks", bootstrap_servers="{bootstrap}", topic="{topic}", batch_source=hist,
                     watermark_delay=timedelta(seconds=5), allowed_lateness=timedelta(hours=1))
last = FeatureView(name="last", entities=[user], source=clicks, ttl=timedelta(days=1),
    transform=[(col("price") * 2).alias("price2")], schema=[Field(name="price2", dtype=Float64)],
    checks=[Check(col("price") >= 0, name="price_non_negative", on_fail="drop"),
            Check(col("kind").isin(["a", "b"]), name="known_kind", on_fail="warn"),
            Check(col("price2") < 100, name="small", on_fail="fail"),
            Check.row_count(min=1000)])
"""
CLICKS = pa.schema([("user_id", pa.int64()), ("price", pa.float64()), ("kind", pa.string()), ("ts", TS)])


def test_stream_sink_dead_letters_drop_and_fail_check_failures_and_counts_warnings(tmp_path, kafka_bootstrap):
    import uuid

    from connectors.kafka import KafkaClient, KafkaConfig
    from featurestore.streaming.blueprint import CHECK_PREFIX, build_blueprint
    from featurestore.streaming.sink import EventSink

    topic = f"fs-checks-{uuid.uuid4().hex[:10]}"
    store = FeatureStore(write_repo(tmp_path, HEAD + STREAM.format(bootstrap=kafka_bootstrap, topic=topic),
                                    tables={"clicks": pa.Table.from_pylist([], schema=CLICKS), "txn": _txns()}))
    store.apply()
    plan = build_blueprint(store, "last")
    assert plan.checks == (("price_non_negative", "drop"), ("known_kind", "warn"), ("small", "fail"))
    assert "kind" in {c.name for c in plan.columns}  # read by a check only, still carried by each message
    assert all(f"`{CHECK_PREFIX}{i}`" in plan.select for i in range(3))

    rnd = random.Random(3)
    now = datetime.now(UTC).replace(microsecond=0)
    events = [{"user_id": i % 5, "price": rnd.choice([None, -1.0, 0.0, 2.5, 49.75, 50.0, 80.0]),
               "kind": rnd.choice([None, "a", "b", "c"]), "ts": now - timedelta(seconds=300 - i)} for i in range(300)]

    def verdicts(e):  # false or null fails
        price2 = None if e["price"] is None else e["price"] * 2
        return [not (e["price"] is not None and e["price"] >= 0), e["kind"] not in ("a", "b"),
                not (price2 is not None and price2 < 100)]

    names = plan.output_columns
    cols: list[list] = [[] for _ in range(len(names) + 6 + 3)]
    for offset, e in enumerate(events):
        values = {"user_id": str(e["user_id"]), "price2": None if e["price"] is None else repr(e["price"] * 2),
                  "event_timestamp": e["ts"].replace(tzinfo=None).isoformat(sep=" ")}
        for j, name in enumerate(names):
            cols[j].append(values.get(name))
        for j, value in enumerate([0, offset, 1_767_225_600_000, None, True, None, *verdicts(e)]):
            cols[len(names) + j].append(value)
    sink = EventSink(plan, store)
    out = sink.handle(cols)
    sink.close()

    dropped = {n: ("price_non_negative" if v[0] else "small") for n, v in enumerate(map(verdicts, events))
               if v[0] or v[2]}
    assert 0 < len(dropped) < len(events)
    assert out.check_dropped == len(dropped) and out.admitted == len(events) - len(dropped)
    assert out.check_failures == {name: sum(verdicts(e)[j] for e in events)
                                  for j, name in enumerate(["price_non_negative", "known_kind", "small"])}
    assert out.check_warned == sum(verdicts(e)[1] and not (verdicts(e)[0] or verdicts(e)[2]) for e in events)
    letters = KafkaClient(KafkaConfig(bootstrap_servers=kafka_bootstrap)).read_topic(f"{topic}.dead-letter")
    assert {m.json()["offset"]: m.json()["reason"] for m in letters} == {
        n: f"check {name} failed" for n, name in dropped.items()}
    appended = store.offline_store.appends.read("last").to_pylist()
    assert sorted(r["event_timestamp"] for r in appended) == sorted(
        e["ts"] for n, e in enumerate(events) if n not in dropped)
    [run] = quality_runs.runs(store, "last")  # one commit, one record; row_count is judged by runs only
    assert run.kind == "stream" and run.rows_in == len(events) and run.rows_written == out.admitted
    assert [(c["name"], c["rows_checked"], c["rows_failed"], c["action"]) for c in run.checks] == [
        (name, len(events), out.check_failures[name], action)
        for name, action in (("price_non_negative", "dropped"), ("known_kind", "warned"), ("small", "dropped"))]


SPARK = {"type": "spark", "master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2"}}


@pytest.mark.slow
def test_spark_materialization_keeps_drops_quarantines_and_counts_as_the_local_engine(tmp_path):
    import json

    code = VIEW.format(checks='Check(col("amount") >= 0, name="amount_non_negative", on_fail="drop"), '
                              'Check(col("country").isin(["US", "DE", "FR"]), name="known_country", on_fail="drop"), '
                              'Check.not_null("country", on_fail="warn"), Check.row_count(min=1)')
    table = _txns(seed=11)
    outcomes = {}
    for engine in ("local", "spark"):
        repo = tmp_path / engine
        write_repo(repo, HEAD + code, tables={"txn": table})
        if engine == "spark":
            with open(repo / "featurestore.yaml", "a") as f:
                f.write(f"engine: {json.dumps(SPARK)}\n")
        store = FeatureStore(repo)
        store.apply()
        result = store.materialize(T0, END)
        quarantine = store.offline_store.quarantine.read("txn")
        [run] = quality_runs.runs(store, "txn")
        outcomes[engine] = (
            result.rows, sorted(store.offline_store.read("txn").column("event_timestamp").to_pylist()),
            sorted(zip(quarantine.column("event_timestamp").to_pylist(), quarantine.column("check").to_pylist())),
            [(c["name"], c["rows_checked"], c["rows_failed"], c["action"]) for c in run.checks],
            _online(store, range(17)))
    assert outcomes["spark"] == outcomes["local"]
    assert outcomes["local"][2] and outcomes["local"][0] < table.num_rows

    repo = tmp_path / "spark"  # fail: the Spark run stops before its executors write anything
    (repo / "features.py").write_text(HEAD + VIEW.format(checks='Check.not_null("amount", on_fail="fail")'))
    store = FeatureStore(repo)
    store.apply()
    before = store.offline_store.read("txn").num_rows
    with pytest.raises(CheckFailedError, match="check 'amount_not_null' failed"):
        store.materialize(T0 - timedelta(days=1), END)
    assert store.offline_store.read("txn").num_rows == before
