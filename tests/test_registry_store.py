"""The registry storage layer on SQLite and PostgreSQL: versions, history, rollback, locking, migrations.

PostgreSQL tests (marker ``postgres``) get an empty database of their own from the shared
``fresh_postgres_db`` fixture (``tests/conftest.py``; it reads ``FS_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from datetime import timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, select, text

from featurestore.errors import BackendUnavailableError, ConfigError, InvalidInputError, NotFoundError
from featurestore.registry import (
    Registry,
    RegistryObjectNotFound,
    RegistrySchemaTooNewError,
    RegistryUsageError,
)
from featurestore.registry import schema as tables
from featurestore.registry.migrations import LATEST, MIGRATIONS, applied_migrations, upgrade
from featurestore.registry.store import create_registry_engine

# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """An empty registry database URL, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("fresh_postgres_db")


@pytest.fixture
def reg(db_url):
    registry = Registry(db_url, "proj")
    yield registry
    registry.close()


class Boom(Exception):
    pass


ENTITY = {"name": "driver", "join_keys": ["driver_id"], "description": "a driver"}


# -- basic reads and writes -----------------------------------------------------------------------


def test_empty_registry(reg):
    assert reg.version() == 0
    assert reg.get("entity", "driver") is None
    assert reg.list("entity") == {}
    assert reg.snapshot() == {}
    assert reg.history("entity", "driver") == []
    assert reg.get_state("watermark", "v") is None


def test_put_get_list_snapshot(reg):
    with reg.write() as tx:
        tx.put("entity", "driver", ENTITY)
        tx.put("entity", "customer", {"name": "customer", "join_keys": ["customer_id"]})
        tx.put("feature_view", "stats", {"name": "stats", "entities": ["driver"], "ttl": 3600})
    assert tx.changed and tx.new_version == 1
    assert reg.version() == 1
    assert reg.get("entity", "driver") == ENTITY
    assert list(reg.list("entity")) == ["customer", "driver"]
    assert reg.list("feature_view") == {"stats": {"name": "stats", "entities": ["driver"], "ttl": 3600}}
    assert reg.snapshot() == {
        "entity": {"driver": ENTITY, "customer": {"name": "customer", "join_keys": ["customer_id"]}},
        "feature_view": {"stats": {"name": "stats", "entities": ["driver"], "ttl": 3600}},
    }
    # returned specs are fresh copies: mutating one changes nothing stored
    got = reg.get("entity", "driver")
    got["join_keys"].append("oops")
    assert reg.get("entity", "driver") == ENTITY


def test_one_block_is_one_version_with_a_summary(reg, db_url):
    with reg.write() as tx:
        tx.put("entity", "a", {"v": 1})
        tx.put("entity", "b", {"v": 1})
    with reg.write() as tx:
        tx.put("entity", "a", {"v": 2})
        tx.delete("entity", "b")
        tx.put("entity", "c", {"v": 1})
    assert tx.new_version == 2 and reg.version() == 2
    assert tx.changes == [
        {"kind": "entity", "name": "a", "action": "update"},
        {"kind": "entity", "name": "b", "action": "delete"},
        {"kind": "entity", "name": "c", "action": "create"},
    ]
    engine = create_registry_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(tables.registry_versions.c.version, tables.registry_versions.c.summary,
                                   tables.registry_versions.c.applied_at)
                            .where(tables.registry_versions.c.project == "proj")
                            .order_by(tables.registry_versions.c.version)).all()
    engine.dispose()
    assert [r.version for r in rows] == [1, 2]
    assert json.loads(rows[1].summary) == tx.changes
    assert all(r.applied_at.tzinfo is not None and r.applied_at.utcoffset().total_seconds() == 0 for r in rows)


def test_noop_put_does_not_bump_version(reg):
    with reg.write() as tx:
        tx.put("entity", "driver", ENTITY)
    # same content, different key order and a tuple instead of a list: canonically equal
    reordered = {"join_keys": ("driver_id",), "description": "a driver", "name": "driver"}
    with reg.write() as tx:
        tx.put("entity", "driver", reordered)
    assert tx.changed is False
    assert tx.new_version == 1
    assert reg.version() == 1
    assert [v.version for v in reg.history("entity", "driver")] == [1]
    # an empty block does nothing either
    with reg.write() as tx:
        pass
    assert tx.changed is False and reg.version() == 1


