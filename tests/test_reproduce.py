"""Reproducible exports: ``featurestore export --reproduce`` writes the same bytes after later
materializations, pushes, compactions and definition changes, and names the view and version when
vacuum has removed what it needs."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from featurestore import FeatureStore
from featurestore.cli import main
from featurestore.errors import ConflictError, InvalidInputError, NotFoundError
from tests.repo_helpers import write_repo

UTC = timezone.utc
T0 = datetime(2025, 3, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource, PushSource
from featurestore.types import Float64, Int64
from transforms import Aggregation, col
user = Entity(name="user", join_keys=["user_id"])
stats = FeatureView(name="stats", entities=[user], ttl=timedelta(hours=6),
    source=FileSource(name="stats_src", path="data/stats.parquet", timestamp_field="ts",
                      created_timestamp_field="created"),
    schema=[Field(name="score", dtype=Float64), Field(name="hits", dtype=Int64)])
spend = FeatureView(name="spend", entities=[user], ttl=timedelta(days=2),
    source=FileSource(name="spend_src", path="data/spend.parquet", timestamp_field="ts"),
    transform=[(col("cents") / 100).alias("amount")],
    aggregations=[Aggregation(column="amount", function="sum", window=timedelta(hours=3)),
                  Aggregation(column="amount", function="count", window=timedelta(days=1))])
live = FeatureView(name="live", entities=[user], ttl=timedelta(hours=12),
    source=PushSource(name="live_push",
                      batch_source=FileSource(name="live_src", path="data/live.parquet", timestamp_field="ts")),
    schema=[Field(name="speed", dtype=Float64)])
"""
FEATURES = ["stats:score", "stats:hits", "spend:amount_sum_3h", "spend:amount_count_1d", "live:speed"]


def _times(rng: random.Random, n: int, hours: float) -> list[datetime]:
    return [T0 + timedelta(seconds=rng.randrange(int(hours * 3600))) for _ in range(n)]


def _tables(rng: random.Random, users: int, n: int, hours: float) -> dict[str, pa.Table]:
    ids = lambda: pa.array([rng.randrange(users) for _ in range(n)], pa.int64())  # noqa: E731
    ts = _times(rng, n, hours)
    return {
        "stats": pa.table({"user_id": ids(), "ts": pa.array(ts, TS),
                           "created": pa.array([t + timedelta(seconds=rng.randrange(60)) for t in ts], TS),
                           "score": pa.array([rng.random() for _ in range(n)]),
                           "hits": pa.array([rng.randrange(100) for _ in range(n)], pa.int64())}),
        "spend": pa.table({"user_id": ids(), "ts": pa.array(_times(rng, n, hours), TS),
                           "cents": pa.array([rng.randrange(1, 10_000) for _ in range(n)], pa.int64())}),
        "live": pa.table({"user_id": ids(), "ts": pa.array(_times(rng, n, hours), TS),
                          "speed": pa.array([rng.random() * 100 for _ in range(n)])}),
    }


def _entities(rng: random.Random, users: int, n: int, hours: float) -> pa.Table:
    return pa.table({"user_id": pa.array([rng.randrange(users + 2) for _ in range(n)], pa.int64()),
                     "event_timestamp": pa.array(_times(rng, n, hours + 6), TS),
                     "label": pa.array([rng.randrange(2) for _ in range(n)], pa.int8())})


def _push(store: FeatureStore, rng: random.Random, users: int, n: int, hours: float) -> None:
    rows = {"user_id": [rng.randrange(users) for _ in range(n)], "ts": _times(rng, n, hours),
            "speed": [rng.random() * 100 for _ in range(n)]}
    store.push("live_push", rows, to="online_and_offline")


