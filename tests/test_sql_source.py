"""SqlSource (table and query) against a real PostgreSQL: same answers as the file source."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from featurestore import FeatureStore
from featurestore.errors import DefinitionError
from tests.repo_helpers import write_repo

pytestmark = pytest.mark.postgres
UTC = timezone.utc
T0 = datetime(2024, 1, 1, tzinfo=UTC)

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, SqlSource
from featurestore.types import Float64, Int64
driver = Entity(name="driver", join_keys=["driver_id"])
by_table = FeatureView(name="by_table", entities=[driver], ttl=timedelta(hours=2),
    source=SqlSource(name="stats_table", url="${FS_SQL_URL}", table="public.driver_stats",
                     timestamp_field="event_timestamp", created_timestamp_field="created"),
    schema=[Field(name="trips", dtype=Int64), Field(name="rate", dtype=Float64)])
by_query = FeatureView(name="by_query", entities=[driver], ttl=timedelta(hours=2),
    source=SqlSource(name="stats_query", url="${FS_SQL_URL}",
                     query="SELECT driver_id, event_timestamp, created, trips * 2 AS trips2 FROM driver_stats",
                     timestamp_field="event_timestamp", created_timestamp_field="created"),
    schema=[Field(name="trips2", dtype=Int64)])
"""


@pytest.fixture
def pg_repo(tmp_path, fresh_postgres_db, monkeypatch):
    engine = sa.create_engine(fresh_postgres_db)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE driver_stats (driver_id BIGINT, event_timestamp TIMESTAMPTZ, "
                             "created TIMESTAMPTZ, trips BIGINT, rate DOUBLE PRECISION)"))
        rows = [(1, 0, 0, 10, 0.1), (1, 1, 1, 20, 0.2), (1, 1, 2, 30, 0.3), (2, 0, 0, 50, 0.5)]
        conn.execute(sa.text("INSERT INTO driver_stats VALUES (:d, :e, :c, :t, :r)"), [
            {"d": d, "e": T0 + timedelta(hours=e), "c": T0 + timedelta(hours=c), "t": t, "r": r}
            for d, e, c, t, r in rows])
    engine.dispose()
    monkeypatch.setenv("FS_SQL_URL", fresh_postgres_db)
    repo = write_repo(tmp_path, CODE)
    store = FeatureStore(repo)
    store.apply()
    return store


def test_table_and_query_sources_join_point_in_time(pg_repo):
    df = pd.DataFrame({"driver_id": [1, 1, 2, 2, 7],
                       "event_timestamp": [T0 + timedelta(hours=h) for h in (1, 0.5, 1, 3, 1)]})
    out = pg_repo.get_historical_features(df, ["by_table:trips", "by_table:rate", "by_query:trips2"]).to_pandas()
    trips = [None if pd.isna(v) else int(v) for v in out["trips"]]
    assert trips == [30, 10, 50, None, None]
    assert out["rate"].tolist()[:3] == [0.3, 0.1, 0.5]
    assert [None if pd.isna(v) else int(v) for v in out["trips2"]] == [60, 20, 100, None, None]


def test_registry_never_holds_the_password(pg_repo):
    spec = pg_repo.registry.get("data_source", "stats_table")
    assert spec["url"] == "${FS_SQL_URL}"


def test_missing_table_fails_apply_naming_it(tmp_path, fresh_postgres_db, monkeypatch):
    monkeypatch.setenv("FS_SQL_URL", fresh_postgres_db)
    store = FeatureStore(write_repo(tmp_path, CODE))
    with pytest.raises(DefinitionError, match="table 'public.driver_stats' does not exist"):
        store.apply()
    assert store.registry.version() == 0