def test_put_then_revert_in_one_block_is_no_change(reg):
    with reg.write() as tx:
        tx.put("entity", "driver", ENTITY)
    with reg.write() as tx:
        tx.put("entity", "driver", {"name": "driver", "join_keys": ["x"]})
        tx.put("entity", "driver", ENTITY)
        tx.put("entity", "temp", {"x": 1})
        tx.delete("entity", "temp")
    assert tx.changed is False and reg.version() == 1
    assert reg.history("entity", "temp") == []


def test_update_bumps_object_version_and_history(reg):
    for ttl in (60, 120, 180):
        with reg.write() as tx:
            tx.put("feature_view", "fv", {"name": "fv", "ttl": ttl})
    with reg.write() as tx:
        tx.put("entity", "other", {"name": "other"})
    with reg.write() as tx:
        tx.put("feature_view", "fv", {"name": "fv", "ttl": 240})
    history = reg.history("feature_view", "fv")
    assert [h.version for h in history] == [1, 2, 3, 4]
    assert [h.registry_version for h in history] == [1, 2, 3, 5]
    assert [h.spec["ttl"] for h in history] == [60, 120, 180, 240]
    assert not any(h.deleted for h in history)
    for h in history:
        assert h.applied_at.tzinfo is not None
        assert h.applied_at.utcoffset().total_seconds() == 0
        assert h.applied_at.astimezone(timezone.utc) == h.applied_at
    assert history[0].applied_at <= history[-1].applied_at


def test_delete_is_recorded_in_history(reg):
    with reg.write() as tx:
        tx.put("entity", "driver", ENTITY)
    with reg.write() as tx:
        tx.delete("entity", "driver")
    assert tx.changed and reg.version() == 2
    assert reg.get("entity", "driver") is None
    assert reg.snapshot() == {}
    history = reg.history("entity", "driver")
    assert [(h.version, h.registry_version, h.deleted) for h in history] == [(1, 1, False), (2, 2, True)]
    assert history[1].spec is None and history[0].spec == ENTITY
    # deleting again: not found, and nothing changes
    with pytest.raises(RegistryObjectNotFound) as err:
        with reg.write() as tx:
            tx.delete("entity", "driver")
    assert isinstance(err.value, NotFoundError)
    assert reg.version() == 2
    # re-creating continues the object's numbering
    with reg.write() as tx:
        tx.put("entity", "driver", ENTITY)
    assert [h.version for h in reg.history("entity", "driver")] == [1, 2, 3]
    assert reg.version() == 3


def test_exception_rolls_back_everything(reg):
    with reg.write() as tx:
        tx.put("entity", "keep", {"v": 1})
        tx.set_state("watermark", "fv", "2024-01-01")
    before = (reg.version(), reg.snapshot(), reg.history("entity", "keep"))

    with pytest.raises(Boom):
        with reg.write() as tx:
            tx.put("entity", "keep", {"v": 2})
            tx.put("entity", "new", {"v": 1})
            tx.set_state("watermark", "fv", "2025-01-01")
            tx.set_state("watermark", "other", "x")
            assert tx.get("entity", "new") == {"v": 1}  # visible inside the block only
            raise Boom()
    assert (reg.version(), reg.snapshot(), reg.history("entity", "keep")) == before
    assert reg.history("entity", "new") == []
    assert reg.get_state("watermark", "fv") == "2024-01-01"
    assert reg.get_state("watermark", "other") is None
    with pytest.raises(RegistryUsageError):
        tx.changed  # noqa: B018 - the block did not commit

    # a failing delete in the middle of a block also rolls back the puts before it
    with pytest.raises(RegistryObjectNotFound):
        with reg.write() as tx:
            tx.put("entity", "new", {"v": 1})
            tx.delete("feature_view", "missing")
    assert reg.get("entity", "new") is None and reg.version() == before[0]


def test_reads_inside_the_block_see_its_own_writes(reg):
    with reg.write() as tx:
        tx.put("entity", "a", {"v": 1})
        tx.put("entity", "b", {"v": 1})
    with reg.write() as tx:
        assert tx.version() == 1
        tx.put("entity", "c", {"v": 1})
        tx.delete("entity", "a")
        tx.put("feature_view", "fv", {"v": 1})
        assert tx.snapshot() == {"entity": {"b": {"v": 1}, "c": {"v": 1}}, "feature_view": {"fv": {"v": 1}}}
        assert tx.list("entity") == {"b": {"v": 1}, "c": {"v": 1}}
        assert tx.get("entity", "a") is None
        with pytest.raises(RegistryObjectNotFound):
            tx.delete("entity", "a")
        tx.set_state("s", "k", "v")
        assert tx.get_state("s", "k") == "v"
    assert reg.snapshot() == {"entity": {"b": {"v": 1}, "c": {"v": 1}}, "feature_view": {"fv": {"v": 1}}}
    with pytest.raises(RegistryUsageError):
        tx.get("entity", "b")  # the transaction is over


