"""``featurestore drift``: a view's recent offline data (materialized and appended rows) against a
training export read through its manifest, or against another window; judged by the view's
drift_thresholds; recorded for the feature server's ``/metrics``."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from featurestore import FeatureStore, FeatureView, FileSource, coverage, drift_stats
from featurestore.cli import DRIFT_EXIT, main
from featurestore.definitions import DEFAULT_DRIFT_THRESHOLDS
from featurestore.errors import DefinitionError
from featurestore.quality_runs import QualityRun
from featurestore.quality_runs import record as record_run
from tests.repo_helpers import write_repo
from tests.serve_helpers import serve

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
BASE = (T0, T0 + timedelta(days=7))
RECENT = (T0 + timedelta(days=10), T0 + timedelta(days=11))

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource, PushSource
from featurestore.types import Bool, Float64, Int64, String
from transforms import Aggregation
user = Entity(name="user", join_keys=["user_id"])
txn = FeatureView(name="txn", entities=[user], ttl=timedelta(days=3),
    source=FileSource(name="txn_src", path="data/txn.parquet", timestamp_field="ts"),
    schema=[Field(name="amount", dtype=Float64), Field(name="items", dtype=Int64),
            Field(name="country", dtype=String), Field(name="flag", dtype=Bool)],
    drift_thresholds=THRESHOLDS)
live = FeatureView(name="live", entities=[user], ttl=timedelta(hours=12),
    source=PushSource(name="live_push",
                      batch_source=FileSource(name="live_src", path="data/live.parquet", timestamp_field="ts")),
    schema=[Field(name="speed", dtype=Float64)])
spend = FeatureView(name="spend", entities=[user], ttl=timedelta(days=2),
    source=FileSource(name="spend_src", path="data/txn.parquet", timestamp_field="ts"),
    aggregations=[Aggregation(column="amount", function="sum", window=timedelta(hours=3))])
"""
THRESHOLDS = {"items": {"psi": 0.5}, "country": {"chi2_pvalue": 0.001}}
FEATURES = ["txn:amount", "txn:items", "txn:country", "txn:flag", "spend:amount_sum_3h"]


def _txn_rows(rng: random.Random, n: int, window: tuple[datetime, datetime], shifted: bool) -> dict[str, list]:
    seconds = int((window[1] - window[0]).total_seconds())
    countries = (["US", "DE", "FR"], [0.2, 0.3, 0.5] if shifted else [0.5, 0.3, 0.2])
    return {"user_id": [rng.randrange(300) for _ in range(n)],
            "ts": [window[0] + timedelta(seconds=rng.randrange(seconds)) for _ in range(n)],
            "amount": [rng.gauss(58 if shifted else 50, 10) for _ in range(n)],
            "items": [rng.randrange(1, 9) for _ in range(n)],
            "country": rng.choices(*countries, k=n),
            "flag": [rng.random() < 0.1 for _ in range(n)]}


def _table(columns: dict[str, list]) -> pa.Table:
    return pa.table({k: pa.array(v, TS) if k == "ts" else v for k, v in columns.items()})


def _concat(*parts: dict[str, list]) -> dict[str, list]:
    return {k: [v for p in parts for v in p[k]] for k in parts[0]}


def _repo(tmp_path: Path, *, shifted: bool, thresholds: dict = THRESHOLDS, seed: int = 5) -> Path:
    rng = random.Random(seed)
    txn = _concat(_txn_rows(rng, 3000, BASE, False), _txn_rows(rng, 1500, RECENT, shifted))
    live = {"user_id": [1], "ts": [T0], "speed": [1.0]}
    repo = write_repo(tmp_path / "repo", CODE.replace("THRESHOLDS", repr(thresholds)),
                      tables={"txn": _table(txn), "live": _table(live)})
    store = FeatureStore(repo)
    store.apply()
    store.materialize(T0 - timedelta(days=1), T0 + timedelta(days=12), ["txn", "spend"], online=False)
    entities = pa.table({"user_id": pa.array([rng.randrange(300) for _ in range(1500)], pa.int64()),
                         "event_timestamp": pa.array([BASE[0] + timedelta(days=1, seconds=rng.randrange(6 * 86400))
                                                      for _ in range(1500)], TS)})
    store.get_historical_features(entities, FEATURES).to_parquet(tmp_path / "train.parquet")
    store.get_historical_features(entities, FEATURES, full_feature_names=True).to_parquet(tmp_path / "full.parquet")
    store.close()
    return repo


