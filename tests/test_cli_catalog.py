"""``featurestore list`` and ``describe``: readable tables in the terminal, ``--json`` (and ``--names``)
for scripts. Run through the real command line against an applied repo with a materialized view."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from featurestore import FeatureStore
from featurestore.cli import main
from tests.repo_helpers import write_repo

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)

CODE = '''
from datetime import timedelta
from featurestore import (Aggregation, Check, Entity, FeatureService, FeatureView, Field, FileSource,
                          RequestSource, col, on_demand_feature_view)
from featurestore.types import Float64, Int64

user = Entity(name="user", join_keys=["user_id"], description="A card holder", tags={"pii": "no"})
txn_src = FileSource(name="txn_src", path="data/txn.parquet", timestamp_field="ts",
                     description="Settled and declined card payments")
spend = FeatureView(
    name="spend", entities=[user], source=txn_src, ttl=timedelta(days=2), owner="risk-team@example.com",
    tags={"team": "risk", "tier": "gold"},
    description="What a card holder spent recently, for the fraud model. " + "Long words to truncate. " * 6,
    filter=col("status") == "settled",
    transform=[(col("amount") * 100).cast(Int64).alias("cents")],
    aggregations=[Aggregation(column="cents", function="sum", window=timedelta(hours=3)),
                  Aggregation(column="cents", function="count", window=None)],
    checks=[Check(col("cents") >= 0, name="no_refunds", on_fail="drop")])
plain = FeatureView(name="plain", entities=[user], source=txn_src, ttl=timedelta(hours=36),
    schema=[Field(name="amount", dtype=Float64, description="The payment in euros")])

@on_demand_feature_view(sources=[spend, RequestSource(schema=[Field("amount_now", Float64)])],
                        schema=[Field("share_of_3h", Float64, description="This payment over the last 3 hours")])
def share(inputs):
    return {"share_of_3h": [None if not s else n / s for s, n in zip(inputs["cents_sum_3h"], inputs["amount_now"])]}

fraud = FeatureService(name="fraud", features=[spend, share, plain[["amount"]]], owner="ml@example.com",
                       tags={"model": "gbt"})
'''


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    ts = [T0 + timedelta(minutes=10 * i) for i in range(6)]
    table = pa.table({"user_id": pa.array([1, 1, 2, 2, 1, 2], pa.int64()),
                      "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                      "amount": [1.5, 2.0, -3.0, 4.0, 5.0, 6.0],
                      "status": ["settled", "settled", "settled", "declined", "settled", "settled"]})
    path = write_repo(tmp_path_factory.mktemp("cli") / "repo", CODE, tables={"txn": table})
    with FeatureStore(path) as store:
        store.apply()
        store.materialize(T0, T0 + timedelta(days=1), ["spend"], progress=False)
    return path


def _run(repo: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--repo", str(repo), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if f" {name} " in line)


def test_list_prints_a_table_with_kind_keys_features_source_owner_tags_and_a_truncated_description(repo):
    shown = _run(repo, "list", "views")
    assert "2 feature views (registry version 1)" in shown
    for title in ("name", "kind", "entities", "features", "source", "owner", "tags", "description"):
        assert title in shown.splitlines()[2]
    spend = _row(shown, "spend")
    for cell in ("batch view", "user", " 2 ", "txn_src", "risk-team@example.com", "team=risk, tier=gold",
                 "What a card holder spent"):
        assert cell in spend, cell
    assert "…" in spend and "Long words to truncate. " * 6 not in shown
    assert " 1 " in _row(shown, "plain")

    services = _run(repo, "list", "services")
    assert all(cell in _row(services, "fraud") for cell in ("spend, share, plain", " 4 ", "ml@example.com", "model=gbt"))
    assert "user_id" in _row(_run(repo, "list", "entities"), "user")
    assert "data/txn.parquet" in _row(_run(repo, "list", "sources"), "txn_src")
    assert "on-demand view (python)" in _row(_run(repo, "list", "on-demand-views"), "share")


def test_list_json_and_names_are_for_scripts(repo):
    rows = json.loads(_run(repo, "list", "views", "--json"))
    assert [r["name"] for r in rows] == ["plain", "spend"]
    spend = rows[1]
    assert spend == {"name": "spend", "kind": "batch view", "keys": ["user"], "features": 2, "source": "txn_src",
                     "owner": "risk-team@example.com", "tags": {"team": "risk", "tier": "gold"},
                     "description": spend["description"]}
    assert spend["description"].endswith("Long words to truncate. " * 6)  # whole, not truncated
    assert _run(repo, "list", "--names").split() == ["plain", "spend"]
    assert json.loads(_run(repo, "list", "services", "--json"))[0]["features"] == 4
    both = CliRunner().invoke(main, ["--repo", str(repo), "list", "--json", "--names"])
    assert both.exit_code == 1 and "at most one of --json and --names" in both.output


def test_describe_a_view_shows_schema_source_expressions_aggregations_ttl_owner_tags_users_and_quality(repo):
    shown = _run(repo, "describe", "views", "spend")
    lines = {line.split("  ")[0]: line for line in shown.splitlines() if line and line[0] not in "┏┃┡│└"}
    assert "risk-team@example.com" in lines["owner"] and "team=risk, tier=gold" in lines["tags"]
    assert "user (user_id)" in lines["entities"]
    assert "txn_src (file: data/txn.parquet), event time ts" in lines["source"]
    assert "(col('status') == 'settled')" in lines["filter"]
    assert "(col('amount') * 100).cast(Int64).alias('cents')" in lines["transforms"]
    assert "2d" in lines["ttl"]
    assert "no_refunds: (col('cents') >= 0) (on fail: drop)" in lines["checks"]
    assert "fraud" in lines["used by services"] and "share" in lines["read by on-demand views"]
    # the materialization recorded a quality run: 5 settled rows in, the negative one dropped
    assert "materialize 2026-" in lines["latest quality run"] and "4 of 5 rows written" in lines["latest quality run"]
    assert "no_refunds: dropped (1 of 5 rows failed)" in shown
    schema = shown[shown.index("schema"):]
    assert all(c in _row(schema, "user_id") for c in ("Int64", "join key"))
    assert "Int64" in _row(schema, "cents_sum_3h") and "Int64" in _row(schema, "cents_count_lifetime")
    aggregations = shown[shown.index("aggregations"):]
    assert all(c in _row(aggregations, "cents_sum_3h") for c in ("sum", "cents", "3h"))
    assert "lifetime" in _row(aggregations, "cents_count_lifetime")

    plain = _run(repo, "describe", "views", "plain")
    assert "The payment in euros" in _row(plain, "amount") and "1d 12h" in plain
    assert "no runs recorded" in plain


def test_describe_other_kinds(repo):
    service = _run(repo, "describe", "services", "fraud")
    assert "feature service fraud" in service and "ml@example.com" in service
    assert "all" in _row(service, "spend") and "amount" in _row(service, "plain")
    share = _run(repo, "describe", "on-demand-views", "share")
    assert "This payment over the last 3 hours" in share and "amount_now" in share and "fraud" in share
    assert "features.py:share" in share
    entity = _run(repo, "describe", "entities", "user")
    assert "A card holder" in entity and "plain, spend" in entity and "pii=no" in entity
    source = _run(repo, "describe", "sources", "txn_src")
    assert "Settled and declined card payments" in source and "plain, spend" in source and "data/txn.parquet" in source


def test_describe_json_is_the_stored_spec(repo):
    with FeatureStore(repo) as store:
        stored = store.registry.get("feature_view", "spend")
    printed = _run(repo, "describe", "views", "spend", "--json")
    assert json.loads(printed) == stored
    assert printed == json.dumps(stored, indent=2, sort_keys=True) + "\n"  # the format scripts read


def test_describe_an_unknown_object_is_a_clear_error(repo):
    result = CliRunner().invoke(main, ["--repo", str(repo), "describe", "views", "nope"])
    assert result.exit_code == 1 and "feature_view 'nope' is not in the registry" in result.output


def test_the_installed_command_prints_the_table_into_a_pipe(repo):
    """A pipe is not a terminal: the table is still printed whole (wide enough for every column)."""
    out = subprocess.run([sys.executable, "-m", "featurestore.cli", "--repo", str(repo), "list", "views"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "risk-team@example.com" in _row(out.stdout, "spend") and "team=risk, tier=gold" in out.stdout