def test_state_is_per_project_and_does_not_bump_version(reg, db_url):
    with reg.write() as tx:
        tx.set_state("watermark", "fv", "2024-01-01T00:00:00+00:00")
    assert tx.changed is False and reg.version() == 0
    assert reg.get_state("watermark", "fv") == "2024-01-01T00:00:00+00:00"
    with reg.write() as tx:
        tx.set_state("watermark", "fv", "2024-02-01T00:00:00+00:00")
    assert reg.get_state("watermark", "fv") == "2024-02-01T00:00:00+00:00"
    with Registry(db_url, "other") as other:
        assert other.get_state("watermark", "fv") is None


def test_states_reads_every_key_of_a_scope_of_this_project(reg, db_url):
    with reg.write() as tx:
        tx.set_state("coverage", "a", "[1]")
        tx.set_state("coverage", "b", "[2]")
        tx.set_state("other", "a", "x")
    with Registry(db_url, "other") as other, other.write() as tx:
        tx.set_state("coverage", "c", "[3]")
    assert reg.states("coverage") == {"a": "[1]", "b": "[2]"}
    assert reg.states("nothing") == {}


def test_projects_are_isolated(reg, db_url):
    with Registry(db_url, "other") as other:
        with other.write() as tx:
            tx.put("entity", "driver", {"name": "other driver"})
            tx.put("entity", "x", {})
        with reg.write() as tx:
            tx.put("entity", "driver", ENTITY)
        assert other.version() == 1 and reg.version() == 1
        assert other.get("entity", "driver") == {"name": "other driver"}
        assert reg.list("entity") == {"driver": ENTITY}
        assert [h.spec for h in other.history("entity", "driver")] == [{"name": "other driver"}]


def test_consistent_read(reg):
    with reg.write() as tx:
        tx.put("entity", "a", {"v": 1})
    with reg.read() as r:
        assert (r.version(), r.snapshot()) == (1, {"entity": {"a": {"v": 1}}})


def test_invalid_input(reg):
    with reg.write() as tx:
        with pytest.raises(InvalidInputError):
            tx.put("entity", "x", {"when": object()})
        with pytest.raises(InvalidInputError):
            tx.put("entity", "x", {"v": float("nan")})
        with pytest.raises(InvalidInputError):
            tx.put("entity", "", {})
        with pytest.raises(InvalidInputError):
            tx.put("entity", "x", ["not", "a", "dict"])
        with pytest.raises(InvalidInputError):
            tx.set_state("s", "k", 5)
    assert tx.changed is False and reg.version() == 0


def test_nested_write_is_refused(reg):
    with reg.write() as tx:
        tx.put("entity", "a", {})
        with pytest.raises(RegistryUsageError):
            with reg.write():
                pass
    assert reg.get("entity", "a") == {}
    with pytest.raises(RegistryUsageError):
        with reg.write() as tx:
            tx.changed  # noqa: B018 - only known after the block


def test_second_writer_waits_and_sees_the_first_writers_commit(reg, db_url):
    with reg.write() as tx:
        tx.put("counter", "c", {"n": 0})
    holding = threading.Event()
    waited: dict[str, float] = {}
    errors: list[BaseException] = []

    def second():
        try:
            holding.wait(10)
            with Registry(db_url, "proj") as other:
                start = time.monotonic()
                with other.write() as tx2:
                    waited["seconds"] = time.monotonic() - start
                    n = tx2.get("counter", "c")["n"]
                    tx2.put("counter", "c", {"n": n + 1})
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    with reg.write() as tx:
        n = tx.get("counter", "c")["n"]
        holding.set()
        time.sleep(0.5)  # the other writer is blocked on the lock meanwhile
        tx.put("counter", "c", {"n": n + 1})
    thread.join(30)
    assert not errors, errors
    assert waited["seconds"] >= 0.3
    assert reg.get("counter", "c") == {"n": 2}
    assert reg.version() == 3


