"""Secrets never reach the registry or ``/registry``: a password written out in a SqlSource url, or a
secret written out in storage options, is refused at apply with a message pointing to ``${VAR}``;
specs a registry already holds (stored before apply refused them) are served with the secret
replaced by ``***``, and the source keeps working.

Real PostgreSQL for the SQL source, SQLite and PostgreSQL registries, the CLI as a subprocess, the
registry endpoints on a real uvicorn server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from featurestore import FeatureStore
from featurestore.secrets import literal_secrets, redact
from serving.app import create_app
from tests.repo_helpers import write_repo
from tests.test_serving import uvicorn_server

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
T0 = datetime(2024, 1, 1, tzinfo=UTC)
PASSWORD_VAR = "FS_TEST_SQL_SOURCE_PASSWORD"

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, SqlSource
from featurestore.types import Int64
driver = Entity(name="driver", join_keys=["driver_id"])
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=1),
    source=SqlSource(name="stats_sql", url={url!r}, table="driver_stats", timestamp_field="ts"),
    schema=[Field(name="trips", dtype=Int64)])
"""


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "featurestore.cli", "--repo", str(repo), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def source_db(fresh_postgres_db, monkeypatch) -> dict[str, str]:
    """A PostgreSQL table for the SqlSource; its url with the password written out, and with
    ``${FS_TEST_SQL_SOURCE_PASSWORD}`` in its place (the variable set)."""
    engine = sa.create_engine(fresh_postgres_db)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE driver_stats (driver_id BIGINT, ts TIMESTAMPTZ, trips BIGINT)"))
        conn.execute(sa.text("INSERT INTO driver_stats VALUES (:d, :t, :n)"),
                     [{"d": d, "t": T0 + timedelta(hours=h), "n": 10 * h + d} for d in (1, 2) for h in range(3)])
    engine.dispose()
    url = make_url(fresh_postgres_db)
    assert url.password, "the test database url has no password to protect"
    monkeypatch.setenv(PASSWORD_VAR, url.password)
    at = f"{url.host}:{url.port}/{url.database}"
    return {"literal": url.render_as_string(hide_password=False),
            "placeholder": f"{url.drivername}://{url.username}:${{{PASSWORD_VAR}}}@{at}",
            "credentials": f"{url.username}:{url.password}@",
            "redacted": f"{url.drivername}://{url.username}:***@{at}"}


@pytest.fixture(params=["sqlite", "postgres"])
def registry_url(request, fresh_postgres_db) -> str:
    return "sqlite:///data/registry.db" if request.param == "sqlite" else fresh_postgres_db


@pytest.mark.postgres
def test_apply_refuses_a_password_written_out_in_a_sql_source_url(tmp_path, source_db, registry_url):
    repo = write_repo(tmp_path / "repo", CODE.format(url=source_db["literal"]), registry=registry_url)
    refused = cli(repo, "apply")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    for text in ("SqlSource 'stats_sql'", "the password of the url", "${VAR}", "registry"):
        assert text in refused.stderr, refused.stderr
    with FeatureStore(repo) as store:
        assert store.registry.version() == 0 and store.registry.list("data_source") == {}

    (repo / "features.py").write_text(CODE.format(url=source_db["placeholder"]))
    applied = cli(repo, "apply")
    assert applied.returncode == 0, applied.stderr
    with FeatureStore(repo) as store:
        assert store.registry.get("data_source", "stats_sql")["url"] == source_db["placeholder"]
        assert store.registry.get("feature_view", "stats")["source"]["url"] == source_db["placeholder"]
        store.materialize(T0, T0 + timedelta(days=1), progress=False)  # the placeholder is read from the environment
        assert store.offline_store.read("stats").num_rows == 6