def _window(w: tuple[datetime, datetime]) -> str:
    return f"{w[0].isoformat()}..{w[1].isoformat()}"


def _drift(repo: Path, *args: str):
    return CliRunner().invoke(main, ["--repo", str(repo), "drift", *args])


def _json(result) -> dict:
    assert result.exit_code in (0, DRIFT_EXIT), result.output
    return json.loads(result.output)


def _source_window(repo: Path, window: tuple[datetime, datetime]) -> pa.Table:
    """The source's rows in [start, end), read straight from its file."""
    rows = pq.read_table(repo / "data" / "txn.parquet")
    ts = rows.column("ts")
    return rows.filter(pc.and_(pc.greater_equal(ts, pa.scalar(window[0], TS)), pc.less(ts, pa.scalar(window[1], TS))))


def _expected(baseline: pa.Table, recent: pa.Table, columns: dict[str, str]) -> dict[str, dict[str, float]]:
    """Each feature's statistics computed here from the two tables (``columns``: feature -> baseline column)."""
    out = {}
    for feature, column in columns.items():
        b, r = baseline.column(column).drop_null(), recent.column(feature).drop_null()
        if pa.types.is_floating(b.type) or pa.types.is_integer(b.type):
            out[feature] = drift_stats.numeric(b.cast(pa.float64()).to_numpy(), r.cast(pa.float64()).to_numpy())
        else:
            counts = lambda col: {v: col.to_pylist().count(v) for v in set(col.to_pylist())}  # noqa: E731
            out[feature] = drift_stats.categorical(counts(b), counts(r))
    return out


@pytest.mark.parametrize("shifted", [False, True])
def test_drift_against_an_export_flags_shifted_features_only(tmp_path, shifted):
    repo = _repo(tmp_path, shifted=shifted)
    result = _drift(repo, "txn", "--baseline", str(tmp_path / "train.parquet.manifest.json"),
                    "--recent-window", _window(RECENT), "--json")
    report = _json(result)
    assert result.exit_code == (DRIFT_EXIT if shifted else 0)
    assert report["drifted"] == (["amount", "country"] if shifted else [])
    features = {f["feature"]: f for f in report["features"]}
    assert list(features) == ["amount", "items", "country", "flag"]

    export = pq.read_table(tmp_path / "train.parquet")
    recent = _source_window(repo, RECENT)
    expected = _expected(export, recent, {f: f for f in features})
    for name, f in features.items():
        assert f["statistics"] == pytest.approx(expected[name], rel=1e-9), name
        assert (f["baseline_rows"], f["recent_rows"]) == (export.num_rows, recent.num_rows)
        assert f["baseline_nulls"] == export.column(name).null_count
    # the view's thresholds: its own bound where it sets one, the defaults elsewhere
    assert features["items"]["bounds"] == {"psi": 0.5, "ks": 0.1, "ks_pvalue": None}
    assert features["country"]["bounds"] == {"psi": 0.2, "chi2_pvalue": 0.001}
    assert features["amount"]["kind"] == "number" and features["country"]["kind"] == "category"
    if shifted:
        assert set(features["amount"]["crossed"]) == {"psi", "ks"}
        assert set(features["country"]["crossed"]) == {"psi", "chi2_pvalue"}

    # the export itself (manifest beside it), named view__feature, and --until with --recent give the same
    again = _json(_drift(repo, "txn", "--baseline", str(tmp_path / "full.parquet"), "--until",
                         RECENT[1].isoformat(), "--recent", "24h", "--json"))
    assert [f["statistics"] for f in again["features"]] == [f["statistics"] for f in report["features"]]
    assert again["baseline"] == f"export {(tmp_path / 'full.parquet').resolve()}"

    table = _drift(repo, "txn", "--baseline", str(tmp_path / "train.parquet.manifest.json"),
                   "--recent-window", _window(RECENT))
    lines = {line.split("│")[1].strip(): line for line in table.output.splitlines() if line.count("│") > 5}
    assert ("DRIFT" in lines["amount"]) == shifted and ("DRIFT" in lines["country"]) == shifted
    assert "ok" in lines["items"] and "ok" in lines["flag"]