def test_readers_are_not_blocked_by_a_writer(reg, db_url):
    with reg.write() as tx:
        tx.put("entity", "a", {"v": 1})
    with Registry(db_url, "proj") as reader:
        with reg.write() as tx:
            tx.put("entity", "a", {"v": 2})
            tx.put("entity", "b", {"v": 2})
            start = time.monotonic()
            assert reader.snapshot() == {"entity": {"a": {"v": 1}}}
            assert reader.version() == 1
            assert time.monotonic() - start < 5
        assert reader.snapshot() == {"entity": {"a": {"v": 2}, "b": {"v": 2}}}


def test_lock_timeout_is_reported(db_url):
    url = db_url
    with Registry(url, "proj") as holder, Registry(url, "proj", lock_timeout=0.2) as impatient:
        result: list[BaseException | None] = []
        with holder.write() as tx:
            tx.put("entity", "a", {})

            def other():
                try:
                    with impatient.write() as tx2:
                        tx2.put("entity", "b", {})
                    result.append(None)
                except BaseException as exc:  # noqa: BLE001
                    result.append(exc)

            thread = threading.Thread(target=other)
            thread.start()
            thread.join(10)
        assert len(result) == 1 and isinstance(result[0], BackendUnavailableError), result
        assert holder.list("entity") == {"a": {}}


def test_in_memory_sqlite_reads_committed_state_inside_a_write():
    with Registry("sqlite://", "proj") as registry:
        with registry.write() as tx:
            tx.put("entity", "a", {"v": 1})
        with registry.write() as tx:
            tx.put("entity", "a", {"v": 2})
            assert registry.get("entity", "a") == {"v": 1}
            assert tx.get("entity", "a") == {"v": 2}
        assert registry.get("entity", "a") == {"v": 2} and registry.version() == 2


def test_sqlite_uses_wal(tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry(url, "proj") as registry:
        with registry.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_bad_url_is_a_config_error():
    with pytest.raises(ConfigError):
        Registry("not a url", "proj")
    with pytest.raises(ConfigError):
        Registry("nosuchdialect://x/y", "proj")


def test_unreachable_database_is_backend_unavailable():
    with pytest.raises(BackendUnavailableError):
        Registry("postgresql+psycopg://nobody:nothing@127.0.0.1:1/none?connect_timeout=2", "proj")


# -- concurrency across processes -----------------------------------------------------------------

WORKERS = 4
WRITES_PER_WORKER = 10


def _concurrent_worker(url: str, worker: int, start, writes: int) -> None:
    registry = Registry(url, "proj")
    try:
        start.wait(60)
        for i in range(writes):
            with registry.write() as tx:
                counter = tx.get("counter", "c") or {"n": 0, "by": {}}
                counter["n"] += 1
                counter["by"][str(worker)] = counter["by"].get(str(worker), 0) + 1
                tx.put("counter", "c", counter)
                tx.put("entity", f"w{worker}-{i}", {"worker": worker, "i": i})
            # a write that changes nothing must not count
            with registry.write() as tx:
                tx.put("entity", f"w{worker}-{i}", {"i": i, "worker": worker})
            assert not tx.changed
    finally:
        registry.close()


def test_concurrent_processes_lose_no_update(db_url):
    Registry(db_url, "proj").close()  # migrate once up front; racing migrations have their own test
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_concurrent_worker, args=(db_url, w, start, WRITES_PER_WORKER))
             for w in range(WORKERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * WORKERS

    total = WORKERS * WRITES_PER_WORKER
    with Registry(db_url, "proj") as registry:
        counter = registry.get("counter", "c")
        assert counter["n"] == total
        assert counter["by"] == {str(w): WRITES_PER_WORKER for w in range(WORKERS)}
        assert len(registry.list("entity")) == total
        assert registry.version() == total
        history = registry.history("counter", "c")
        assert [h.version for h in history] == list(range(1, total + 1))
        assert sorted(h.registry_version for h in history) == list(range(1, total + 1))
        assert [h.spec["n"] for h in history] == list(range(1, total + 1))


# -- migrations -----------------------------------------------------------------------------------


def test_fresh_database_gets_every_migration(db_url):
    with Registry(db_url, "proj") as registry:
        assert applied_migrations(registry.engine) == [m.number for m in MIGRATIONS]
        # opening again applies nothing
        assert upgrade(registry.engine) == []


def test_migrated_schema_matches_schema_module(db_url):
    with Registry(db_url, "proj") as registry:
        insp = inspect(registry.engine)
        for table in tables.metadata.sorted_tables:
            assert insp.has_table(table.name), table.name
            columns = {c["name"]: c for c in insp.get_columns(table.name)}
            assert set(columns) == {c.name for c in table.columns}, table.name
            for col in table.columns:
                assert columns[col.name]["nullable"] == col.nullable, (table.name, col.name)
            pk = insp.get_pk_constraint(table.name)["constrained_columns"]
            assert set(pk) == {c.name for c in table.primary_key.columns}, table.name
            want_indexes = {i.name for i in table.indexes}
            have_indexes = {i["name"] for i in insp.get_indexes(table.name)}
            assert want_indexes <= have_indexes, table.name


def test_older_database_is_upgraded(db_url):
    engine = create_registry_engine(db_url)
    try:
        assert upgrade(engine, target=1) == [1]
        assert applied_migrations(engine) == [1]
        insp = inspect(engine)
        assert insp.has_table("fs_objects") and not insp.has_table("fs_state")
        # data written by a migration-1 era registry
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO fs_projects (project, version, updated_at) "
                              "VALUES ('proj', 1, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO fs_objects (project, kind, name, spec, object_version, "
                              "registry_version, updated_at) VALUES ('proj', 'entity', 'old', "
                              "'{\"name\":\"old\"}', 1, 1, CURRENT_TIMESTAMP)"))
    finally:
        engine.dispose()

    with Registry(db_url, "proj") as registry:
        assert applied_migrations(registry.engine) == list(range(1, LATEST + 1))
        assert registry.version() == 1
        assert registry.get("entity", "old") == {"name": "old"}
        with registry.write() as tx:
            tx.set_state("watermark", "fv", "x")  # table from migration 2
            tx.put("entity", "new", {"name": "new"})
        assert registry.get_state("watermark", "fv") == "x"
        assert registry.version() == 2
        assert any(i["name"] == "ix_fs_object_versions_registry_version"
                   for i in inspect(registry.engine).get_indexes("fs_object_versions"))


