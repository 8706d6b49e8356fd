"""Damaged state: each case gives an error that names the damaged file or path and the command that
repairs it (no traceback), and that command repairs it.

- The offline store's Delta tables: a damaged or missing commit, a missing checkpoint, a missing or
  truncated data file; ``featurestore offline repair VIEW`` restores them (rematerializing what the
  materialized rows lost), and reports what appended rows it could not keep.
- A truncated source Parquet file.
- A SQLite online store path under a regular file (REST answers 500 with a JSON body naming it).
- A read-only registry (SQLite file or folder, PostgreSQL without write grants) serves reads.

The CLI runs as a real subprocess; the registry is SQLite or PostgreSQL where it matters (the
repair reads the materialized intervals from it).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from featurestore import FeatureStore
from featurestore.errors import ConflictError, DamagedStateError
from featurestore.registry import Registry, RegistryReadOnlyError
from serving.app import create_app
from tests.repo_helpers import write_repo
from tests.test_serving import uvicorn_server

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
T0 = datetime(2024, 3, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
REPAIR = "featurestore offline repair stats"
LATEST_OF_DRIVER_1 = "2024-03-04T23:01:00Z"  # its newest row materialized (online, past the TTL by now)

CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource, PushSource
from featurestore.types import Float64, Int64
driver = Entity(name="driver", join_keys=["driver_id"])
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=1),
    source=PushSource(name="stats_push",
                      batch_source=FileSource(name="src", path="data/stats.parquet", timestamp_field="ts")),
    schema=[Field(name="trips", dtype=Int64), Field(name="rate", dtype=Float64)])
"""


def _rows(days: int = 4, drivers: int = 3) -> pa.Table:
    ids, ts, trips, rate = [], [], [], []
    for h in range(24 * days):
        for d in range(drivers):
            ids.append(d)
            ts.append(T0 + timedelta(hours=h, minutes=d))
            trips.append(h * 10 + d)
            rate.append(h / 7)
    return pa.table({"driver_id": pa.array(ids, pa.int64()), "ts": pa.array(ts, TS),
                     "trips": pa.array(trips, pa.int64()), "rate": pa.array(rate, pa.float64())})


