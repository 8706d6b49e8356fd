"""The Redis online store on a Redis Cluster: the key layout, one command per node, writes batched per
master, redirects followed during a slot migration, and the settings that only make sense there.

The contract suite (``test_online_stores``) and the serving suites run on the cluster as well; kills
and reshards under load are in ``test_redis_cluster_topology``.
"""

from __future__ import annotations

import asyncio
import pathlib
import uuid
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from connectors.online_redis import RedisOnlineStore, RedisOnlineStoreConfig
from connectors.redis_cluster import key_slot
from featurestore.errors import InvalidInputError
from tests.cluster_helpers import command, slot_ranges

pytestmark = pytest.mark.redis_cluster

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


def _table(ids: list, values: list, seconds: float = 0.0) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "x": pa.array(values, pa.float64()),
                     "ts": pa.array([T0 + timedelta(seconds=seconds)] * len(ids), pa.timestamp("us", "UTC"))})


def _store(url: str, **settings) -> RedisOnlineStore:
    settings.setdefault("key_prefix", f"c{uuid.uuid4().hex[:10]}")
    config = RedisOnlineStoreConfig(url=url, cluster=True, **settings)
    return RedisOnlineStore(config, pathlib.Path("."), "proj")


@pytest.fixture
def cluster_store(redis_cluster_url):
    store = _store(redis_cluster_url)
    yield store
    for view in ("a", "b", "c", "v"):
        store.delete_view(view)
    store.close()


def _masters(url: str) -> list[int]:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    return sorted({owner for _, _, owner in slot_ranges(port)})


def _calls(port: int, *names: str) -> int:
    """How many times ``port`` ran the commands ``names`` since its stats were reset."""
    stats = command(port, "INFO", "commandstats")
    total = 0
    for line in stats.splitlines():
        for name in names:
            if line.startswith(f"cmdstat_{name}:"):
                total += int(line.split("calls=", 1)[1].split(",", 1)[0])
    return total


def _reset_stats(ports: list[int]) -> None:
    for port in ports:
        command(port, "CONFIG", "RESETSTAT")


def test_an_entity_lives_in_one_slot_across_views(cluster_store, redis_cluster_url):
    for view in ("a", "b", "c"):
        cluster_store.write(view, ["id"], _table([1001, 7], [1.0, 2.0]), event_ts_column="ts")
    keys = [f"{cluster_store.config.key_prefix}:proj:{view}:{{i4:1001}}".encode() for view in ("a", "b", "c")]
    assert len({key_slot(k) for k in keys}) == 1
    port = _masters(redis_cluster_url)[0]
    # The node that serves the slot holds the key under exactly this name (MOVED elsewhere).
    owner = [o for lo, hi, o in slot_ranges(port) if lo <= key_slot(keys[0]) <= hi][0]
    assert all(command(owner, "EXISTS", k) == 1 for k in keys)


def test_a_lookup_costs_one_command_per_node(cluster_store, redis_cluster_url):
    ids = list(range(100))
    for view in ("a", "b", "c"):
        cluster_store.write(view, ["id"], _table(ids, [float(i) for i in ids]), event_ts_column="ts")
    masters = _masters(redis_cluster_url)
    reads = [(view, ["id"], [(i,) for i in ids], ["x"], {"x": pa.float64()}) for view in ("a", "b", "c")]
    asyncio.run(cluster_store.read_many_async(reads[:1]))  # the slot map is read before the stats reset
    _reset_stats(masters)
    results = asyncio.run(cluster_store.read_many_async(reads))
    assert [r.values["x"] for r in results] == [[float(i) for i in ids]] * 3
    # 300 keys: one command on each master, the read script (whose MGET per slot inside it count apart:
    # one per distinct slot of the 100 entities, the three views' keys of an entity in it).
    per_node = {port: _calls(port, "eval", "evalsha") for port in masters}
    assert per_node == {port: 1 for port in masters}, per_node
    entity_slots = {key_slot(f"i{len(str(i))}:{i}".encode()) for i in ids}
    assert sum(_calls(port, "mget") for port in masters) == len(entity_slots)
    assert sum(_calls(port, "get") for port in masters) == 0

    # One entity, every view: one slot, so one MGET on one node.
    _reset_stats(masters)
    one = asyncio.run(cluster_store.read_many_async([(v, ["id"], [(42,)], ["x"], {"x": pa.float64()})
                                                     for v in ("a", "b", "c")]))
    assert [r.values["x"] for r in one] == [[42.0]] * 3
    counts = [_calls(port, "mget", "eval", "get", "evalsha") for port in masters]
    assert sorted(counts) == [0, 0, 1], counts
    assert sum(_calls(port, "mget") for port in masters) == 1

    # The blocking read of the SDK takes the same one command per node.
    _reset_stats(masters)
    assert cluster_store.read("a", ["id"], [(i,) for i in ids], ["x"], {"x": pa.float64()}).values["x"] == [
        float(i) for i in ids]
    assert {port: _calls(port, "eval") for port in masters} == {port: 1 for port in masters}