def test_apply_refuses_a_secret_written_out_in_storage_options(tmp_path):
    code = """
from featurestore import Entity, FeatureView, Field, FileSource, PushSource
from featurestore.types import Int64
driver = Entity(name="driver", join_keys=["driver_id"])
history = FileSource(name="history", path="data/stats.parquet", timestamp_field="ts",
                     storage_options={"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"})
stats = FeatureView(name="stats", entities=[driver], source=PushSource(name="stats_push", batch_source=history),
                    schema=[Field(name="trips", dtype=Int64)])
"""
    rows = pa.table({"driver_id": pa.array([1], pa.int64()), "ts": pa.array([T0], pa.timestamp("us", tz="UTC")),
                     "trips": pa.array([1], pa.int64())})
    repo = write_repo(tmp_path / "repo", code, tables={"stats": rows})
    refused = cli(repo, "apply")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "storage option 'AWS_SECRET_ACCESS_KEY'" in refused.stderr and "${VAR}" in refused.stderr
    assert "AWS_ACCESS_KEY_ID" not in refused.stderr  # an identifier, not a secret
    (repo / "features.py").write_text(code.replace('"s3cr3t-value"', '"${LAKE_SECRET}"'))
    assert cli(repo, "apply").returncode == 0
    with FeatureStore(repo) as store:
        spec = store.registry.get("data_source", "stats_push")
        assert spec["batch_source"]["storage_options"]["AWS_SECRET_ACCESS_KEY"] == "${LAKE_SECRET}"


@pytest.mark.postgres
def test_registry_endpoints_redact_a_password_stored_before_apply_refused_it(tmp_path, source_db, registry_url):
    repo = write_repo(tmp_path / "repo", CODE.format(url=source_db["placeholder"]), registry=registry_url)
    with FeatureStore(repo) as store:
        store.apply()
        with store.registry.write() as tx:  # what an older version stored: the url as written
            for kind, name in (("data_source", "stats_sql"), ("feature_view", "stats")):
                spec = tx.get(kind, name)
                source = spec if kind == "data_source" else spec["source"]
                source["url"] = source_db["literal"]
                tx.put(kind, name, spec)
        assert store.registry.get("data_source", "stats_sql")["url"] == source_db["literal"]
        store.materialize(T0, T0 + timedelta(days=1), progress=False)  # the stored url still reads the source
        assert store.offline_store.read("stats").num_rows == 6

        with uvicorn_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
            for path in ("/registry/data-sources", "/registry/data-sources/stats_sql", "/registry/feature-views",
                         "/registry/feature-views/stats"):
                response = http.get(path)
                assert response.status_code == 200
                assert source_db["credentials"] not in response.text, path
                assert source_db["redacted"] in response.text, path
            assert http.get("/registry/data-sources/stats_sql").json()["url"] == source_db["redacted"]
    for shown in ("table", "--json"):  # the readable table and the JSON form
        described = cli(repo, "describe", "sources", "stats_sql", *(["--json"] if shown == "--json" else []))
        assert described.returncode == 0 and source_db["credentials"] not in described.stdout, shown
        assert source_db["redacted"] in described.stdout, shown
    described = cli(repo, "describe", "views", "stats")  # the view's source, in the table
    assert described.returncode == 0 and source_db["credentials"] not in described.stdout


@pytest.mark.parametrize(("url", "found"), [
    ("postgresql://app:hunter2@db/f", ["the password of the url"]),
    ("postgresql://app:${PW}@db/f", []),
    ("postgresql://${USER}:${PW}@db/f", []),
    ("postgresql://app:pre-${PW}@db/f", ["the password of the url"]),  # part of it written out
    ("${DATABASE_URL}", []),
    ("sqlite:///data/features.db", []),
    ("postgresql://app@db/f?password=hunter2&sslmode=require", ["the url's query parameter 'password'"]),
    ("mssql+pyodbc:///?odbc_connect=DRIVER%3D%7BODBC%7D%3BPWD%3Dhunter2",
     ["a password inside the url's query parameter 'odbc_connect'"]),
])
def test_written_out_secrets_are_found_and_redacted(url, found):
    spec = {"kind": "sql", "name": "s", "url": url}
    assert [what for _, what in literal_secrets(spec)] == found
    shown = redact({"feature_view": {"source": spec}})["feature_view"]["source"]["url"]
    assert "hunter2" not in shown
    assert (shown == url) == (not found)
