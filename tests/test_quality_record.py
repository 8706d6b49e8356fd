"""Each materialization run (and stream commit) leaves one quality record per view with the statistics
of the rows it wrote, and ``featurestore stats`` shows them."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from featurestore import FeatureStore
from featurestore.cli import main
from featurestore.quality_stats import QUANTILES
from tests.repo_helpers import write_repo

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource
from featurestore.types import Bool, Float64, Int64, String
user = Entity(name="user", join_keys=["user_id"])
user_txn = FeatureView(name="user_txn", entities=[user], ttl=timedelta(days=30),
    source=FileSource(name="txns", path="data/txns.parquet", timestamp_field="ts"),
    schema=[Field(name="amount", dtype=Float64), Field(name="items", dtype=Int64),
            Field(name="country", dtype=String), Field(name="card", dtype=Bool)])
"""


def _txns(n: int, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3, 1, n)
    amount[rng.random(n) < 0.05] = np.nan
    return pa.table({
        "user_id": pa.array(rng.integers(0, 500, n), pa.int64()),
        "ts": pa.array(int(T0.timestamp() * 1e6) + rng.integers(0, 3 * 86_400_000_000 - 1, n), TS),
        "amount": pa.array(amount, pa.float64(), mask=rng.random(n) < 0.05),
        "items": pa.array(rng.integers(1, 9, n), pa.int64()),
        "country": pa.array(rng.choice(["US", "DE", "FR", "NL"], n, p=[0.5, 0.3, 0.15, 0.05]), pa.string()),
        "card": pa.array(rng.random(n) < 0.7, pa.bool_()),
    })


@pytest.fixture
def repo(tmp_path):
    path = write_repo(tmp_path, CODE, tables={"txns": _txns(4000)})
    FeatureStore(path).apply()
    return path


def test_each_materialization_run_records_the_statistics_of_the_rows_it_wrote(repo):
    store = FeatureStore(repo)
    before = datetime.now(UTC)
    store.materialize(T0, T0 + timedelta(days=2), online=False)
    store.materialize(T0 + timedelta(days=2), T0 + timedelta(days=3), online=False)
    runs = store.quality_runs("user_txn")
    assert [r.kind for r in runs] == ["materialize", "materialize"]
    written = store.offline_store.read("user_txn")
    ts = written.column("event_timestamp").cast(pa.int64()).to_numpy()
    first = written.filter(pa.array(ts < int((T0 + timedelta(days=2)).timestamp() * 1e6)))
    for run, rows in zip(runs, (first, written.filter(pa.array(ts >= int((T0 + timedelta(days=2)).timestamp() * 1e6))))):
        assert before <= run.started <= run.ended <= datetime.now(UTC)
        assert run.rows_in == run.rows_written == rows.num_rows > 1000
        amount = rows.column("amount").to_numpy(zero_copy_only=False)
        x = amount[~np.isnan(amount)]
        got = run.stats["amount"]
        assert got["rows"] == rows.num_rows and got["nulls"] == rows.num_rows - x.size
        assert got["min"] == x.min() and got["max"] == x.max()
        assert got["mean"] == pytest.approx(x.mean(), rel=1e-12)
        assert got["stddev"] == pytest.approx(x.std(), rel=1e-9)
        assert list(got["quantiles"].values()) == np.quantile(x, list(QUANTILES.values())).tolist()
        assert got["histogram"]["counts"] == np.histogram(x, got["histogram"]["edges"])[0].tolist()
        latest = rows.column("event_timestamp").cast(pa.int64()).to_numpy().max() / 1e6
        assert got["freshness_seconds"] == pytest.approx(run.ended.timestamp() - latest, abs=1e-3)
        countries = rows.column("country").value_counts().to_pylist()
        assert run.stats["country"]["top"] == sorted(([c["values"], c["counts"]] for c in countries),
                                                     key=lambda vc: -vc[1])
        assert run.stats["items"]["distinct"] == 8 and run.stats["card"]["distinct"] == 2
    assert set(runs[0].stats) == {"amount", "items", "country", "card"}  # features, not keys or times
    assert store.quality_runs("user_txn", since=runs[1].started) == runs[1:]


