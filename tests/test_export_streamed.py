"""Exports the engine streams to a file (entity rows given as a Parquet path) hold exactly what the
in-memory export of the same rows holds: the same columns, types, values and order."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore
from featurestore.errors import ConfigError, NotFoundError
from tests.repo_helpers import write_repo

UTC = timezone.utc
T0 = datetime(2025, 5, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource
from featurestore.types import Array, Bool, Float32, Float64, Int32, Int64, String, Timestamp
from transforms import Aggregation
user = Entity(name="user", join_keys=["user_id"])
shop = Entity(name="shop", join_keys=["shop"])
profile = FeatureView(name="profile", entities=[user], ttl=timedelta(hours=8),
    source=FileSource(name="profile_src", path="data/profile.parquet", timestamp_field="ts",
                      created_timestamp_field="created"),
    schema=[Field(name="score", dtype=Float32), Field(name="visits", dtype=Int32),
            Field(name="tier", dtype=String), Field(name="active", dtype=Bool),
            Field(name="seen", dtype=Timestamp), Field(name="tags", dtype=Array(Int64))])
pair = FeatureView(name="pair", entities=[user, shop], ttl=None,
    source=FileSource(name="pair_src", path="data/pair.parquet", timestamp_field="ts"),
    schema=[Field(name="ratio", dtype=Float64)])
spend = FeatureView(name="spend", entities=[user], ttl=timedelta(days=1),
    source=FileSource(name="spend_src", path="data/spend.parquet", timestamp_field="ts"),
    aggregations=[Aggregation(column="amount", function="sum", window=timedelta(hours=2)),
                  Aggregation(column="amount", function="max", window=None)])
"""
FEATURES = ["profile:score", "profile:visits", "profile:tier", "profile:active", "profile:seen", "profile:tags",
            "pair:ratio", "spend:amount_sum_2h", "spend:amount_max_lifetime"]


def _at(rng: random.Random, hours: int) -> datetime:
    return T0 + timedelta(seconds=rng.randrange(hours * 3600))


def _sources(rng: random.Random, n: int) -> dict[str, pa.Table]:
    users = lambda: [rng.randrange(30) for _ in range(n)]  # noqa: E731
    ts = [_at(rng, 48) for _ in range(n)]
    maybe = lambda make: [None if rng.random() < 0.1 else make() for _ in range(n)]  # noqa: E731
    return {
        "profile": pa.table({
            "user_id": pa.array(users(), pa.int64()), "ts": pa.array(ts, TS),
            "created": pa.array([t + timedelta(seconds=rng.randrange(3)) for t in ts], TS),
            "score": pa.array(maybe(rng.random), pa.float32()),
            "visits": pa.array(maybe(lambda: rng.randrange(1000)), pa.int32()),
            "tier": pa.array(maybe(lambda: rng.choice(["gold", "silver", "ü-tier", ""]))),
            "active": pa.array(maybe(lambda: rng.random() < 0.5)),
            "seen": pa.array(maybe(lambda: _at(rng, 48)), TS),
            "tags": pa.array(maybe(lambda: [rng.randrange(9) for _ in range(rng.randrange(4))]),
                             pa.list_(pa.int64()))}),
        "pair": pa.table({"user_id": pa.array(users(), pa.int64()),
                          "shop": pa.array([rng.choice("abc") for _ in range(n)]),
                          "ts": pa.array([_at(rng, 48) for _ in range(n)], TS),
                          "ratio": pa.array(maybe(rng.random), pa.float64())}),
        "spend": pa.table({"user_id": pa.array(users(), pa.int64()),
                           "ts": pa.array([_at(rng, 48) for _ in range(n)], TS),
                           "amount": pa.array([rng.randrange(1, 500) for _ in range(n)], pa.int64())}),
    }