def test_writes_are_batched_per_master_and_spread_evenly(redis_cluster_url):
    store = _store(redis_cluster_url, batch_size=500, bulk_absent_min_rows=10**9)
    masters = _masters(redis_cluster_url)
    try:
        ids = list(range(3000))
        store.write("v", ["id"], _table(ids, [0.0] * 3000), event_ts_column="ts")  # the map is read
        _reset_stats(masters)
        result = store.write("v", ["id"], _table(ids, [1.0] * 3000, seconds=1), event_ts_column="ts")
        assert result.written == 3000
        per_node = {port: _calls(port, "eval") for port in masters}
        rows = {port: _calls(port, "set") for port in masters}
        assert sum(rows.values()) == 3000
        assert min(rows.values()) > 3000 / 3 * 0.8, rows  # spread by slot, about a third each
        for port in masters:  # ceil(rows on the node / batch_size) script calls, one pipeline
            assert per_node[port] == -(-rows[port] // 500), (per_node, rows)
        # Bulk loads go through SET NX on each master, no script calls for new keys.
        bulk = _store(redis_cluster_url, bulk_absent_min_rows=100)
        try:
            _reset_stats(masters)
            assert bulk.write("v", ["id"], _table(ids, [2.0] * 3000), event_ts_column="ts").written == 3000
            assert sum(_calls(port, "eval") for port in masters) == 0
            assert sum(_calls(port, "set") for port in masters) == 3000
        finally:
            bulk.delete_view("v")
            bulk.close()
    finally:
        store.delete_view("v")
        store.close()


def _ids_in_slot(slot: int, count: int) -> list[int]:
    ids, i = [], 0
    while len(ids) < count:
        if key_slot(f"i{len(str(i))}:{i}".encode()) == slot:
            ids.append(i)
        i += 1
    return ids


def test_reads_and_writes_follow_ask_and_moved_during_a_slot_migration(redis_cluster_factory):
    cluster = redis_cluster_factory()
    store = _store(cluster.url, batch_size=4, bulk_absent_min_rows=10**9)
    sync_other = _store(cluster.url, key_prefix=store.config.key_prefix)  # its slot map goes stale
    try:
        slot = 1234
        ids = _ids_in_slot(slot, 8)
        others = list(range(200))  # keys of other slots in the same calls
        store.write("v", ["id"], _table(ids + others, [1.0] * (len(ids) + len(others))), event_ts_column="ts")
        sync_other.read("v", ["id"], [(i,) for i in ids], ["x"], {"x": pa.float64()})  # map read now
        source = cluster.slot_owner(slot)
        target = [m for m in cluster.masters() if m != source][0]
        source_id, target_id = cluster.node_id(source), cluster.node_id(target)
        command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved_keys = [f"{store.config.key_prefix}:proj:v:{{i{len(str(i))}:{i}}}" for i in ids[:4]]
        command(source, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *moved_keys)

        # Half the slot's keys are on the target now: the source answers ASK for them.
        keys = [(i,) for i in ids + others]
        assert store.read("v", ["id"], keys, ["x"], {"x": pa.float64()}).values["x"] == [1.0] * len(keys)
        got = asyncio.run(store.read_many_async([("v", ["id"], keys, ["x"], {"x": pa.float64()})]))
        assert got[0].values["x"] == [1.0] * len(keys)
        # Newer rows for every key of the slot, wherever it is: nothing lost, nothing doubled.
        result = store.write("v", ["id"], _table(ids + others, [2.0] * len(keys), seconds=5), event_ts_column="ts")
        assert result.written == len(keys)
        assert store.read("v", ["id"], keys, ["x"], {"x": pa.float64()}).values["x"] == [2.0] * len(keys)
        # An older row is still refused on both sides of the migration.
        stale = store.write("v", ["id"], _table(ids, [0.5] * len(ids), seconds=1), event_ts_column="ts")
        assert stale.written == 0 and stale.skipped_stale == len(ids)

        # Finish the migration: the slot belongs to the target; a client with the old map gets MOVED.
        rest = [f"{store.config.key_prefix}:proj:v:{{i{len(str(i))}:{i}}}" for i in ids[4:]]
        command(source, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *rest)
        for port in cluster.masters():
            command(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        assert sync_other.read("v", ["id"], [(i,) for i in ids], ["x"], {"x": pa.float64()}).values["x"] == [
            2.0] * len(ids)
        assert sync_other.write("v", ["id"], _table(ids, [3.0] * len(ids), seconds=9),
                                event_ts_column="ts").written == len(ids)
        assert store.read("v", ["id"], [(i,) for i in ids], ["x"], {"x": pa.float64()}).values["x"] == [
            3.0] * len(ids)
    finally:
        store.close()
        sync_other.close()


def test_cluster_settings_are_checked(redis_cluster_url, redis_url):
    with pytest.raises(ValueError, match="read_from_replicas needs cluster: true"):
        RedisOnlineStoreConfig(url=redis_url, read_from_replicas=True)
    with pytest.raises(ValueError, match="no '\\{' or '\\}' on a cluster"):
        RedisOnlineStoreConfig(url=redis_cluster_url, cluster=True, key_prefix="a{b}")
    with pytest.raises(InvalidInputError, match="only database 0"):
        RedisOnlineStore(RedisOnlineStoreConfig(url=redis_cluster_url + "/2", cluster=True), pathlib.Path("."), "p")


def test_a_single_node_config_on_a_cluster_says_to_set_cluster_true(redis_cluster_url):
    store = RedisOnlineStore(RedisOnlineStoreConfig(url=redis_cluster_url, key_prefix="oops"), pathlib.Path("."), "p")
    try:
        with pytest.raises(InvalidInputError, match="set cluster: true"):
            store.write("v", ["id"], _table(list(range(50)), [1.0] * 50), event_ts_column="ts")
        with pytest.raises(InvalidInputError, match="set cluster: true"):
            store.read("v", ["id"], [(i,) for i in range(50)], ["x"], {"x": pa.float64()})
    finally:
        store.close()
