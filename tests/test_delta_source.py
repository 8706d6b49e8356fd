"""DeltaSource on local disk: the same exports, materializations and online values as the same rows
in Parquet files; pinned versions, tables that change after apply, and tables it must refuse."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from connectors.delta_source import DeltaSourceReader
from featurestore import FeatureStore, plugins
from featurestore.config import load_config
from featurestore.errors import DefinitionError, InvalidInputError, NotFoundError
from featurestore.ports.source_reader import CAP_VERSIONS
from featurestore.sources import DeltaSource
from tests.source_helpers import (
    T0,
    export_rows,
    make_store,
    outcome,
    random_entities,
    random_rows,
    source_code,
)

FILE = source_code("FileSource", "data/rows.parquet")


def _write_in_commits(path, rows: pa.Table, commits: int = 3, **kwargs) -> None:
    """``rows`` as a Delta table made by ``commits`` appends (several files, several versions)."""
    step = -(-rows.num_rows // commits)
    for i in range(commits):
        write_deltalake(str(path), rows.slice(i * step, step), mode="append", **kwargs)


@pytest.mark.parametrize("partition_by", [None, ["driver_id"]], ids=["plain", "partitioned"])
def test_delta_source_gives_what_the_same_rows_in_parquet_give(tmp_path, partition_by):
    rows, entities = random_rows(seed=11), random_entities(seed=12)
    expected = outcome(make_store(tmp_path / "file", FILE, {"rows": rows}), entities)
    repo = tmp_path / "delta"
    _write_in_commits(repo / "lake" / "stats", rows, partition_by=partition_by)
    got = outcome(make_store(repo, source_code("DeltaSource", "lake/stats")), entities)
    assert any(r["trips"] is not None for r in expected.export)
    assert got.export == expected.export
    assert got.offline == expected.offline and len(got.offline) == rows.num_rows
    assert got.online == expected.online


def test_a_pinned_version_reads_that_version(tmp_path):
    old, new, entities = random_rows(seed=21), random_rows(seed=22), random_entities(seed=23)
    table = tmp_path / "delta" / "lake" / "stats"
    write_deltalake(str(table), old)
    write_deltalake(str(table), new, mode="overwrite")
    pinned = make_store(tmp_path / "delta", source_code("DeltaSource", "lake/stats", version=0))
    assert pinned.registry.get("data_source", "src")["version"] == 0
    assert export_rows(pinned, entities) == export_rows(
        make_store(tmp_path / "old", FILE, {"rows": old}), entities)
    latest = make_store(tmp_path / "delta", source_code("DeltaSource", "lake/stats"))
    assert export_rows(latest, entities) == export_rows(
        make_store(tmp_path / "new", FILE, {"rows": new}), entities)


def test_the_reader_names_a_version_and_reads_it_again(tmp_path):
    first, second = random_rows(seed=31, n=50), random_rows(seed=32, n=50)
    write_deltalake(str(tmp_path / "t"), first)
    source = DeltaSource(name="t", path="t", timestamp_field="ts")
    reader = plugins.source_reader(source, tmp_path)
    assert isinstance(reader, DeltaSourceReader) and CAP_VERSIONS in reader.capabilities
    assert reader.version(source) == 0
    write_deltalake(str(tmp_path / "t"), second, mode="append")
    assert reader.version(source) == 1
    assert reader.version(DeltaSource(name="t", path="t", timestamp_field="ts", version=0)) == 0

    def rows_of(table: pa.Table) -> list[dict]:
        return table.sort_by([("ts", "ascending"), ("created", "ascending"), ("trips", "ascending")]).to_pylist()

    def read_back(data) -> list[dict]:
        return rows_of(pa.concat_tables([pq.read_table(f) for f in data.files]))

    assert read_back(reader.read_version(source, 0, None, None, None)) == rows_of(first)
    assert read_back(reader.read(source, None, None, None)) == rows_of(pa.concat_tables([first, second]))
    with pytest.raises(NotFoundError, match="DeltaSource 't'.*no version 7"):
        reader.read_version(source, 7, None, None, None)


def test_a_table_updated_after_apply_is_read_at_its_new_version(tmp_path):
    rows, more, entities = random_rows(seed=41), random_rows(seed=42, n=200), random_entities(seed=43)
    table = tmp_path / "delta" / "lake" / "stats"
    write_deltalake(str(table), rows)
    store = make_store(tmp_path / "delta", source_code("DeltaSource", "lake/stats"))
    source = store.catalog().views["stats"].batch_source
    reader = plugins.source_reader(source, store.repo_path)
    assert reader.fingerprint(source) == f"delta:{table.resolve()}:0"
    before = export_rows(store, entities)

    write_deltalake(str(table), more, mode="append")
    assert reader.fingerprint(source) == f"delta:{table.resolve()}:1"
    after = export_rows(store, entities)
    assert after != before
    assert after == export_rows(make_store(tmp_path / "file", FILE, {"rows": pa.concat_tables([rows, more])}),
                                entities)


def test_time_bounds_skip_files_by_their_statistics_without_losing_rows(tmp_path):
    rows = random_rows(seed=51).sort_by("ts")
    _write_in_commits(tmp_path / "t", rows, commits=6)
    source = DeltaSource(name="t", path="t", timestamp_field="ts")
    reader = DeltaSourceReader(tmp_path)
    lo, hi = T0 + timedelta(days=1, hours=3), T0 + timedelta(days=1, hours=20)
    data = reader.read(source, None, lo, hi)
    assert 0 < len(data.files) < 6
    kept = pa.concat_tables([pq.read_table(f) for f in data.files])
    ts = kept.column("ts").to_pylist()
    wanted = [t for t in rows.column("ts").to_pylist() if lo <= t <= hi]
    assert wanted and set(wanted) <= set(ts)


def test_a_missing_table_is_an_error_naming_the_source(tmp_path):
    source = DeltaSource(name="txns", path="lake/nothing", timestamp_field="ts")
    with pytest.raises(NotFoundError, match=r"DeltaSource 'txns': no Delta table at 'lake/nothing'"):
        DeltaSourceReader(tmp_path).schema(source)
    code = source_code("DeltaSource", "lake/nothing")
    with pytest.raises(Exception, match=r"'src'.*no Delta table at 'lake/nothing'"):
        make_store(tmp_path / "repo", code)


@pytest.mark.parametrize(("configuration", "feature"), [
    ({"delta.enableDeletionVectors": "true"}, "deletionVectors"),
    ({"delta.columnMapping.mode": "name"}, "columnMapping"),
])
def test_tables_that_need_more_than_their_files_are_refused_by_feature(tmp_path, configuration, feature):
    write_deltalake(str(tmp_path / "t"), random_rows(seed=61, n=20), configuration=configuration)
    source = DeltaSource(name="txns", path="t", timestamp_field="ts")
    with pytest.raises(InvalidInputError, match=rf"DeltaSource 'txns'.*uses .*{feature}"):
        DeltaSourceReader(tmp_path).read(source, None, None, None)


def test_bad_definitions_are_refused():
    with pytest.raises(DefinitionError, match="needs a path"):
        DeltaSource(name="t", path="", timestamp_field="ts")
    with pytest.raises(DefinitionError, match="version must be"):
        DeltaSource(name="t", path="t", timestamp_field="ts", version=-1)
    with pytest.raises(DefinitionError, match="storage_options"):
        DeltaSource(name="t", path="t", timestamp_field="ts", storage_options={"AWS_REGION": 1})


@pytest.mark.slow
def test_the_spark_engine_reads_the_snapshot_files_as_the_local_engine_does(tmp_path):
    rows, entities = random_rows(seed=71), random_entities(seed=72)
    _write_in_commits(tmp_path / "lake" / "stats", rows)
    local = make_store(tmp_path, source_code("DeltaSource", "lake/stats"))
    spark = FeatureStore(tmp_path, config=load_config(tmp_path).model_copy(
        update={"engine": {"type": "spark", "master": "local[2]"}}))
    assert export_rows(spark, entities) == export_rows(local, entities)


@pytest.mark.slow
def test_the_spark_engine_refuses_a_partitioned_table_it_would_read_without_its_partition_columns(tmp_path):
    _write_in_commits(tmp_path / "lake" / "stats", random_rows(seed=81), partition_by=["driver_id"])
    make_store(tmp_path, source_code("DeltaSource", "lake/stats"))
    spark = FeatureStore(tmp_path, config=load_config(tmp_path).model_copy(
        update={"engine": {"type": "spark", "master": "local[2]"}}))
    with pytest.raises(InvalidInputError, match="partitioned Delta table's partition columns"):
        export_rows(spark, random_entities(seed=82))