def _entities(rng: random.Random, n: int) -> pa.Table:
    return pa.table({"user_id": pa.array([rng.randrange(32) for _ in range(n)], pa.int32()),
                     "shop": pa.array([rng.choice("abcd") for _ in range(n)]),
                     "event_timestamp": pa.array([_at(rng, 60) for _ in range(n)], TS),
                     "label": pa.array([rng.random() for _ in range(n)])})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_streamed_export_equals_the_in_memory_one(tmp_path, seed):
    rng = random.Random(seed)
    repo = write_repo(tmp_path / "repo", CODE, tables=_sources(rng, 800))
    # Chunks that cut files in the middle, that hold whole files, and one chunk for everything.
    chunk_rows = {1: 97, 2: 500, 3: 2_000_000}[seed]
    with open(repo / "featurestore.yaml", "a") as config:
        config.write(f"engine: {{type: local, export_chunk_rows: {chunk_rows}}}\n")
    store = FeatureStore(repo)
    store.apply()
    if seed == 2:  # the offline store and its appended rows as the input, not the sources
        store.materialize(T0 - timedelta(days=3), T0 + timedelta(days=4), online=False)
    entity = _entities(rng, 700)
    folder = tmp_path / "entities"
    folder.mkdir()
    for i, offset in enumerate(range(0, entity.num_rows, 250)):  # several files, read in name order
        part = folder / f"day={i}" if seed == 3 else folder  # nested folders too
        part.mkdir(exist_ok=True)
        pq.write_table(entity.slice(offset, 250), part / f"part-{i:03d}.parquet")
    (folder / "_SUCCESS").write_text("")  # what writers leave beside their files: never read
    (folder / ".part-000.parquet.crc").write_bytes(b"\x00garbage")
    want = store.get_historical_features(entity, FEATURES).to_arrow()
    manifest = store.get_historical_features(str(folder), FEATURES).to_parquet(tmp_path / "out.parquet")
    assert manifest["written_by"] == "local" and manifest["row_count"] == entity.num_rows
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.column_names == want.column_names
    for name in want.column_names:
        assert got.column(name).type == want.column(name).type, name
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


def test_an_empty_entity_folder_is_an_error(tmp_path):
    rng = random.Random(4)
    store = FeatureStore(write_repo(tmp_path / "repo", CODE, tables=_sources(rng, 50)))
    store.apply()
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="no Parquet files in the entity folder"):
        store.get_historical_features(str(tmp_path / "empty"), ["profile:score"]).to_parquet(tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


def test_a_streamed_export_loads_neither_pandas_nor_arrow_datasets(tmp_path):
    """Each costs ~50 MB beside an export whose memory should be the engine's alone."""
    import subprocess
    import sys

    rng = random.Random(5)
    repo = write_repo(tmp_path / "repo", CODE, tables=_sources(rng, 50))
    FeatureStore(repo).apply()
    pq.write_table(_entities(rng, 40), tmp_path / "entities.parquet")
    code = ("import sys; from featurestore import FeatureStore; "
            f"FeatureStore({str(repo)!r}).get_historical_features({str(tmp_path / 'entities.parquet')!r}, "
            f"{FEATURES!r}).to_parquet({str(tmp_path / 'out.parquet')!r}); "
            "print(sorted(m for m in ('pandas', 'pyarrow.dataset', 'deltalake') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 40


def test_a_streamed_export_under_a_small_memory_budget_gives_the_same_file(tmp_path):
    rng = random.Random(6)
    repo = write_repo(tmp_path / "repo", CODE, tables=_sources(rng, 3000))
    FeatureStore(repo).apply()
    entity = _entities(rng, 400_000)
    pq.write_table(entity, tmp_path / "entities.parquet")
    outputs = {}
    for budget in ("none", "128MB"):
        config = (repo / "featurestore.yaml").read_text().split("engine:")[0]
        (repo / "featurestore.yaml").write_text(config + f"engine: {{type: local, export_memory_limit: {budget}}}\n")
        out = tmp_path / f"out-{budget}.parquet"
        FeatureStore(repo).get_historical_features(str(tmp_path / "entities.parquet"), FEATURES).to_parquet(out)
        outputs[budget] = pq.read_table(out)
    assert outputs["128MB"].equals(outputs["none"])
    assert outputs["none"].num_rows == entity.num_rows
    # A budget the join cannot live within is an error naming the setting, and leaves no file behind.
    (repo / "featurestore.yaml").write_text(config + "engine: {type: local, export_memory_limit: 40MB}\n")
    with pytest.raises(ConfigError, match="export_memory_limit"):
        FeatureStore(repo).get_historical_features(str(tmp_path / "entities.parquet"), FEATURES).to_parquet(
            tmp_path / "out-small.parquet")
    assert not list(tmp_path.glob("out-small.parquet*"))


@pytest.mark.parametrize("field, value", [("memory_limit", "lots"), ("export_memory_limit", "2 gigs"),
                                          ("memory_limit", "none")])
def test_a_memory_budget_that_is_not_a_size_is_refused(field, value):
    from featurestore.engines.local import LocalEngineConfig

    with pytest.raises(ValueError, match="is not a size"):
        LocalEngineConfig(**{field: value})
