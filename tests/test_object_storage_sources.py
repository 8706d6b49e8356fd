"""FileSource and DeltaSource on S3 (the S3 test server): the same exports, materializations and
online values as the same rows in a local Parquet file; clear errors for what is not there; and
credentials that stay ``${VAR}`` placeholders everywhere but in the read itself."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake
from fastapi.testclient import TestClient

from featurestore import FeatureStore
from featurestore.config import load_config
from featurestore.errors import BackendUnavailableError, InvalidInputError
from serving.app import create_app
from tests.source_helpers import export_rows, make_store, outcome, random_entities, random_rows, source_code
from tests.test_s3_service import S3, bucket, s3, s3fs  # noqa: F401 - the S3 server's fixtures

pytestmark = pytest.mark.s3

# Storage options as users write them: every value that reaches the server comes from the environment.
OPTIONS = {"AWS_ENDPOINT_URL": "${FS_TEST_S3_ENDPOINT}", "AWS_ACCESS_KEY_ID": "${FS_TEST_S3_ACCESS_KEY}",
           "AWS_SECRET_ACCESS_KEY": "${FS_TEST_S3_SECRET_KEY}", "AWS_REGION": "${FS_TEST_S3_REGION}",
           "AWS_ALLOW_HTTP": "true"}
FILE = source_code("FileSource", "data/rows.parquet")


def _put_parts(s3fs: pafs.S3FileSystem, prefix: str, rows: pa.Table, parts: int = 3) -> None:  # noqa: F811
    step = -(-rows.num_rows // parts)
    for i in range(parts):
        pq.write_table(rows.slice(i * step, step), f"{prefix}/part-{i}.parquet", filesystem=s3fs)


@pytest.mark.parametrize("layout", ["object", "prefix", "glob", "delta"])
def test_s3_sources_give_what_the_same_rows_in_a_local_file_give(tmp_path, s3: S3, s3fs, bucket,  # noqa: F811
                                                                  layout):
    rows, entities = random_rows(seed=101), random_entities(seed=102)
    expected = outcome(make_store(tmp_path / "local", FILE, {"rows": rows}), entities)
    if layout == "object":
        pq.write_table(rows, f"{bucket}/raw/all.parquet", filesystem=s3fs)
        source = source_code("FileSource", f"s3://{bucket}/raw/all.parquet", OPTIONS)
    elif layout == "prefix":
        _put_parts(s3fs, f"{bucket}/raw", rows)
        # Files a prefix read skips: hidden or underscore names, and other extensions.
        pq.write_table(rows.slice(0, 5), f"{bucket}/raw/_tmp/stale.parquet", filesystem=s3fs)
        with s3fs.open_output_stream(f"{bucket}/raw/README.txt") as out:
            out.write(b"not data")
        source = source_code("FileSource", f"s3://{bucket}/raw/", OPTIONS)
    elif layout == "glob":
        _put_parts(s3fs, f"{bucket}/raw/day", rows)
        pq.write_table(rows.slice(0, 5), f"{bucket}/raw/day/deeper/other.parquet", filesystem=s3fs)
        source = source_code("FileSource", f"s3://{bucket}/raw/day/*.parquet", OPTIONS)
    else:
        step = rows.num_rows // 2
        for part in (rows.slice(0, step), rows.slice(step)):
            write_deltalake(f"s3://{bucket}/lake/stats", part, mode="append", storage_options=s3.storage_options())
        source = source_code("DeltaSource", f"s3://{bucket}/lake/stats", OPTIONS)
    got = outcome(make_store(tmp_path / "s3", source), entities)
    assert got.export == expected.export
    assert got.offline == expected.offline and len(got.offline) == rows.num_rows
    assert got.online == expected.online


def test_a_delta_table_on_s3_pinned_to_an_old_version_reads_it(tmp_path, s3: S3, bucket):  # noqa: F811
    old, new, entities = random_rows(seed=111), random_rows(seed=112), random_entities(seed=113)
    uri = f"s3://{bucket}/lake/stats"
    write_deltalake(uri, old, storage_options=s3.storage_options())
    write_deltalake(uri, new, mode="overwrite", storage_options=s3.storage_options())
    pinned = make_store(tmp_path / "pinned", source_code("DeltaSource", uri, OPTIONS, version=0))
    assert export_rows(pinned, entities) == export_rows(make_store(tmp_path / "old", FILE, {"rows": old}), entities)


def test_what_is_not_there_is_an_error_naming_the_source(tmp_path, s3fs, bucket):  # noqa: F811
    pq.write_table(random_rows(seed=121, n=10), f"{bucket}/raw/a.parquet", filesystem=s3fs)
    missing = "fs-test-no-such-bucket-4f1c"
    cases = [
        (source_code("FileSource", f"s3://{missing}/raw/*.parquet", OPTIONS), f"bucket '{missing}' does not exist"),
        (source_code("DeltaSource", f"s3://{missing}/lake/t", OPTIONS), f"bucket '{missing}' does not exist"),
        (source_code("FileSource", f"s3://{bucket}/raw/*.csv.parquet", OPTIONS), "no parquet files at"),
        (source_code("FileSource", f"s3://{bucket}/elsewhere/", OPTIONS), "no parquet files at"),
        (source_code("DeltaSource", f"s3://{bucket}/raw", OPTIONS), "no Delta table at"),
    ]
    for i, (source, message) in enumerate(cases):
        with pytest.raises(Exception, match=rf"'src'.*{message}"):
            make_store(tmp_path / str(i), source)


def test_credentials_are_expanded_when_read_and_stored_as_placeholders(tmp_path, s3: S3, s3fs, bucket,  # noqa: F811
                                                                       monkeypatch):
    rows, entities = random_rows(seed=131), random_entities(seed=132)
    pq.write_table(rows, f"{bucket}/raw/all.parquet", filesystem=s3fs)
    write_deltalake(f"s3://{bucket}/lake/stats", rows, storage_options=s3.storage_options())
    for kind, path in (("FileSource", f"s3://{bucket}/raw/all.parquet"), ("DeltaSource", f"s3://{bucket}/lake/stats")):
        store = make_store(tmp_path / kind, source_code(kind, path, OPTIONS))
        assert store.registry.get("data_source", "src")["storage_options"] == OPTIONS
        with TestClient(create_app(store)) as client:
            bodies = [client.get(url) for url in ("/registry", "/registry/data-sources", "/registry/data-sources/src",
                                                  "/registry/feature-views/stats")]
        assert all(b.status_code == 200 for b in bodies)
        assert json.loads(bodies[2].text)["storage_options"] == OPTIONS
        for secret in (s3.secret_key, s3.access_key):
            assert all(secret not in b.text for b in bodies)
        registry_db = (store.repo_path / "data" / "registry.db").read_bytes()
        assert s3.secret_key.encode() not in registry_db

        expected = export_rows(store, entities)
        monkeypatch.delenv("FS_TEST_S3_SECRET_KEY")
        with pytest.raises(InvalidInputError, match=f"{kind} 'src': environment variable FS_TEST_S3_SECRET_KEY "
                                                    f"is not set"):
            export_rows(store, entities)
        monkeypatch.setenv("FS_TEST_S3_SECRET_KEY", s3.secret_key + "-wrong")
        with pytest.raises(Exception):  # noqa: B017 - the server refuses a wrong key, however it is worded
            export_rows(store, entities)
        monkeypatch.setenv("FS_TEST_S3_SECRET_KEY", s3.secret_key)
        assert export_rows(store, entities) == expected


@pytest.mark.slow
def test_the_spark_engine_reads_s3_through_hadoop_aws_or_says_it_needs_it(tmp_path, s3fs, bucket):  # noqa: F811
    rows, entities = random_rows(seed=141), random_entities(seed=142)
    pq.write_table(rows, f"{bucket}/raw/all.parquet", filesystem=s3fs)
    local = make_store(tmp_path, source_code("FileSource", f"s3://{bucket}/raw/all.parquet", OPTIONS))
    spark = FeatureStore(tmp_path, config=load_config(tmp_path).model_copy(
        update={"engine": {"type": "spark", "master": "local[2]"}}))
    try:
        got = export_rows(spark, entities)
    except BackendUnavailableError as exc:
        assert "needs hadoop-aws" in str(exc) and "s3://" in str(exc)
    else:
        assert got == export_rows(local, entities)


def test_a_missing_object_store_variable_names_the_source_and_variable(tmp_path, s3fs, bucket, monkeypatch):  # noqa: F811
    pq.write_table(random_rows(seed=151, n=10), f"{bucket}/raw/a.parquet", filesystem=s3fs)
    monkeypatch.delenv("FS_TEST_S3_REGION")
    with pytest.raises(Exception, match="'src'.*environment variable FS_TEST_S3_REGION is not set"):
        make_store(tmp_path, source_code("FileSource", f"s3://{bucket}/raw/a.parquet", OPTIONS))
