"""The test services answer: PostgreSQL runs queries, Redis stores values, throwaway servers restart,
the Redis Cluster is whole, and throwaway clusters fail over and reshard."""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlsplit

import pytest

from tests.cluster_helpers import CLUSTER_SLOTS, cluster_info, cluster_nodes, command, slot_ranges


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


# ---------------------------------------------------------------- Redis Cluster


@pytest.mark.redis_cluster
def test_ci_redis_cluster_has_three_masters_with_a_replica_each(redis_cluster_url: str) -> None:
    from redis.cluster import RedisCluster

    seed = urlsplit(redis_cluster_url).port
    assert seed is not None
    nodes = cluster_nodes(seed)
    masters = {n["id"]: n for n in nodes if "master" in n["flags"]}
    replicas = [n for n in nodes if "slave" in n["flags"]]
    assert len(nodes) == 6 and len(masters) == 3, nodes
    assert sorted(n["master"] for n in replicas) == sorted(masters), f"not one replica per master: {nodes}"
    assert not any(n["flags"] & {"fail", "fail?"} for n in nodes), nodes
    assert sum(n["slots"] for n in masters.values()) == CLUSTER_SLOTS
    master_ports = {n["port"] for n in masters.values()}
    for node in nodes:
        # Every node, replicas included, is ok and names the same masters for the same slots.
        assert cluster_info(node["port"])["cluster_state"] == "ok", node
        ranges = slot_ranges(node["port"])
        assert ranges == slot_ranges(seed)
        assert {owner for _, _, owner in ranges} == master_ports
        assert sum(last - first + 1 for first, last, _ in ranges) == CLUSTER_SLOTS

    # A cluster client reaches every master through the seed URL.
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < 3:
        key = f"fs-test:{uuid.uuid4().hex}:{i}"
        slot = command(seed, "CLUSTER", "KEYSLOT", key)
        owner = next(owner for first, last, owner in slot_ranges(seed) if first <= slot <= last)
        keys.setdefault(owner, key)
        i += 1
    client = RedisCluster.from_url(redis_cluster_url, socket_timeout=2)
    try:
        for port, key in keys.items():
            client.set(key, str(port), ex=60)
        for port, key in keys.items():
            assert client.get(key) == str(port).encode()
            assert command(port, "GET", key) == str(port)  # stored on the master that owns the slot
    finally:
        for key in keys.values():
            client.delete(key)
        client.close()


def _wait_for(predicate, timeout: float, interval: float = 0.05) -> float:
    """Poll until predicate() is true or timeout; return the seconds waited (past timeout if not)."""
    t0 = time.monotonic()
    while not predicate() and time.monotonic() - t0 <= timeout:
        time.sleep(interval)
    return time.monotonic() - t0


@pytest.mark.redis_cluster
def test_throwaway_cluster_promotes_the_replica_of_a_killed_master(redis_cluster_factory) -> None:
    cluster = redis_cluster_factory()
    master = cluster.masters()[0]
    replica = cluster.replica_of(master)
    assert replica is not None, f"master {master} has no replica"
    owned = [(first, last) for first, last, owner in slot_ranges(master) if owner == master]
    slots = sum(last - first + 1 for first, last in owned)

    cluster.kill(master)
    promoted_in = _wait_for(lambda: cluster.role(replica)[0] == "master", timeout=20)
    assert cluster.role(replica)[0] == "master", (
        f"replica {replica} of killed master {master} not promoted after {promoted_in:.1f}s "
        f"(node timeout {cluster.node_timeout_ms} ms)"
    )
    ok_in = promoted_in + cluster.wait_ok(timeout=15)
    assert replica in cluster.masters() and len(cluster.masters()) == 3
    assert cluster.slot_owner(owned[0][0]) == replica
    assert cluster.slot_counts()[replica] == slots, (
        f"promoted after {promoted_in:.1f}s, cluster ok after {ok_in:.1f}s, but the slots did not follow"
    )

    # The killed master comes back as a replica of the node that took its place.
    cluster.restart(master)
    rejoined_in = _wait_for(lambda: cluster.role(master) == ("slave", replica), timeout=15)
    assert cluster.role(master) == ("slave", replica), (
        f"restarted {master} not a replica after {rejoined_in:.1f}s"
    )
    cluster.wait_ok(timeout=15)
    assert cluster.replica_of(replica) == master


@pytest.mark.redis_cluster
def test_throwaway_cluster_reshard_moves_slots_under_load(redis_cluster_factory) -> None:
    from redis.cluster import RedisCluster

    cluster = redis_cluster_factory()
    src, dst, other = sorted(cluster.masters())
    before = cluster.slot_counts()
    assert sum(before.values()) == CLUSTER_SLOTS
    client = RedisCluster.from_url(cluster.url, socket_timeout=5)
    try:
        keys = [f"key:{i}" for i in range(300)]
        client.mset_nonatomic({k: k for k in keys})

        moved = 100
        proc = cluster.reshard(src, dst, moved)
        reads = 0
        while proc.poll() is None:  # reads go on while keys migrate (MOVED/ASK redirections)
            for key in keys[::10]:
                assert client.get(key) == key.encode()
                reads += 1
        assert proc.returncode == 0, cluster.reshard_output(proc)
        cluster.wait_ok(timeout=15)
        after = cluster.slot_counts()
        expected = {src: before[src] - moved, dst: before[dst] + moved, other: before[other]}
        assert after == expected, f"before {before}, after {after} ({reads} reads during the reshard)"
        assert reads > 0
        # Every live node sees the same counts (wait_ok checked they agree; check one replica too).
        assert cluster.slot_counts(via=cluster.replica_of(other)) == after

        # The blocking form moves some back.
        cluster.reshard_and_wait(dst, src, 40)
        final = cluster.slot_counts()
        expected = {src: after[src] + 40, dst: after[dst] - 40, other: after[other]}
        assert final == expected, f"after the first reshard {after}, after moving 40 back {final}"
        assert client.mget_nonatomic(keys) == [k.encode() for k in keys]
    finally:
        client.close()