def test_thresholds_in_the_view_decide_the_verdict(tmp_path):
    repo = _repo(tmp_path, shifted=True, thresholds={"amount": {"psi": None, "ks": 0.9}, "*": {"psi": 5.0}})
    report = _json(_drift(repo, "txn", "--baseline", str(tmp_path / "train.parquet.manifest.json"),
                          "--recent-window", _window(RECENT), "--json", "--no-record"))
    features = {f["feature"]: f for f in report["features"]}
    assert features["amount"]["statistics"]["psi"] > 0.2 and features["amount"]["statistics"]["ks"] > 0.1
    assert features["amount"]["bounds"] == {"psi": None, "ks": 0.9, "ks_pvalue": None}
    assert features["country"]["bounds"]["psi"] == 5.0
    assert report["drifted"] == []
    assert FeatureStore(repo).offline_store.drift.views() == []  # --no-record kept nothing


def test_two_windows_of_offline_data(tmp_path):
    repo = _repo(tmp_path, shifted=True)
    report = _json(_drift(repo, "txn", "--baseline-window", _window(BASE), "--recent-window", _window(RECENT),
                          "--json"))
    baseline, recent = _source_window(repo, BASE), _source_window(repo, RECENT)
    expected = _expected(baseline, recent, {"amount": "amount", "items": "items", "country": "country",
                                            "flag": "flag"})
    for f in report["features"]:
        assert f["statistics"] == pytest.approx(expected[f["feature"]], rel=1e-9)
        assert (f["baseline_rows"], f["recent_rows"]) == (baseline.num_rows, recent.num_rows)
    assert report["drifted"] == ["amount", "country"]
    assert report["baseline"] == f"window {_window(BASE)}"
    # the same window on both sides: nothing drifts
    same = _json(_drift(repo, "txn", "--baseline-window", _window(BASE), "--recent-window", _window(BASE), "--json"))
    assert same["drifted"] == [] and all(f["statistics"]["psi"] == 0 for f in same["features"])
    assert [f["statistics"]["ks"] for f in same["features"] if f["kind"] == "number"] == [0, 0]