def test_newer_schema_is_refused(db_url):
    Registry(db_url, "proj").close()
    engine = create_registry_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO fs_schema_migrations (version, name, applied_at) "
                              f"VALUES ({LATEST + 1}, 'from the future', CURRENT_TIMESTAMP)"))
    finally:
        engine.dispose()
    with pytest.raises(RegistrySchemaTooNewError):
        Registry(db_url, "proj")


def _open_registry(url: str, start) -> None:
    start.wait(60)
    Registry(url, "proj").close()


def test_concurrent_first_open_migrates_once(db_url):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_open_registry, args=(db_url, start)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    engine = create_registry_engine(db_url)
    try:
        assert applied_migrations(engine) == list(range(1, LATEST + 1))
    finally:
        engine.dispose()


# -- a model-based check (SQLite in memory) ---------------------------------------------------------

_names = st.sampled_from(["a", "b", "c"])
_specs = st.fixed_dictionaries({"v": st.integers(0, 2)})
_op = st.one_of(
    st.tuples(st.just("put"), _names, _specs),
    st.tuples(st.just("delete"), _names, st.none()),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.lists(st.tuples(st.lists(_op, max_size=4), st.booleans()), max_size=6))
def test_matches_a_dict_model(blocks):
    registry = Registry("sqlite://", "proj")
    model: dict[str, dict] = {}
    version = 0
    versions_of: dict[str, int] = {}
    try:
        for ops, fail in blocks:
            staged = dict(model)
            try:
                with registry.write() as tx:
                    for action, name, spec in ops:
                        if action == "put":
                            tx.put("entity", name, spec)
                            staged[name] = spec
                        elif name in staged:
                            tx.delete("entity", name)
                            del staged[name]
                        else:
                            with pytest.raises(RegistryObjectNotFound):
                                tx.delete("entity", name)
                    if fail:
                        raise Boom()
            except Boom:
                continue
            touched = {n for n in set(model) | set(staged) if model.get(n) != staged.get(n)}
            assert tx.changed == bool(touched)
            if touched:
                version += 1
                for n in touched:
                    versions_of[n] = versions_of.get(n, 0) + 1
            model = staged
            assert registry.version() == version == tx.new_version
            assert registry.snapshot() == ({"entity": model} if model else {})
        for name in ("a", "b", "c"):
            assert len(registry.history("entity", name)) == versions_of.get(name, 0)
    finally:
        registry.close()
