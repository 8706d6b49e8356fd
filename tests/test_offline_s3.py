"""The offline store on S3 (the test server) behind the whole product: materialize, push, export
(in memory and streamed to a file) and reproduce give what the same steps give on local disk."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore
from tests.repo_helpers import write_repo
from tests.test_reproduce import CODE, FEATURES, T0, _entities, _push, _tables
from tests.test_s3_service import S3, bucket, s3, s3fs  # noqa: F401 - the S3 server's fixtures

pytestmark = pytest.mark.s3

OPTIONS = {"AWS_ENDPOINT_URL": "${FS_TEST_S3_ENDPOINT}", "AWS_ACCESS_KEY_ID": "${FS_TEST_S3_ACCESS_KEY}",
           "AWS_SECRET_ACCESS_KEY": "${FS_TEST_S3_SECRET_KEY}", "AWS_REGION": "${FS_TEST_S3_REGION}",
           "AWS_ALLOW_HTTP": "true"}


def _run(repo: Path, offline: str, seed: int) -> dict:
    """One history on one store: materialize, push, export both ways, more writes, reproduce."""
    rng = random.Random(seed)
    write_repo(repo, CODE, tables=_tables(rng, 25, 400, 48))
    config = (repo / "featurestore.yaml").read_text().replace("offline_store: {type: parquet, path: data/offline}",
                                                              f"offline_store: {offline}")
    (repo / "featurestore.yaml").write_text(config)
    store = FeatureStore(repo)
    store.apply()
    store.materialize(T0 - timedelta(days=5), T0 + timedelta(hours=60), ["stats", "spend"], online=False)
    _push(store, rng, 25, 60, 48)
    entities = _entities(rng, 25, 300, 48)
    pq.write_table(entities, repo / "entities.parquet")
    in_memory = store.get_historical_features(entities, FEATURES).to_arrow()
    manifest = store.get_historical_features(str(repo / "entities.parquet"), FEATURES).to_parquet(repo / "out.parquet")
    store.materialize(T0 - timedelta(days=5), T0 + timedelta(hours=60), ["stats"], online=False)
    _push(store, rng, 25, 20, 48)
    store.offline_store.compact("stats", max_small_files=1)
    store.reproduce_export(repo / "out.parquet.manifest.json", repo / "again.parquet")
    return {"in_memory": in_memory, "streamed": pq.read_table(repo / "out.parquet"), "manifest": manifest,
            "same_bytes": (repo / "again.parquet").read_bytes() == (repo / "out.parquet").read_bytes(),
            "stats_rows": store.offline_store.read("stats").num_rows}


def test_the_product_on_an_s3_offline_store_matches_local_disk(tmp_path, s3: S3, bucket):  # noqa: F811
    local = _run(tmp_path / "local", "{type: parquet, path: data/offline}", seed=21)
    remote = _run(tmp_path / "remote", json.dumps({"type": "parquet", "path": f"s3://{bucket}/offline",
                                                   "storage_options": OPTIONS}), seed=21)
    assert remote["manifest"]["views"]["stats"]["read_from"] == "offline_store"
    assert remote["manifest"]["views"]["live"]["read_from"] == "source+appended"
    assert remote["in_memory"].equals(local["in_memory"])
    assert remote["streamed"].equals(local["streamed"])
    assert remote["streamed"].equals(remote["in_memory"].cast(remote["streamed"].schema))
    assert remote["same_bytes"] and local["same_bytes"]
    assert remote["stats_rows"] == local["stats_rows"] > 0
    assert "FS_TEST_S3_SECRET_KEY" in (tmp_path / "remote" / "featurestore.yaml").read_text()


def test_the_issue_s_config_with_keys_from_the_environment(tmp_path, s3: S3, bucket, monkeypatch):  # noqa: F811
    """``storage_options`` naming only the endpoint (plain http) and region, as users write it; the keys
    come from the standard AWS variables, which both delta-rs and pyarrow read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    monkeypatch.delenv("AWS_ALLOW_HTTP", raising=False)
    offline = (f'{{type: parquet, path: "s3://{bucket}/offline", '
               f'storage_options: {{endpoint_url: "{s3.endpoint}", region: {s3.region}}}}}')
    remote = _run(tmp_path / "remote", offline, seed=5)
    local = _run(tmp_path / "local", "{type: parquet, path: data/offline}", seed=5)
    assert remote["manifest"]["views"]["stats"]["read_from"] == "offline_store"
    assert remote["streamed"].equals(local["streamed"]) and remote["same_bytes"]