def test_recent_data_includes_pushed_rows_and_defaults_to_the_last_day(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    rng = random.Random(11)
    base = (now - timedelta(days=9), now - timedelta(days=2))
    batch = {"user_id": [rng.randrange(100) for _ in range(2000)],
             "ts": [base[0] + timedelta(seconds=rng.randrange(7 * 86400)) for _ in range(2000)],
             "speed": [rng.gauss(50, 5) for _ in range(2000)]}
    materialized_recent = {"user_id": [rng.randrange(100) for _ in range(600)],
                           "ts": [now - timedelta(hours=20, seconds=rng.randrange(3600)) for _ in range(600)],
                           "speed": [rng.gauss(50, 5) for _ in range(600)]}
    repo = write_repo(tmp_path / "repo", CODE.replace("THRESHOLDS", "{}"),
                      tables={"txn": _table(_txn_rows(rng, 10, BASE, False)),
                              "live": _table(_concat(batch, materialized_recent))})
    store = FeatureStore(repo)
    store.apply()
    store.materialize(now - timedelta(days=10), now, ["live"], online=False)
    args = ["live", "--baseline-window", _window(base), "--json"]
    before = _json(_drift(repo, *args))
    assert before["drifted"] == [] and before["features"][0]["recent_rows"] == 600

    pushed = {"user_id": [rng.randrange(100) for _ in range(900)],
              "ts": [now - timedelta(hours=1, seconds=rng.randrange(3 * 3600)) for _ in range(900)],
              "speed": [rng.gauss(65, 5) for _ in range(900)]}
    store.push("live_push", pushed, to="offline")  # appended rows, never materialized
    after = _json(_drift(repo, *args))
    feature = after["features"][0]
    assert feature["recent_rows"] == 600 + 900
    assert after["drifted"] == ["speed"]
    assert datetime.fromisoformat(after["recent_end"]) - datetime.fromisoformat(after["recent_start"]) == timedelta(days=1)
    recent = np.array(materialized_recent["speed"] + pushed["speed"])
    assert feature["statistics"] == pytest.approx(drift_stats.numeric(np.array(batch["speed"]), recent), rel=1e-9)


def test_drift_names_what_is_wrong(tmp_path):
    repo = _repo(tmp_path, shifted=False)
    manifest = str(tmp_path / "train.parquet.manifest.json")
    cases = [
        (["spend", "--baseline", manifest], "aggregates its events"),
        (["live", "--baseline", manifest], "has no feature of view 'live'"),
        (["txn", "--baseline", manifest, "--baseline-window", _window(BASE)], "exactly one of --baseline"),
        (["txn", "--baseline-window", "2026-01-01", "--recent-window", _window(RECENT)], "START..END"),
        (["txn", "--baseline-window", _window(BASE), "--recent", "1 day"], "--recent takes a whole number"),
        (["txn", "--baseline-window", _window(BASE), "--recent-window", "2027-01-01..2027-01-02"],
         "no offline rows in the window 2027-01-01T00:00:00+00:00..2027-01-02T00:00:00+00:00"),
        (["nope", "--baseline-window", _window(BASE)], "feature view 'nope' is not in the registry"),
    ]
    for args, message in cases:
        result = _drift(repo, *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, (args, result.output)
    Path(tmp_path / "train.parquet").unlink()
    result = _drift(repo, "txn", "--baseline", manifest)
    assert result.exit_code == 1 and "is gone" in result.output and "export --reproduce" in result.output
    # an aggregation view's windows compare the event columns it stores
    report = _json(_drift(repo, "spend", "--baseline-window", _window(BASE), "--recent-window", _window(RECENT),
                          "--json"))
    assert [f["feature"] for f in report["features"]] == ["amount"]


def test_drift_thresholds_are_checked_and_kept_in_the_registry(tmp_path):
    source = FileSource(name="s", path="data/x.parquet", timestamp_field="ts")
    bad = [({"amount": {"psi": -1}}, "'psi'] must be None or a number from 0 to inf"),
           ({"amount": {"ks": 1.5}}, "'ks'] must be None or a number from 0 to 1"),
           ({"amount": {"kl": 0.1}}, "unknown statistic 'kl'"),
           ({"amount": 0.2}, "must be a dict like"),
           (["amount"], "drift_thresholds maps feature names")]
    for given, message in bad:
        with pytest.raises(DefinitionError, match=message.replace("[", r"\[").replace("]", r"\]")):
            FeatureView(name="v", source=source, drift_thresholds=given)
    view = FeatureView(name="v", source=source, drift_thresholds={"*": {"ks": None}, "a": {"psi": 0.1}})
    assert view.drift_bounds("a") == {**DEFAULT_DRIFT_THRESHOLDS, "ks": None, "psi": 0.1}
    assert view.drift_bounds("b") == {**DEFAULT_DRIFT_THRESHOLDS, "ks": None}
    assert FeatureView.from_spec(view.to_spec()).drift_thresholds == view.drift_thresholds
    assert "drift_thresholds" not in FeatureView(name="v", source=source).to_spec()  # stored specs unchanged

    repo = _repo(tmp_path, shifted=False)
    assert FeatureStore(repo).get_feature_view("txn").drift_thresholds == THRESHOLDS
    assert FeatureStore(repo).plan().empty
    # a new bound is a change of the view's drift_thresholds alone: what was materialized still counts
    (repo / "features.py").write_text((repo / "features.py").read_text().replace("0.5", "0.6"))
    store = FeatureStore(repo)
    assert [(c.name, c.fields) for c in store.plan().changes] == [("txn", ("drift_thresholds",))]
    store.apply()
    assert store.get_feature_view("txn").drift_bounds("items")["psi"] == 0.6
    assert coverage.covers(store, "txn", BASE[0], RECENT[1])
    (repo / "features.py").write_text((repo / "features.py").read_text().replace("'items'", "'itemz'"))
    result = CliRunner().invoke(main, ["--repo", str(repo), "apply"])
    assert result.exit_code == 1
    assert "drift_thresholds names 'itemz', which is not a feature of the view" in result.output


def _gauges(text: str) -> dict[tuple, float]:
    """(metric name, sorted labels) -> value, by prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_export_the_newest_drift_and_check_failures(tmp_path):
    repo = _repo(tmp_path, shifted=True)
    manifest = str(tmp_path / "train.parquet.manifest.json")
    first = _json(_drift(repo, "txn", "--baseline", manifest, "--recent-window", _window(RECENT), "--json"))
    store = FeatureStore(repo)
    started = datetime.now(UTC)
    record_run(store, "txn", QualityRun("materialize", started, started + timedelta(seconds=2), rows_in=100,
                                        rows_written=93, checks=[
        {"name": "amount_non_negative", "on_fail": "drop", "rows_checked": 100, "rows_failed": 7, "action": "dropped"},
        {"name": "country_known", "on_fail": "warn", "rows_checked": 100, "rows_failed": 0, "action": "passed"}]))
    # another view's quality records cannot be read: its gauges go missing, the others' do not
    record_run(store, "live", QualityRun("materialize", started, started, checks=[]))
    log = repo / "data" / "offline" / "test" / "_quality" / "live" / "_delta_log"
    for commit in log.glob("*.json"):
        commit.write_text("not a commit")
    with serve(repo, env={"FEATURESTORE_QUALITY_METRICS_SECONDS": "0"}) as server:
        status, text, _ = server.request("GET", "/metrics")
        assert status == 200
        assert "quality metrics of view 'live' not refreshed" in server.log_text()
        gauges = _gauges(str(text))
        for f in first["features"]:
            for statistic, value in f["statistics"].items():
                key = ("featurestore_feature_drift", (("feature", f["feature"]), ("statistic", statistic),
                                                      ("view", "txn")))
                assert gauges[key] == pytest.approx(value, rel=1e-12)
            assert gauges[("featurestore_feature_drifted", (("feature", f["feature"]), ("view", "txn")))] == \
                (1.0 if f["feature"] in ("amount", "country") else 0.0)
        assert gauges[("featurestore_feature_drift_timestamp_seconds", (("view", "txn"),))] == pytest.approx(
            datetime.fromisoformat(first["computed_at"]).timestamp())
        assert gauges[("featurestore_check_failed_rows", (("check", "amount_non_negative"), ("view", "txn")))] == 7
        assert gauges[("featurestore_check_failed_rows", (("check", "country_known"), ("view", "txn")))] == 0

        # newer runs replace what is exported: a comparison without drift, a run failing more rows
        second = _json(_drift(repo, "txn", "--baseline-window", _window(BASE), "--recent-window", _window(BASE),
                              "--json"))
        later = datetime.now(UTC)
        record_run(store, "txn", QualityRun("stream", later, later + timedelta(seconds=1), checks=[
            {"name": "amount_non_negative", "on_fail": "drop", "rows_checked": 50, "rows_failed": 12,
             "action": "dropped"}]))
        gauges = _gauges(str(server.request("GET", "/metrics")[1]))
        assert gauges[("featurestore_feature_drift_timestamp_seconds", (("view", "txn"),))] == pytest.approx(
            datetime.fromisoformat(second["computed_at"]).timestamp())
        drifted = {k[1][0][1]: v for k, v in gauges.items() if k[0] == "featurestore_feature_drifted"}
        assert drifted == {"amount": 0.0, "items": 0.0, "country": 0.0, "flag": 0.0}
        ks = {k[1][0][1]: v for k, v in gauges.items()
              if k[0] == "featurestore_feature_drift" and ("statistic", "ks") in k[1]}
        assert ks == {"amount": 0.0, "items": 0.0}
        failed = {k[1]: v for k, v in gauges.items() if k[0] == "featurestore_check_failed_rows"}
        assert failed == {(("check", "amount_non_negative"), ("view", "txn")): 12.0}