@pytest.mark.parametrize("seed,streamed", [(3, True), (17, False)])
def test_reproduce_gives_the_same_bytes_after_later_writes(tmp_path, seed, streamed):
    """``streamed``: the entity rows are a Parquet path, which the engine streams to the output file
    itself; else an in-memory table."""
    rng = random.Random(seed)
    users, hours = 40, 48
    repo = write_repo(tmp_path / "repo", CODE, tables=_tables(rng, users, 600, hours))
    store = FeatureStore(repo)
    store.apply()
    store.materialize(T0 - timedelta(days=5), T0 + timedelta(hours=60), ["stats", "spend"], online=False)
    _push(store, rng, users, 80, hours)
    pq.write_table(_entities(rng, users, 500, hours), tmp_path / "entities.parquet")
    first = tmp_path / "train.parquet"
    entity = str(tmp_path / "entities.parquet") if streamed else pq.read_table(tmp_path / "entities.parquet")
    manifest = store.get_historical_features(entity, FEATURES).to_parquet(first)
    assert bool(manifest.get("written_by")) == streamed
    assert manifest["views"]["stats"]["read_from"] == manifest["views"]["spend"]["read_from"] == "offline_store"
    assert manifest["views"]["live"]["read_from"] == "source+appended"
    assert manifest["views"]["stats"]["table_version"] is not None

    # The world moves on: more materialized, pushed, the source rewritten, compacted, redefined.
    for name, table in _tables(rng, users, 300, hours + 12).items():
        if name != "live":  # read from its source: a source that keeps no versions must stay as it was
            pq.write_table(table, repo / "data" / f"{name}.parquet")
    store.materialize(T0 - timedelta(days=5), T0 + timedelta(hours=80), ["stats", "spend"], online=False)
    _push(store, rng, users, 50, hours)
    _push(store, rng, users, 50, hours)
    for view in ("stats", "spend"):
        store.offline_store.compact(view, max_small_files=1)
    store.offline_store.appends.compact("live", max_small_files=1)
    (repo / "features.py").write_text((repo / "features.py").read_text().replace(
        'ttl=timedelta(hours=6)', 'ttl=timedelta(hours=1)'))
    store.apply()
    now = tmp_path / "now.parquet"
    store.get_historical_features(str(tmp_path / "entities.parquet"), FEATURES).to_parquet(now)
    changed = [c for c in ("score", "amount_sum_3h", "speed")
               if pq.read_table(now).column(c).to_pylist() != pq.read_table(first).column(c).to_pylist()]
    assert changed == ["score", "amount_sum_3h", "speed"], "the later writes should change a fresh export"

    again = tmp_path / "again.parquet"
    result = CliRunner().invoke(main, ["--repo", str(repo), "export", "--reproduce", f"{first}.manifest.json",
                                       "--output", str(again)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == first.read_bytes()
    redone = json.loads(Path(f"{again}.manifest.json").read_text())
    assert redone["views"] == manifest["views"] and redone["registry_version"] == manifest["registry_version"]

    # The original entity frame gives the same bytes too (the entity rows need not come from the output).
    store.reproduce_export(f"{first}.manifest.json", tmp_path / "again2.parquet",
                           entities=tmp_path / "entities.parquet")
    assert (tmp_path / "again2.parquet").read_bytes() == first.read_bytes()


def _applied(tmp_path: Path, seed: int, rows: int, entities: int) -> tuple[random.Random, Path, FeatureStore]:
    """A repo of random rows over 24 hours, applied, with ``entities.parquet`` beside it."""
    rng = random.Random(seed)
    repo = write_repo(tmp_path / "repo", CODE, tables=_tables(rng, 10, rows, 24))
    store = FeatureStore(repo)
    store.apply()
    pq.write_table(_entities(rng, 10, entities, 24), tmp_path / "entities.parquet")
    return rng, repo, store


def test_vacuum_of_a_needed_version_names_the_view_and_version(tmp_path):
    _, _, store = _applied(tmp_path, seed=5, rows=200, entities=50)
    store.materialize(T0 - timedelta(days=1), T0 + timedelta(hours=30), ["stats"], online=False)
    first = tmp_path / "train.parquet"
    version = store.get_historical_features(str(tmp_path / "entities.parquet"), ["stats:score"]) \
        .to_parquet(first)["views"]["stats"]["table_version"]
    store.materialize(T0 - timedelta(days=1), T0 + timedelta(hours=30), ["stats"], online=False)
    store.offline_store.vacuum("stats", grace=timedelta(0))
    with pytest.raises(NotFoundError, match=rf"view 'stats': version {version} of the Delta table .* vacuum removed"):
        store.reproduce_export(f"{first}.manifest.json", tmp_path / "again.parquet")
    assert not (tmp_path / "again.parquet").exists()


def test_a_changed_unversioned_source_is_refused(tmp_path):
    rng, repo, store = _applied(tmp_path, seed=8, rows=200, entities=50)
    first = tmp_path / "train.parquet"
    assert store.get_historical_features(str(tmp_path / "entities.parquet"), ["spend:amount_sum_3h"]) \
        .to_parquet(first)["views"]["spend"]["read_from"] == "source"
    pq.write_table(_tables(rng, 10, 20, 24)["spend"], repo / "data" / "spend.parquet")
    with pytest.raises(ConflictError, match="feature view 'spend': its source is no longer what the export read"):
        store.reproduce_export(f"{first}.manifest.json", tmp_path / "again.parquet")


def test_bad_manifests_and_arguments(tmp_path):
    _, repo, store = _applied(tmp_path, seed=9, rows=100, entities=30)
    first = tmp_path / "train.parquet"
    store.get_historical_features(str(tmp_path / "entities.parquet"), ["stats:score"]).to_parquet(first)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not an export manifest"):
        store.reproduce_export(tmp_path / "junk.json", tmp_path / "x.parquet")
    recorded = json.loads(Path(f"{first}.manifest.json").read_text())
    (tmp_path / "future.json").write_text(json.dumps(dict(recorded, registry_version=99)))
    with pytest.raises(NotFoundError, match="registry version 99 does not exist"):
        store.reproduce_export(tmp_path / "future.json", tmp_path / "x.parquet")
    first.unlink()
    (tmp_path / "entities.parquet").unlink()
    with pytest.raises(NotFoundError, match="pass the entity rows"):
        store.reproduce_export(f"{first}.manifest.json", tmp_path / "x.parquet")
    result = CliRunner().invoke(main, ["--repo", str(repo), "export", "--reproduce", f"{first}.manifest.json",
                                       "--features", "stats:score", "--output", str(tmp_path / "x.parquet")])
    assert result.exit_code != 0 and "--reproduce takes the features from the manifest" in result.output


def test_a_delta_source_is_read_at_the_version_the_export_read(tmp_path):
    from deltalake import write_deltalake

    rng = random.Random(12)
    tables = _tables(rng, 15, 300, 24)
    code = CODE.replace('FileSource(name="spend_src", path="data/spend.parquet", timestamp_field="ts")',
                        'DeltaSource(name="spend_src", path="data/spend_delta", timestamp_field="ts")')
    code = code.replace("from featurestore import Entity,", "from featurestore import DeltaSource, Entity,")
    repo = write_repo(tmp_path / "repo", code, tables=tables)
    write_deltalake(str(repo / "data" / "spend_delta"), tables["spend"])
    store = FeatureStore(repo)
    store.apply()
    entity = _entities(rng, 15, 200, 24)
    first = tmp_path / "train.parquet"
    manifest = store.get_historical_features(entity, ["spend:amount_sum_3h", "spend:amount_count_1d"]).to_parquet(first)
    assert manifest["views"]["spend"]["read_from"] == "source"
    assert manifest["views"]["spend"]["source_version"] == 0
    write_deltalake(str(repo / "data" / "spend_delta"), _tables(rng, 15, 300, 24)["spend"], mode="append")
    now = store.get_historical_features(entity, ["spend:amount_sum_3h", "spend:amount_count_1d"]).to_arrow()
    assert now.column("amount_count_1d").to_pylist() != pq.read_table(first).column("amount_count_1d").to_pylist()
    store.reproduce_export(f"{first}.manifest.json", tmp_path / "again.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == first.read_bytes()
