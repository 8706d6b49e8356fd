"""The test services answer: PostgreSQL runs queries, Redis stores values, throwaway servers restart."""

from __future__ import annotations

import uuid

import pytest


@pytest.mark.postgres
def test_postgres_answers_a_query(postgres_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1 + 1")).scalar_one() == 2
            version = conn.execute(text("SHOW server_version_num")).scalar_one()
            assert int(version) >= 130000
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_fresh_postgres_db_is_isolated_and_dropped(postgres_url: str, fresh_postgres_db: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(fresh_postgres_db).database
    assert name and name != make_url(postgres_url).database

    engine = create_engine(fresh_postgres_db)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar_one() == name
            conn.execute(text("CREATE TABLE t (k int PRIMARY KEY, v text)"))
            conn.execute(text("INSERT INTO t VALUES (1, 'one')"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT v FROM t WHERE k = 1")).scalar_one() == "one"
    finally:
        engine.dispose()


@pytest.mark.redis
def test_redis_set_get(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    key = f"fs-test:{uuid.uuid4().hex}"
    try:
        assert client.ping()
        client.set(key, b"value", ex=60)
        assert client.get(key) == b"value"
    finally:
        client.delete(key)
        client.close()


@pytest.mark.redis
def test_redis_server_factory_stop_and_restart(redis_server_factory) -> None:
    import redis

    server = redis_server_factory()
    client = redis.Redis.from_url(server.url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.set("k", "before")
        assert client.get("k") == b"before"

        server.stop()
        assert not server.running
        with pytest.raises(redis.ConnectionError):
            client.ping()

        server.start()
        assert server.running
        # No persistence: a restarted server comes back empty, on the same port.
        assert client.get("k") is None
        client.set("k", "after")
        assert client.get("k") == b"after"
    finally:
        client.close()


@pytest.mark.redis
def test_redis_server_factory_servers_are_independent(redis_server_factory) -> None:
    import redis

    a, b = redis_server_factory(), redis_server_factory()
    assert a.port != b.port
    ca, cb = redis.Redis.from_url(a.url), redis.Redis.from_url(b.url)
    try:
        ca.set("k", "a")
        assert cb.get("k") is None
        a.kill()
        assert cb.ping()
    finally:
        ca.close()
        cb.close()
