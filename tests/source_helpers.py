"""One feature view read from different batch sources: random rows, and everything a store does with
them (a point-in-time export, a materialization, online lookups), so tests can compare sources."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from featurestore import FeatureStore
from tests.repo_helpers import write_repo

UTC = timezone.utc
T0 = datetime(2024, 5, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
DRIVERS = 15
END = T0 + timedelta(days=4)

CODE = """
from datetime import timedelta
from featurestore import DeltaSource, Entity, FeatureView, Field, FileSource
from featurestore.types import Float64, Int64
driver = Entity(name="driver", join_keys=["driver_id"])
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(hours=12),
    source={source},
    schema=[Field(name="trips", dtype=Int64), Field(name="rate", dtype=Float64)])
"""


def random_rows(seed: int, n: int = 400) -> pa.Table:
    """Feature rows over three days; some share a driver and event time and differ in created time
    (the tie the point-in-time join breaks), some rates are null."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        ts = T0 + timedelta(microseconds=rng.randrange(3 * 86_400 * 10**6))
        rows.append((rng.randrange(DRIVERS), ts, ts + timedelta(seconds=rng.randrange(60)),
                     rng.randrange(1000), None if rng.random() < 0.1 else rng.uniform(0, 1)))
        if rng.random() < 0.1:
            d, ts, created, _, _ = rows[-1]
            rows.append((d, ts, created + timedelta(seconds=1), rng.randrange(1000), rng.uniform(0, 1)))
    driver, ts, created, trips, rate = zip(*rows)
    return pa.table({"driver_id": pa.array(driver, pa.int64()), "ts": pa.array(ts, TS),
                     "created": pa.array(created, TS), "trips": pa.array(trips, pa.int64()),
                     "rate": pa.array(rate, pa.float64())})


def random_entities(seed: int, n: int = 300) -> pa.Table:
    """Entity rows over the data's days and a little after, including drivers with no rows."""
    rng = random.Random(seed)
    return pa.table({
        "driver_id": pa.array([rng.randrange(DRIVERS + 3) for _ in range(n)], pa.int64()),
        "event_timestamp": pa.array([T0 + timedelta(microseconds=rng.randrange(4 * 86_400 * 10**6))
                                     for _ in range(n)], TS)})


def source_code(kind: str, path: str, storage_options: dict[str, str] | None = None, **extra: object) -> str:
    """Python for a source of the view (``kind``: FileSource or DeltaSource) named ``src``."""
    args = [f'name="src", path={path!r}, timestamp_field="ts", created_timestamp_field="created"']
    if storage_options:
        args.append(f"storage_options={storage_options!r}")
    args += [f"{k}={v!r}" for k, v in extra.items()]
    return f"{kind}({', '.join(args)})"


def make_store(path: Path, source: str, tables: dict[str, pa.Table] | None = None) -> FeatureStore:
    path.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(write_repo(path, CODE.format(source=source), tables=tables))
    store.apply()
    return store


@dataclass
class Outcome:
    export: list[dict]
    offline: list[dict]
    online: dict


def export_rows(store: FeatureStore, entities: pa.Table) -> list[dict]:
    return store.get_historical_features(entities, ["stats:trips", "stats:rate"]).to_arrow().to_pylist()


def outcome(store: FeatureStore, entities: pa.Table) -> Outcome:
    """The export (before materializing: read from the source), the offline rows materialization
    wrote, and the online values it left for every driver."""
    export = export_rows(store, entities)
    store.materialize(T0, END)
    offline = store.offline_store.read("stats").sort_by(
        [("driver_id", "ascending"), ("event_timestamp", "ascending"), ("created_timestamp", "ascending"),
         ("trips", "ascending")]).to_pylist()
    online = store.get_online_features(["stats:trips", "stats:rate"],
                                       [{"driver_id": d} for d in range(DRIVERS + 3)]).to_dict()
    return Outcome(export, offline, online)