def test_statistics_can_be_turned_off_and_runs_are_still_recorded(repo):
    with open(repo / "featurestore.yaml", "a") as f:
        f.write("quality: {statistics: false}\n")
    store = FeatureStore(repo)
    store.materialize(T0, T0 + timedelta(days=3), online=False)
    (run,) = store.quality_runs("user_txn")
    assert run.stats is None and run.rows_written == 4000


def test_a_misspelt_quality_setting_is_an_error_naming_it(repo):
    with open(repo / "featurestore.yaml", "a") as f:
        f.write("quality: {statistic: false}\n")
    result = CliRunner().invoke(main, ["--repo", str(repo), "stats", "user_txn"])
    assert result.exit_code == 1 and "quality.statistic" in result.output


def test_stats_command_shows_the_runs_and_the_newest_statistics(repo):
    store = FeatureStore(repo)
    store.materialize(T0, T0 + timedelta(days=3), online=False)
    (run,) = store.quality_runs("user_txn")
    runner = CliRunner(env={"COLUMNS": "250"})
    shown = runner.invoke(main, ["--repo", str(repo), "stats", "user_txn", "--since", "1h"])
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert "user_txn: 1 runs" in out and "materialize" in out and "4,000" in out
    amount = run.stats["amount"]
    line = next(li for li in out.splitlines() if li.strip("│ ").startswith("amount"))
    for value in (amount["min"], amount["quantiles"]["p50"], amount["max"], amount["mean"]):
        assert f"{value:.6g}" in line
    assert f"{amount['nulls']:,} ({100 * amount['nulls'] / 4000:.1f}%)" in line
    assert "US: " in next(li for li in out.splitlines() if li.strip("│ ").startswith("country"))

    as_json = json.loads(runner.invoke(main, ["--repo", str(repo), "stats", "user_txn", "--json"]).output)
    assert as_json[0]["run_id"] == run.run_id and as_json[0]["stats"] == run.stats

    later = runner.invoke(main, ["--repo", str(repo), "stats", "user_txn", "--since", "0s"])
    assert later.exit_code == 0 and "no runs since" in later.output
    bad = runner.invoke(main, ["--repo", str(repo), "stats", "user_txn", "--since", "7 days"])
    assert bad.exit_code == 1 and "--since takes a whole number and a unit" in bad.output
    unknown = runner.invoke(main, ["--repo", str(repo), "stats", "nope"])
    assert unknown.exit_code == 1 and "nope" in unknown.output


def test_stats_shows_check_outcomes_recorded_with_a_run(repo):
    from featurestore.quality_runs import QualityRun, record

    store = FeatureStore(repo)
    now = datetime.now(UTC)
    record(store, "user_txn", QualityRun("stream", now, now + timedelta(seconds=1), rows_in=10, rows_written=7,
                                         checks=[{"name": "amount_non_negative", "on_fail": "drop",
                                                  "rows_checked": 10, "rows_failed": 3, "action": "dropped"}]))
    out = CliRunner(env={"COLUMNS": "250"}).invoke(main, ["--repo", str(repo), "stats", "user_txn"]).output
    assert "amount_non_negative: dropped 3/10" in out and "stream" in out


def test_stats_plot_draws_the_runs_and_the_newest_drift_into_one_page_or_pngs(repo, tmp_path):
    from featurestore import drift_records

    store = FeatureStore(repo)
    store.materialize(T0, T0 + timedelta(days=3), online=False)
    now = datetime.now(UTC)
    drift_records.record(store, "user_txn", [drift_records.DriftValue(
        now, "r1", "window", now - timedelta(days=1), now, "amount", "psi", 0.42, 0.2, True)])
    runner = CliRunner(env={"COLUMNS": "250"})
    page = tmp_path / "stats.html"
    shown = runner.invoke(main, ["--repo", str(repo), "stats", "user_txn", "--plot", str(page)])
    assert shown.exit_code == 0, shown.output
    html = page.read_text()
    assert html.count("<svg") >= 3 and "amount" in html
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)  # nothing to fetch
    assert "Drift" in html or "drift" in html  # the recorded drift run is drawn too
    folder = tmp_path / "plots"
    assert runner.invoke(main, ["--repo", str(repo), "stats", "user_txn", "--plot", str(folder)]).exit_code == 0
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) >= 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
