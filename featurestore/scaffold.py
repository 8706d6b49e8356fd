"""``featurestore init NAME``: a working feature repo with sample data, ready to apply and export."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.errors import InvalidInputError

CONFIG = """\
project: {project}
# Any SQLAlchemy URL; postgresql+psycopg://user:pass@host/db in production.
registry: sqlite:///data/registry.db
offline_store: {{type: parquet, path: data/offline}}
online_store: {{type: sqlite, path: data/online.db}}
"""

FEATURES = '''\
"""Feature definitions of the {project} repo: `featurestore apply` registers everything declared here."""

from datetime import timedelta

from featurestore import Entity, FeatureService, FeatureView, Field, FileSource
from featurestore.types import Float32, Float64, Int64

driver = Entity(name="driver", join_keys=["driver_id"], description="A driver of the ride service")

driver_stats_source = FileSource(
    name="driver_stats",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_field="created",
)

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=2),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="avg_daily_trips", dtype=Int64),
        Field(name="earnings", dtype=Float64),
    ],
    source=driver_stats_source,
)

model_v1 = FeatureService(name="model_v1", features=[driver_hourly_stats])
'''


def sample_data(n_drivers: int = 20, hours: int = 72, seed: int = 7,
                end: datetime | None = None) -> tuple[pa.Table, pa.Table]:
    """(hourly driver stats, an entity frame of training rows) ending at ``end`` (default: now)."""
    rng = np.random.default_rng(seed)
    end = (end or datetime.now(timezone.utc)).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=hours)
    ids = np.repeat(np.arange(1001, 1001 + n_drivers, dtype=np.int64), hours)
    offsets = np.tile(np.arange(hours, dtype=np.int64), n_drivers)
    start_us = int(start.timestamp() * 1_000_000)
    ts = start_us + offsets * 3_600_000_000
    stats = pa.table({
        "driver_id": ids,
        "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "created": pa.array(ts + 60_000_000, pa.timestamp("us", tz="UTC")),
        "conv_rate": pa.array(rng.random(ids.size), pa.float32()),
        "acc_rate": pa.array(rng.random(ids.size), pa.float32()),
        "avg_daily_trips": pa.array(rng.integers(0, 1000, ids.size), pa.int64()),
        "earnings": pa.array(np.round(rng.gamma(2.0, 40.0, ids.size), 2), pa.float64()),
    })
    n_rows = n_drivers * 5
    entity_ids = rng.integers(1001, 1001 + n_drivers + 2, n_rows)  # a few unknown drivers
    entity_ts = start_us + rng.integers(0, hours * 3600, n_rows) * 1_000_000
    entities = pa.table({
        "driver_id": pa.array(entity_ids, pa.int64()),
        "event_timestamp": pa.array(entity_ts, pa.timestamp("us", tz="UTC")),
        "label": pa.array(rng.integers(0, 2, n_rows).astype(bool)),
    })
    return stats, entities


def init_repo(path: Path, project: str | None = None) -> Path:
    path = Path(path)
    project = project or path.name.replace(" ", "_")
    if path.exists() and any(path.iterdir()):
        raise InvalidInputError(f"{path} exists and is not empty; choose a new directory")
    (path / "data").mkdir(parents=True, exist_ok=True)
    (path / "featurestore.yaml").write_text(CONFIG.format(project=project))
    (path / "features.py").write_text(FEATURES.format(project=project))
    stats, entities = sample_data()
    pq.write_table(stats, path / "data" / "driver_stats.parquet")
    pq.write_table(entities, path / "data" / "entities.parquet")
    return path