def cli(repo: Path, *args: str, preexec_fn=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``featurestore --repo REPO ARGS`` in a subprocess running this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "featurestore.cli", "--repo", str(repo), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


def assert_clean_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    """Exit code 1, one readable error naming everything in ``expected``, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for text in expected:
        assert text in result.stderr, (text, result.stderr)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request) -> str:
    return "sqlite:///data/registry.db" if request.param == "sqlite" else request.getfixturevalue("fresh_postgres_db")


@pytest.fixture
def repo(tmp_path, registry_url) -> Path:
    """A repo whose view ``stats`` is materialized for [T0, T0 + 4 days): four commits, one per day,
    and an entity file whose times that covers (exports read the offline store)."""
    path = write_repo(tmp_path / "repo", CODE, registry=registry_url, tables={"stats": _rows()})
    with FeatureStore(path) as store:
        store.apply()
        store.materialize(T0, T0 + timedelta(days=4), progress=False)
    pq.write_table(pa.table({"driver_id": pa.array([0, 1, 2, 1], pa.int64()),
                             "event_timestamp": pa.array([T0 + timedelta(days=d, hours=5) for d in (1, 1, 2, 3)], TS)}),
                   path / "entities.parquet")
    return path


def offline_rows(repo: Path, appended: bool = False) -> pa.Table:
    with FeatureStore(repo) as store:
        offline = store.offline_store.appends if appended else store.offline_store
        return offline.read("stats").sort_by([("event_timestamp", "ascending"), ("driver_id", "ascending")])


def export(repo: Path, name: str) -> subprocess.CompletedProcess:
    return cli(repo, "export", "--entities", str(repo / "entities.parquet"), "--features", "stats:trips,stats:rate",
               "-o", str(repo / name))


def table_dir(repo: Path, appended: bool = False) -> Path:
    return repo / "data" / "offline" / "test" / ("_appends/stats" if appended else "stats")


def commit(repo: Path, version: int, appended: bool = False) -> Path:
    return table_dir(repo, appended) / "_delta_log" / f"{version:020d}.json"


def day_file(repo: Path, day: int) -> Path:
    """The materialized table's data file holding the rows of day ``day`` (0-based)."""
    with FeatureStore(repo) as store:
        files = store.offline_store.files("stats", T0 + timedelta(days=day, hours=1), T0 + timedelta(days=day, hours=2))
    assert len(files) == 1, files
    return Path(files[0])


# ------------------------------------------------------------------------------------- offline log


def _truncate_latest(repo: Path) -> Path:
    path = commit(repo, 3)
    os.truncate(path, path.stat().st_size // 2)
    return path


def _garbage_middle(repo: Path) -> Path:
    path = commit(repo, 1)
    path.write_bytes(b'{"add": {"path": "part-')
    return path


def _missing_first(repo: Path) -> Path:
    path = commit(repo, 0)
    path.unlink()
    return path


@pytest.mark.parametrize("damage", [_truncate_latest, _garbage_middle, _missing_first])
def test_a_damaged_commit_is_named_and_offline_repair_restores_the_materialized_rows(repo, damage):
    before, exported = offline_rows(repo), export(repo, "before.parquet")
    assert exported.returncode == 0, exported.stderr
    damaged = damage(repo)

    assert_clean_error(export(repo, "out.parquet"), str(damaged), REPAIR)
    assert_clean_error(cli(repo, "materialize", "2024-03-02", "2024-03-03", "--offline-only"), str(damaged), REPAIR)

    repaired = cli(repo, "offline", "repair", "stats")
    assert repaired.returncode == 0, repaired.stderr
    assert str(damaged) in repaired.stdout and "rematerialized from the source" in repaired.stdout
    assert offline_rows(repo).equals(before)
    assert export(repo, "after.parquet").returncode == 0
    assert pq.read_table(repo / "after.parquet").equals(pq.read_table(repo / "before.parquet"))
    assert list((repo / "data" / "offline" / "test" / "_damaged" / "stats").iterdir())  # kept for inspection
    again = cli(repo, "offline", "repair", "stats")
    assert again.returncode == 0 and "nothing to repair" in again.stdout


def test_a_missing_checkpoint_is_named_and_repaired_without_losing_a_version(repo):
    from deltalake import DeltaTable

    DeltaTable(str(table_dir(repo))).create_checkpoint()
    with FeatureStore(repo) as store:  # one more commit after the checkpoint
        store.materialize(T0 + timedelta(days=3), T0 + timedelta(days=4), progress=False)
        fingerprint = store.offline_store.fingerprint("stats")
    before = offline_rows(repo)
    checkpoint = next(table_dir(repo).glob("_delta_log/*.checkpoint.parquet"))
    checkpoint.unlink()

    assert_clean_error(export(repo, "out.parquet"), str(checkpoint), REPAIR)
    repaired = cli(repo, "offline", "repair", "stats")
    assert repaired.returncode == 0, repaired.stderr
    assert "checkpoint" in repaired.stdout
    with FeatureStore(repo) as store:
        assert store.offline_store.fingerprint("stats") == fingerprint  # same table, same version: nothing lost
    assert offline_rows(repo).equals(before)
    assert export(repo, "out.parquet").returncode == 0


# ------------------------------------------------------------------------------- offline data files


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_damaged_data_file_is_named_and_offline_repair_rematerializes_its_rows(repo, damage):
    before = offline_rows(repo)
    path = day_file(repo, 2)
    if damage == "missing":
        path.unlink()
    else:
        os.truncate(path, 100)

    assert_clean_error(export(repo, "out.parquet"), str(path), REPAIR)
    assert_clean_error(cli(repo, "offline", "optimize", "stats"), str(path), REPAIR)
    with FeatureStore(repo) as store, pytest.raises(DamagedStateError, match=REPAIR) as caught:
        store.offline_store.read("stats")
    assert caught.value.path == str(path)
    # a materialization whose interval cuts the file keeps its rows outside it: it must read the file
    assert_clean_error(cli(repo, "materialize", "2024-03-03T12:00:00", "2024-03-05", "--offline-only"),
                       str(path), REPAIR)

    repaired = cli(repo, "offline", "repair", "stats")
    assert repaired.returncode == 0, repaired.stderr
    assert f"{path} " in repaired.stdout and "72 rows" in repaired.stdout
    assert "2024-03-03T00:00:00+00:00 .. 2024-03-03T23:02:00.001000+00:00" in repaired.stdout  # only that day
    assert offline_rows(repo).equals(before)
    assert export(repo, "out.parquet").returncode == 0
    assert cli(repo, "materialize", "2024-03-03T12:00:00", "2024-03-05", "--offline-only").returncode == 0
    assert offline_rows(repo).equals(before)


# ------------------------------------------------------------------------------------ appended rows


def _append(store: FeatureStore, hours: range, offsets: tuple[int, int]) -> None:
    rows = pa.table({"driver_id": pa.array([1] * len(hours), pa.int64()),
                     "trips": pa.array(list(hours), pa.int64()),
                     "rate": pa.array([0.5] * len(hours), pa.float64()),
                     "event_timestamp": pa.array([T0 + timedelta(days=5, hours=h) for h in hours], TS),
                     "created_timestamp": pa.array([T0 + timedelta(days=5, hours=h) for h in hours], TS)})
    store.offline_store.appends.append("stats", rows, "event_timestamp", stream="clicks", offsets={0: offsets},
                                       progress={"watermark": offsets[1]})


def test_damaged_appended_rows_keep_what_is_readable_and_the_repair_says_what_is_lost(repo):
    with FeatureStore(repo) as store:
        _append(store, range(0, 3), (0, 2))
        _append(store, range(3, 6), (3, 5))
        kept_rows = store.offline_store.appends.read("stats")
        _append(store, range(6, 9), (6, 8))
    damaged = commit(repo, 2, appended=True)
    os.truncate(damaged, 40)
    assert_clean_error(export(repo, "out.parquet"), str(damaged), REPAIR, "appended rows")

    repaired = cli(repo, "offline", "repair", "stats")
    assert repaired.returncode == 0, repaired.stderr
    assert str(damaged) in repaired.stdout and "version 2 cannot be read and is lost" in repaired.stdout
    assert "streamed or pushed rows are lost" in repaired.stdout
    assert offline_rows(repo, appended=True).equals(
        kept_rows.sort_by([("event_timestamp", "ascending"), ("driver_id", "ascending")]))
    with FeatureStore(repo) as store:
        # the stream's offsets and progress are those of the restored version: its rows and offsets agree
        assert store.offline_store.appends.stream_progress("stats", "clicks") == ({0: 5}, {"watermark": 5})
        with pytest.raises(ConflictError):
            _append(store, range(3, 6), (3, 5))
        _append(store, range(6, 9), (6, 8))  # the lost events, delivered again
        assert store.offline_store.appends.read("stats").num_rows == 9
    assert export(repo, "out.parquet").returncode == 0

    # a data file of the appended rows goes missing: only its rows are lost, and counted
    with FeatureStore(repo) as store:
        lost = store.offline_store.appends.files("stats", T0 + timedelta(days=5, hours=7), T0 + timedelta(days=5, hours=7))
    Path(lost[0]).unlink()
    pq.write_table(pa.table({"driver_id": pa.array([1], pa.int64()),
                             "event_timestamp": pa.array([T0 + timedelta(days=5, hours=10)], TS)}), repo / "late.parquet")
    assert_clean_error(cli(repo, "export", "--entities", str(repo / "late.parquet"), "--features", "stats:trips",
                           "-o", str(repo / "out.parquet")), lost[0], REPAIR)
    repaired = cli(repo, "offline", "repair", "stats")
    assert repaired.returncode == 0, repaired.stderr
    assert "appended rows: 3 streamed or pushed rows are lost" in repaired.stdout
    assert offline_rows(repo, appended=True).num_rows == 6


# ------------------------------------------------------------------------------------ source files


def test_a_truncated_source_file_is_named_without_a_traceback_and_restoring_it_repairs(repo):
    source = repo / "data" / "stats.parquet"
    good = source.read_bytes()
    os.truncate(source, 500)
    result = cli(repo, "materialize", "2024-03-01", "2024-03-02")
    assert_clean_error(result, str(source), "FileSource 'src'", "restore the file")
    # an export past the materialized intervals reads the source too
    pq.write_table(pa.table({"driver_id": pa.array([1], pa.int64()),
                             "event_timestamp": pa.array([T0 + timedelta(days=6)], TS)}), repo / "late.parquet")
    assert_clean_error(cli(repo, "export", "--entities", str(repo / "late.parquet"), "--features", "stats:trips",
                           "-o", str(repo / "out.parquet")), str(source), "FileSource 'src'")
    assert_clean_error(cli(repo, "plan"), str(source))  # checking the definitions reads its schema
    source.write_bytes(good)
    assert cli(repo, "materialize", "2024-03-01", "2024-03-02").returncode == 0


# -------------------------------------------------------------------------------- online store path


def test_an_online_store_path_under_a_regular_file_is_named_over_rest_and_the_cli(tmp_path):
    path = write_repo(tmp_path / "repo", CODE, tables={"stats": _rows()},
                      online_store="{type: sqlite, path: data/online/features.db}")
    with FeatureStore(path) as store:
        store.apply()
    blocker = path / "data" / "online"
    blocker.write_text("a file where the online store's folder should be")
    database = str(blocker / "features.db")
    request = {"features": ["stats:trips"], "entities": {"driver_id": [1]}}
    push = {"push_source_name": "stats_push",
            "df": {"driver_id": [1], "ts": ["2024-03-05T00:00:00Z"], "trips": [1], "rate": [0.5]}}
    with FeatureStore(path) as store, uvicorn_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        for response in (http.post("/get-online-features", json=request), http.post("/push", json=push)):
            assert response.status_code == 500
            error = response.json()["error"]
            assert error["type"] == "DamagedStateError"
            assert database in error["message"] and f"move {blocker} away" in error["message"]
        assert http.get("/health").status_code == 503
        assert_clean_error(cli(path, "materialize", "2024-03-01", "2024-03-05"), database, f"move {blocker} away")

        # the repair the message names: move the file away, refill with `featurestore materialize`
        blocker.rename(path / "data" / "online.moved-away")
        assert cli(path, "materialize", "2024-03-01", "2024-03-05").returncode == 0
        body = http.post("/get-online-features", json=request).json()
        assert body["results"][1]["event_timestamps"] == [LATEST_OF_DRIVER_1]


# ------------------------------------------------------------------------------ read-only registry


def _drop_file_permission_override() -> None:
    """In a child process run as root: give up overriding file permissions (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH) so read-only modes bind it as they bind anyone else."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone from the exec'd program
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _read_only_child():
    """A ``preexec_fn`` for subprocesses that must meet read-only files as read-only."""
    if os.geteuid() != 0:
        return None
    if not sys.platform.startswith("linux"):
        pytest.skip("running as root without Linux capabilities: file modes do not bind")
    return _drop_file_permission_override


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["file", "folder", "rollback-journal file"])
def test_a_read_only_sqlite_registry_serves_reads_and_refuses_writes(tmp_path, case):
    """``file``: the database file is read-only; ``folder``: its folder too (a WAL database there is
    opened immutable); ``rollback-journal file``: a database not in WAL mode is not switched to it."""
    path = write_repo(tmp_path / "repo", CODE, registry="sqlite:///registry/registry.db", tables={"stats": _rows()})
    (path / "registry").mkdir()
    with FeatureStore(path) as store:
        store.apply()
        store.materialize(T0, T0 + timedelta(days=4), progress=False)
    pq.write_table(pa.table({"driver_id": pa.array([1], pa.int64()),
                             "event_timestamp": pa.array([T0 + timedelta(days=2)], TS)}), path / "entities.parquet")
    database = path / "registry" / "registry.db"
    if case == "rollback-journal file":
        with sa.create_engine(f"sqlite:///{database}").connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode = DELETE")
    database.chmod(0o444)
    if case == "folder":
        database.parent.chmod(0o555)
    before, files_before = _sha(database), sorted(p.name for p in database.parent.iterdir())
    child = _read_only_child()
    probe = subprocess.run([sys.executable, "-c", f"open({str(database)!r}, 'a')"], preexec_fn=child,
                           capture_output=True)
    assert probe.returncode != 0, "the registry file is still writable for the child: the test would prove nothing"
    try:
        listed = cli(path, "list", "views", "--names", preexec_fn=child)
        assert listed.returncode == 0 and listed.stdout.split() == ["stats"], listed.stderr
        exported = cli(path, "export", "--entities", str(path / "entities.parquet"), "--features", "stats:trips",
                       "-o", str(path / "out.parquet"), preexec_fn=child)
        assert exported.returncode == 0, exported.stderr
        assert pq.read_table(path / "out.parquet").column("trips").to_pylist() == [471]  # hour 47, driver 1
        assert_clean_error(cli(path, "apply", preexec_fn=child), "read-only", "registry.db")

        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "featurestore.cli", "--repo", str(path), "serve", "--port",
                                   str(port), "--log-level", "warning"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=child,
                                  start_new_session=True)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        health = http.get("/health")
                        break
                    except httpx.TransportError:
                        assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                        time.sleep(0.2)
                assert health.status_code == 200 and health.json()["registry_version"] == 1
                assert http.get("/registry").json()["feature_views"] == ["stats"]
                body = http.post("/get-online-features",
                                 json={"features": ["stats:trips"], "entities": {"driver_id": [1]}}).json()
                assert body["results"][1]["event_timestamps"] == [LATEST_OF_DRIVER_1]
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
    finally:
        database.parent.chmod(0o755)
    assert _sha(database) == before  # no migration, no journal mode switch: not one byte written
    if case == "folder":
        assert sorted(p.name for p in database.parent.iterdir()) == files_before


@pytest.mark.postgres
def test_a_postgres_registry_without_write_grants_serves_reads_and_refuses_writes(tmp_path, fresh_postgres_db):
    path = write_repo(tmp_path / "repo", CODE, registry=fresh_postgres_db, tables={"stats": _rows()})
    with FeatureStore(path) as store:
        store.apply()
        store.materialize(T0, T0 + timedelta(days=4), progress=False)
    engine = sa.create_engine(fresh_postgres_db, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:  # the owner gives up its own write grants: the tables are read-only to it
        conn.exec_driver_sql("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public FROM CURRENT_USER")
    engine.dispose()

    listed = cli(path, "list", "views", "--names")
    assert listed.returncode == 0 and listed.stdout.split() == ["stats"], listed.stderr
    assert_clean_error(cli(path, "materialize", "2024-03-01", "2024-03-02"), "read-only", "permission denied")
    with Registry(fresh_postgres_db, "test") as registry:
        with pytest.raises(RegistryReadOnlyError, match="read-only for this process"):
            with registry.write() as tx:
                tx.set_state("x", "y", "z")
    with FeatureStore(path) as store, uvicorn_server(create_app(store)) as url, httpx.Client(base_url=url) as http:
        assert http.get("/health").status_code == 200
        assert json.loads(http.get("/registry/feature-views/stats").text)["name"] == "stats"
        body = http.post("/get-online-features", json={"features": ["stats:trips"], "entities": {"driver_id": [1]}})
        assert body.status_code == 200 and body.json()["results"][1]["event_timestamps"] == [LATEST_OF_DRIVER_1]


def test_damaged_state_errors_carry_the_path_and_the_repair(repo):
    """The SDK raises the error the CLI prints: a DamagedStateError with ``path`` and ``repair``."""
    damaged = _truncate_latest(repo)
    with FeatureStore(repo) as store:
        with pytest.raises(DamagedStateError) as caught:
            store.materialize(T0, T0 + timedelta(days=1), progress=False)
    assert caught.value.path == str(damaged) and REPAIR in caught.value.repair


def test_a_read_only_registry_whose_schema_needs_migrating_says_so(tmp_path):
    from featurestore.registry.migrations import LATEST, upgrade
    from featurestore.registry.store import create_registry_engine

    path = write_repo(tmp_path / "repo", CODE, registry="sqlite:///registry/registry.db", tables={"stats": _rows()})
    database = path / "registry" / "registry.db"
    database.parent.mkdir()
    engine = create_registry_engine(f"sqlite:///{database}")
    upgrade(engine, target=LATEST - 1)  # as an older featurestore left it
    engine.dispose()
    database.chmod(0o444)
    database.parent.chmod(0o555)
    try:
        assert_clean_error(cli(path, "list", "views", preexec_fn=_read_only_child()), "read-only",
                           f"migration {LATEST}", "write access")
    finally:
        database.parent.chmod(0o755)
