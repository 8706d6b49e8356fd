"""The Redis online store on a cluster whose topology changes under load: a reshard of a third of the
slots while writers and readers run, a master killed with SIGKILL under REST lookups and writes, and
lookups served by replicas (``read_from_replicas``), one of which dies.

Each test runs its own throwaway six-node cluster (``redis_cluster_factory``) and abuses it for real.

The oracle: writers take, per key, increasing sequence numbers ``seq`` and write the row ``x = key *
1_000_000 + seq``, ``s = "key/seq"`` with event time ``BASE + seq`` seconds, so any value read says
which write it came from. A write is acknowledged when ``write()`` returned; the oracle keeps per key
the highest ``seq`` handed out (``issued``) and the highest acknowledged (``acked``). A read of a key
must give a row some writer wrote for that key (``1 <= seq <= issued``, all three fields agreeing),
never older than what was acknowledged before the read started; once the writers stop, every key
must read exactly its newest acknowledged row.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import threading
import time
from binascii import crc_hqx
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from connectors.online_redis import RedisOnlineStore, RedisOnlineStoreConfig
from featurestore import FeatureStore
from featurestore.errors import BackendUnavailableError
from tests.cluster_helpers import (
    CLUSTER_SLOTS,
    RedisReplyError,
    ThrowawayCluster,
    begin_slot_move,
    cluster_info,
    command,
    command_calls,
    error_counts,
    finish_slot_move,
    listed_replicas,
    slot_ranges,
    wait_replicas_listed,
    wait_replicated,
)
from tests.repo_helpers import write_repo
from tests.serve_helpers import Served, serve

pytestmark = [pytest.mark.redis_cluster, pytest.mark.slow]

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
M = 1_000_000  # x = key * M + seq
VIEW = "kv"
FEATURES = ["x", "s"]
TYPES = {"x": pa.int64(), "s": pa.string()}
TTL = timedelta(days=1)


# ------------------------------------------------------------------------------------------ the oracle
class Oracle:
    """Sequence numbers handed out and acknowledged, per key (ids ``0..n-1``)."""

    def __init__(self, n: int) -> None:
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
        self.base_us = int(self.base.timestamp()) * 1_000_000
        self.lock = threading.Lock()
        self.issued = np.zeros(n, dtype=np.int64)
        self.acked = np.zeros(n, dtype=np.int64)
        self.acked_at = np.zeros(n, dtype=np.float64)  # monotonic time acked[k] was acknowledged

    def issue(self, keys: np.ndarray) -> np.ndarray:
        with self.lock:
            self.issued[keys] += 1
            seqs = self.issued[keys].copy()
        assert seqs.max() < 3600, "event times would pass BASE + 1 h: write less"
        return seqs

    def ack(self, keys: np.ndarray, seqs: np.ndarray, at: float) -> None:
        with self.lock:
            newer = seqs > self.acked[keys]
            self.acked[keys[newer]] = seqs[newer]
            self.acked_at[keys[newer]] = at

    def acked_of(self, keys) -> np.ndarray:
        with self.lock:
            return self.acked[keys].copy()

    def issued_of(self, keys) -> np.ndarray:
        with self.lock:
            return self.issued[keys].copy()

    def rows(self, keys: np.ndarray, seqs: np.ndarray) -> pa.Table:
        return pa.table({
            "id": pa.array(keys, pa.int64()),
            "x": pa.array(keys * M + seqs, pa.int64()),
            "s": pa.array([f"{k}/{q}" for k, q in zip(keys.tolist(), seqs.tolist())], pa.string()),
            "ts": pa.array(self.base_us + seqs * 1_000_000, pa.int64()).cast(TS),
        })

    def check(self, keys: list[int], before: np.ndarray, xs: list, ss: list, times: list) -> list[str]:
        """Problems of one read of ``keys`` (``before``: acked seqs when the read started)."""
        issued = self.issued_of(keys)  # read after the read: whatever it saw was issued by now
        problems = []
        for i, k in enumerate(keys):
            x, s, ts = xs[i], ss[i], times[i]
            if x is None:
                if before[i] > 0 or s is not None or ts is not None:
                    problems.append(f"key {k}: read nothing (s={s!r}, ts={ts}) after seq {before[i]} was acked")
                continue
            seq = x - k * M
            expected_ts = self.base + timedelta(seconds=seq)
            if not 1 <= seq <= issued[i] or s != f"{k}/{seq}" or ts != expected_ts:
                problems.append(f"key {k}: read x={x} s={s!r} ts={ts}: not a row written for it "
                                f"(issued up to seq {issued[i]})")
            elif seq < before[i]:
                problems.append(f"key {k}: read seq {seq}, older than seq {before[i]} acked before the read")
        return problems


def _slot_of(key: int) -> int:
    """The slot of an entity id's rows, computed independently of the product: the store's cluster keys
    carry the encoded entity key ``i<digits>:<decimal>`` as their hash tag."""
    return crc_hqx(b"i%d:%d" % (len(str(key)), key), 0) & (CLUSTER_SLOTS - 1)


def _owners(port: int) -> np.ndarray:
    owner = np.full(CLUSTER_SLOTS, -1, dtype=np.int64)
    for first, last, master in slot_ranges(port):
        owner[first:last + 1] = master
    return owner


def _check_key_layout(cluster: ThrowawayCluster, prefix: str, project: str, keys: list[int]) -> None:
    """Our slot formula is the cluster's: the stored key of each of ``keys`` hashes where we think."""
    for k in keys:
        name = f"{prefix}:{project}:{VIEW}:{{i{len(str(k))}:{k}}}"
        assert command(cluster.live_ports()[0], "CLUSTER", "KEYSLOT", name) == _slot_of(k)
        owner = cluster.slot_owner(_slot_of(k))
        assert command(owner, "EXISTS", name) == 1, f"{name} not on {owner}, the master of its slot"


def _store(cluster: ThrowawayCluster, repo: Path, project: str, **options) -> RedisOnlineStore:
    config = RedisOnlineStoreConfig(url=cluster.url, cluster=True, **options)
    return RedisOnlineStore(config, repo, project)


def _write(store: RedisOnlineStore, oracle: Oracle, keys: np.ndarray) -> None:
    seqs = oracle.issue(keys)
    result = store.write(VIEW, ["id"], oracle.rows(keys, seqs), event_ts_column="ts", ttl=TTL)
    assert result.written + result.skipped_stale == len(keys), result
    oracle.ack(keys, seqs, time.monotonic())


def _read(store: RedisOnlineStore, keys: list[int]):
    return store.read(VIEW, ["id"], [(k,) for k in keys], FEATURES, TYPES)


def _final_mismatches(oracle: Oracle, keys: list[int], xs: list) -> list[tuple[int, int, int]]:
    """(key, seq read, seq acked) of every key not reading its newest acknowledged row."""
    acked = oracle.acked_of(keys)
    seen = [0 if x is None else x - k * M for k, x in zip(keys, xs)]
    return [(k, s, int(a)) for k, s, a in zip(keys, seen, acked) if s != a]


# ------------------------------------------------------------------------------------------ load
@dataclass
class Load:
    """Threads writing and reading through one store until ``stop``; what they did, with times."""

    store: RedisOnlineStore
    oracle: Oracle
    n: int
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    writes: list = field(default_factory=list)  # (t0, t1, keys) of acknowledged writes
    reads: list = field(default_factory=list)  # (t0, t1, keys, "sync"|"async")
    write_errors: list = field(default_factory=list)  # (t, repr)
    read_errors: list = field(default_factory=list)  # (t, repr)
    problems: list = field(default_factory=list)  # (t, text)
    sizes: list = field(default_factory=list)  # rows per write

    def writer(self, seed: int, bulk_rows: int) -> None:
        rng = np.random.default_rng(seed)
        while not self.stop.is_set():
            size = int(rng.integers(bulk_rows, 3 * bulk_rows)) if rng.random() < 0.3 else int(rng.integers(1, 50))
            keys = rng.choice(self.n, size, replace=False)
            t0 = time.monotonic()
            try:
                _write(self.store, self.oracle, keys)
            except Exception as exc:  # noqa: BLE001 - every failure is recorded and asserted on
                with self.lock:
                    self.write_errors.append((time.monotonic(), repr(exc)[:300]))
                continue
            with self.lock:
                self.writes.append((t0, time.monotonic(), keys))
                self.sizes.append(size)
            time.sleep(0.005)  # leave Redis some CPU for the reshard on a small machine

    def _record(self, t0: float, keys: list[int], before: np.ndarray, result, kind: str) -> None:
        problems = self.oracle.check(keys, before, result.values["x"], result.values["s"],
                                     list(result.event_timestamps))
        if result.invalid:
            problems.append(f"invalid rows: {result.invalid}")
        with self.lock:
            self.reads.append((t0, time.monotonic(), keys, kind))
            self.problems += [(t0, p) for p in problems]

    def sync_reader(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            keys = rng.sample(range(self.n), 64)
            before = self.oracle.acked_of(keys)
            t0 = time.monotonic()
            try:
                result = _read(self.store, keys)
            except Exception as exc:  # noqa: BLE001
                with self.lock:
                    self.read_errors.append((time.monotonic(), repr(exc)[:300]))
                continue
            self._record(t0, keys, before, result, "sync")

    def async_reader(self, seed: int, tasks: int = 3) -> None:
        async def one(rng: random.Random) -> None:
            while not self.stop.is_set():
                first, second = rng.sample(range(self.n), 40), rng.sample(range(self.n), 24)
                before = self.oracle.acked_of(first + second)
                t0 = time.monotonic()
                try:
                    results = await self.store.read_many_async(
                        [(VIEW, ["id"], [(k,) for k in keys], FEATURES, TYPES) for keys in (first, second)])
                except Exception as exc:  # noqa: BLE001
                    with self.lock:
                        self.read_errors.append((time.monotonic(), repr(exc)[:300]))
                    await asyncio.sleep(0.01)
                    continue
                self._record(t0, first, before[:40], results[0], "async")
                self._record(t0, second, before[40:], results[1], "async")

        async def main() -> None:
            await asyncio.gather(*(one(random.Random(seed * 100 + i)) for i in range(tasks)))

        asyncio.run(main())


def _run_threads(targets: list) -> list[threading.Thread]:
    threads = [threading.Thread(target=fn, args=args, daemon=True) for fn, *args in targets]
    for t in threads:
        t.start()
    return threads


# ------------------------------------------------------------------------------------------ 1. reshard
RESHARD_KEYS = 20_000
RESHARD_SLOTS = 5461  # a third of 16384
BULK_ROWS = 200


def test_reshard_of_a_third_of_the_slots_under_load_loses_nothing(redis_cluster_factory, tmp_path):
    cluster = redis_cluster_factory()
    store = _store(cluster, tmp_path, "topo", key_prefix="rs", bulk_absent_min_rows=BULK_ROWS)
    try:
        oracle = Oracle(RESHARD_KEYS)
        _write(store, oracle, np.arange(RESHARD_KEYS))  # every key has a row: reads check values from the start
        _check_key_layout(cluster, "rs", "topo", [0, 7, 4242, RESHARD_KEYS - 1])

        counts = cluster.slot_counts()
        src = max(counts, key=lambda port: (counts[port], port))  # keeps a slot: stays a master
        dst = min(p for p in counts if p != src)
        owner_before = _owners(src)

        load = Load(store, oracle, RESHARD_KEYS)
        threads = _run_threads([(load.writer, i, BULK_ROWS) for i in range(2)]
                               + [(load.sync_reader, 10 + i) for i in range(2)] + [(load.async_reader, 20)])
        try:
            time.sleep(1.0)  # load before the reshard
            for port in cluster.live_ports():
                command(port, "CONFIG", "RESETSTAT")
            t_start = time.monotonic()
            proc = cluster.reshard(src, dst, RESHARD_SLOTS)
            while proc.poll() is None and time.monotonic() - t_start < 70:
                time.sleep(0.05)
            t_end = time.monotonic()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            redirects: dict[str, int] = {}
            for port in cluster.live_ports():
                for kind, count in error_counts(port).items():
                    redirects[kind] = redirects.get(kind, 0) + count
            time.sleep(0.5)  # load after it too
        finally:
            load.stop.set()
            for t in threads:
                t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a load thread hangs"
        output = cluster.reshard_output(proc)
        assert proc.returncode == 0, f"reshard exited {proc.returncode} after {t_end - t_start:.1f}s:\n{output[-2000:]}"
        cluster.wait_ok(timeout=20)
        after = cluster.slot_counts()
        assert after.get(dst) == counts[dst] + RESHARD_SLOTS and after.get(src, 0) == counts[src] - RESHARD_SLOTS, (
            counts, after)
        moved = owner_before != _owners(dst)
        assert moved.sum() == RESHARD_SLOTS
        key_moved = moved[[_slot_of(k) for k in range(RESHARD_KEYS)]]

        def during(log):
            return [entry for entry in log if entry[1] >= t_start and entry[0] <= t_end]

        w_during, r_during = during(load.writes), during(load.reads)
        rows_during = sum(len(e[2]) for e in w_during)
        moved_rows = sum(int(key_moved[e[2]].sum()) for e in w_during)
        moved_reads = sum(int(key_moved[e[2]].sum()) for e in r_during)
        bulk_writes = sum(1 for e in w_during if len(e[2]) >= BULK_ROWS)
        summary = (f"reshard of {RESHARD_SLOTS} slots {src}->{dst} took {t_end - t_start:.1f}s; during it "
                   f"{len(w_during)} writes acked ({bulk_writes} bulk >= {BULK_ROWS} rows; {rows_during} rows, "
                   f"{moved_rows} in moving slots), {len(r_during)} reads "
                   f"({sum(1 for e in r_during if e[3] == 'async')} async; {sum(len(e[2]) for e in r_during)} keys, "
                   f"{moved_reads} in moving slots); error replies seen by the nodes: {redirects}; "
                   f"in all {len(load.writes)} writes, {len(load.reads)} reads, "
                   f"{len(load.write_errors)} write errors, {len(load.read_errors)} read errors, "
                   f"{len(load.problems)} wrong reads")
        print(summary)
        assert not load.problems, f"{summary}\nwrong reads: {[p for _, p in load.problems[:10]]}"
        assert not load.write_errors, f"{summary}\nfailed writes (rows maybe lost): {load.write_errors[:5]}"
        assert not load.read_errors, f"{summary}\nfailed reads: {load.read_errors[:5]}"
        assert len(w_during) >= 5 and bulk_writes >= 1 and moved_rows > 0, summary
        assert len(r_during) >= 5 and moved_reads > 0, summary
        assert redirects.get("MOVED", 0) > 0, f"no MOVED reply during the reshard: {summary}"

        keys = list(range(RESHARD_KEYS))
        xs = []
        for i in range(0, RESHARD_KEYS, 1000):
            xs += _read(store, keys[i:i + 1000]).values["x"]
        lost = _final_mismatches(oracle, keys, xs)
        assert not lost, f"{len(lost)} keys do not read their newest acked row (key, seq read, seq acked): {lost[:10]}"

        async def read_all():
            reads = [(VIEW, ["id"], [(k,) for k in keys[i:i + 2000]], FEATURES, TYPES)
                     for i in range(0, RESHARD_KEYS, 2000)]
            return [x for r in await store.read_many_async(reads) for x in r.values["x"]]

        lost = _final_mismatches(oracle, keys, asyncio.run(read_all()))
        assert not lost, f"async reads: {len(lost)} keys off the oracle: {lost[:10]}"

        # ASK, for certain: a slot stopped half-way through its move (some keys moved, some not)
        by_slot: dict[int, list[int]] = {}
        for k in range(RESHARD_KEYS):
            by_slot.setdefault(_slot_of(k), []).append(k)
        slot, in_slot = max(by_slot.items(), key=lambda item: len(item[1]))
        assert len(in_slot) >= 3, "no slot holds 3 of the keys"
        owner = cluster.slot_owner(slot)
        target = next(p for p in cluster.masters() if p != owner)
        names = [f"rs:topo:{VIEW}:{{i{len(str(k))}:{k}}}" for k in in_slot]
        begin_slot_move(cluster, slot, owner, target, names[: len(names) // 2])
        for port in (owner, target):
            command(port, "CONFIG", "RESETSTAT")
        others = random.Random(1).sample(range(RESHARD_KEYS), 40)
        mixed = in_slot + others  # keys of many slots: the read script, then key by key for the moved ones
        for what, subset in (("the slot's keys", in_slot), ("the slot's keys among others", mixed)):
            lost = _final_mismatches(oracle, subset, _read(store, subset).values["x"])
            assert not lost, f"slot {slot} half moved, sync read of {what}: {lost}"
            got = asyncio.run(store.read_many_async([(VIEW, ["id"], [(k,) for k in subset], FEATURES, TYPES)]))
            assert not _final_mismatches(oracle, subset, got[0].values["x"]), f"async read of {what}"
        _write(store, oracle, np.array(in_slot))  # small: the upsert script, then key by key
        bulk = np.array(in_slot + [k for k in random.Random(2).sample(range(RESHARD_KEYS), 400) if k not in in_slot])
        _write(store, oracle, bulk)  # >= bulk_absent_min_rows: SET NX first
        lost = _final_mismatches(oracle, mixed, _read(store, mixed).values["x"])
        assert not lost, f"slot {slot} half moved: writes not read back: {lost}"
        asks = error_counts(owner).get("ASK", 0)
        moved_keys = command(target, "CLUSTER", "COUNTKEYSINSLOT", slot)
        print(f"slot {slot} half moved from {owner} to {target}: {asks} ASK replies, {moved_keys} of "
              f"{len(names)} keys on the importing node")
        assert asks > 0, f"the migrating node never answered ASK: {error_counts(owner)}"
        finish_slot_move(cluster, slot, owner, target)
        lost = _final_mismatches(oracle, mixed, _read(store, mixed).values["x"])
        assert not lost, f"slot {slot} moved: {lost}"
        assert command(target, "CLUSTER", "COUNTKEYSINSLOT", slot) == len(names)
        assert command(owner, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    finally:
        store.close()


# ------------------------------------------------------------------------------------------ 2. SIGKILL
KILL_KEYS = 3000
REPO_CODE = """
from datetime import timedelta
from featurestore import Entity, FeatureView, Field, FileSource
from featurestore.types import Int64, String

item = Entity(name="item", join_keys=["id"])
kv = FeatureView(name="kv", entities=[item], ttl=timedelta(days=1),
    source=FileSource(name="kv_src", path="data/kv.parquet", timestamp_field="ts"),
    schema=[Field(name="x", dtype=Int64), Field(name="s", dtype=String)])
"""


class Http:
    """One keep-alive connection to the feature server."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.conn: http.client.HTTPConnection | None = None

    def lookup(self, keys: list[int]) -> tuple[int, dict]:
        body = json.dumps({"features": [f"{VIEW}:x", f"{VIEW}:s"], "entities": {"id": keys}}).encode()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.served.host, self.served.port, timeout=30)
            try:
                self.conn.request("POST", "/get-online-features", body=body,
                                  headers={"content-type": "application/json"})
                response = self.conn.getresponse()
                return response.status, json.loads(response.read())
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _columns(body: dict) -> tuple[list, list, list]:
    names = body["metadata"]["feature_names"]
    x, s = body["results"][names.index("x")], body["results"][names.index("s")]
    times = [None if t is None or status == "NOT_FOUND" else datetime.fromisoformat(t.replace("Z", "+00:00"))
             for t, status in zip(x["event_timestamps"], x["statuses"])]
    return x["values"], s["values"], times


def _rest_read_all(http_: Http, keys: list[int]) -> list:
    xs = []
    for i in range(0, len(keys), 200):
        status, body = http_.lookup(keys[i:i + 200])
        assert status == 200, body
        xs += _columns(body)[0]
    return xs


def test_sigkilled_master_fails_over_under_rest_load(redis_cluster_factory, tmp_path):
    cluster = redis_cluster_factory()
    victim = int(cluster.url.rsplit(":", 1)[1])  # the seed node of the URL: the server must not need it
    if victim not in cluster.masters():
        victim = cluster.masters()[0]
    replica = cluster.replica_of(victim)
    assert replica is not None
    owner = _owners(victim)
    group = {k: ("victim" if owner[_slot_of(k)] == victim else "other") for k in range(KILL_KEYS)}
    victim_keys = [k for k in range(KILL_KEYS) if group[k] == "victim"]
    other_keys = [k for k in range(KILL_KEYS) if group[k] == "other"]

    oracle = Oracle(KILL_KEYS)
    seed_rows = oracle.rows(np.arange(1), np.ones(1, dtype=np.int64)).select(["id", "ts", "x", "s"])
    online = f"{{type: redis, url: '{cluster.url}', cluster: true, key_prefix: fo}}"
    repo = write_repo(tmp_path / "repo", REPO_CODE, online_store=online, tables={"kv": seed_rows})
    fs = FeatureStore(repo)
    fs.apply()
    fs.close()
    writer_store = _store(cluster, repo, "test", key_prefix="fo")
    # a writer that gives up before the promotion: its writes raise, and must not half-count as acked
    impatient = _store(cluster, repo, "test", key_prefix="fo", write_retry_seconds=1.0)
    try:
        _write(writer_store, oracle, np.arange(KILL_KEYS))
        _check_key_layout(cluster, "fo", "test", victim_keys[:2] + other_keys[:2])
        with serve(repo) as served:
            probe = Http(served)
            xs = _rest_read_all(probe, list(range(KILL_KEYS)))
            assert not _final_mismatches(oracle, list(range(KILL_KEYS)), xs)

            stop = threading.Event()
            lock = threading.Lock()
            lookups: list = []  # (t0, t1, group, status, error type or None, problems)
            writes: list = []  # (t0, t1, keys, seqs, outcome, writer seed: 7 is the impatient one)

            def reader(keys_of_group: list[int], name: str, seed: int) -> None:
                rng, conn = random.Random(seed), Http(served)
                try:
                    while not stop.is_set():
                        keys = rng.sample(keys_of_group, 8)
                        before = oracle.acked_of(keys)
                        t0 = time.monotonic()
                        try:
                            status, body = conn.lookup(keys)
                        except (OSError, http.client.HTTPException) as exc:
                            status, body = -1, {"error": {"type": repr(exc)}}
                        t1 = time.monotonic()
                        problems, error = [], None
                        if status == 200:
                            problems = oracle.check(keys, before, *_columns(body))
                        else:
                            err = (body.get("error") or {}) if isinstance(body, dict) else {"type": str(body)[:200]}
                            error = (err.get("type"), str(err.get("message"))[:400])
                        with lock:
                            lookups.append((t0, t1, name, status, error, problems))
                        time.sleep(0.005)
                finally:
                    conn.close()

            def writer(seed: int, store: RedisOnlineStore, pool: list[int]) -> None:
                rng = np.random.default_rng(seed)
                while not stop.is_set():
                    keys = rng.choice(pool, 20, replace=False)
                    seqs = oracle.issue(keys)
                    t0 = time.monotonic()
                    try:
                        store.write(VIEW, ["id"], oracle.rows(keys, seqs), event_ts_column="ts", ttl=TTL)
                        outcome = "acked"
                        oracle.ack(keys, seqs, time.monotonic())
                    except BackendUnavailableError as exc:
                        outcome = f"unavailable: {exc}"[:300]
                    except Exception as exc:  # noqa: BLE001 - anything else is a failure, asserted below
                        outcome = f"ERROR {exc!r}"[:300]
                    with lock:
                        writes.append((t0, time.monotonic(), keys, seqs, outcome, seed))
                    time.sleep(0.01)

            threads = _run_threads([(reader, victim_keys, "victim", 1), (reader, victim_keys, "victim", 2),
                                    (reader, other_keys, "other", 3), (reader, other_keys, "other", 4),
                                    (writer, 5, writer_store, list(range(KILL_KEYS))),
                                    (writer, 6, writer_store, list(range(KILL_KEYS))),
                                    (writer, 7, impatient, victim_keys)])
            t_promoted = None
            # Redis' own view: when a surviving master says cluster_state:fail, and when ok again (with
            # cluster-require-full-coverage yes, Redis' default, a node refuses every slot with CLUSTERDOWN
            # from the moment the dead master is flagged failed until its replica takes its slots).
            witness = next(p for p in cluster.masters() if p != victim)
            state_fail = state_ok = None
            try:
                time.sleep(1.0)
                t_kill = time.monotonic()
                cluster.kill(victim)  # SIGKILL
                while time.monotonic() - t_kill < 30 and (t_promoted is None or state_fail is not None and state_ok is None):
                    try:
                        if t_promoted is None and cluster.role(replica)[0] == "master":
                            t_promoted = time.monotonic()
                        state = cluster_info(witness)["cluster_state"]
                    except (OSError, RedisReplyError):
                        state = "?"
                    if state == "fail" and state_fail is None:
                        state_fail = time.monotonic()
                    elif state == "ok" and state_fail is not None and state_ok is None:
                        state_ok = time.monotonic()
                    time.sleep(0.01)
                assert t_promoted is not None, f"replica {replica} not promoted 30 s after the kill"
                # Load goes on until the victim's keys answered 200 for a second, at least 3 s past the promotion.
                while time.monotonic() - t_promoted < 15:
                    time.sleep(0.1)
                    with lock:
                        last_fail = max((t1 for t0, t1, g, st, *_ in lookups if g == "victim" and st != 200),
                                        default=t_kill)
                        ok_since = [t0 for t0, t1, g, st, *_ in lookups if g == "victim" and st == 200 and t0 > last_fail]
                    if time.monotonic() - t_promoted > 3 and ok_since and time.monotonic() - min(ok_since) > 1:
                        break
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=30)
            assert served.proc.poll() is None, "the server died"

            def rel(t: float) -> float:
                return t - t_kill

            promoted_after = rel(t_promoted)
            victim_log = [e for e in lookups if e[2] == "victim"]
            other_log = [e for e in lookups if e[2] == "other"]
            fails = [e for e in victim_log if e[3] != 200]
            window = rel(max(e[1] for e in fails)) if fails else 0.0
            first_fail = f"{rel(min(e[0] for e in fails)):.3f}s" if fails else "-"
            back = [e for e in victim_log if e[3] == 200 and (not fails or e[0] > max(f[1] for f in fails))]
            recovered_after = rel(min(e[1] for e in back)) - promoted_after if back else None
            other_fails = [e for e in other_log if e[3] != 200]
            # an other-slot lookup Redis itself refused: CLUSTERDOWN while the surviving masters said fail
            refused_span = (state_fail - 0.3, (state_ok or t_promoted) + 0.3) if state_fail else None
            refused = [e for e in other_fails if refused_span and e[3] == 503 and "CLUSTERDOWN" in e[4][1]
                       and e[1] >= refused_span[0] and e[0] <= refused_span[1]]
            acked = [w for w in writes if w[4] == "acked"]
            in_failover = [w for w in writes if w[1] >= t_kill and w[0] <= t_promoted]
            redis_fail = (f"{rel(state_fail):.2f}s to {rel(state_ok or t_promoted):.2f}s" if state_fail else "never")
            summary = (f"master {victim} SIGKILLed; replica {replica} promoted after {promoted_after:.2f}s; the "
                       f"surviving masters said cluster_state:fail from {redis_fail} after the kill; victim-slot "
                       f"lookups failed from {first_fail} to {window:.2f}s after the kill (window {window:.2f}s; "
                       f"{len(fails)} of {len(victim_log)} victim lookups failed), 200 again "
                       f"{'never' if recovered_after is None else f'{recovered_after:.2f}s'} after the promotion; "
                       f"other-slot lookups: {len(other_fails)} of {len(other_log)} failed, {len(refused)} of them "
                       f"CLUSTERDOWN while Redis said fail; writes: {len(acked)} acked of {len(writes)} "
                       f"({len(in_failover)} spanning the failover, the longest {max(w[1] - w[0] for w in writes):.2f}s)")
            print(summary)

            # (a) a lookup answers right (200) or 503 BackendUnavailableError: never 500, never a wrong value
            bad = [e for e in lookups if e[3] not in (200, 503) or (e[3] == 503 and e[4][0] != "BackendUnavailableError")]
            assert not bad, f"{summary}\nanswers other than 200 or 503 BackendUnavailableError: {bad[:5]}"
            assert all(e[1] >= t_kill for e in fails), f"{summary}\nfailures before the kill: {fails[:3]}"
            # (c) 200 again within 2 s of the promotion, without restarting the server
            late = [round(rel(e[0]), 2) for e in fails if e[0] > t_promoted + 2.0]
            assert not late, f"{summary}\nvictim lookups still failing when started >2 s after the promotion: {late[:10]}"
            assert recovered_after is not None and recovered_after < 2.0, summary
            # (b) the other masters' keys keep answering, except while Redis itself refuses every slot
            unexplained = [(round(rel(e[0]), 3), round(rel(e[1]), 3), e[3], e[4]) for e in other_fails if e not in refused]
            assert not unexplained, f"{summary}\nother-slot lookups failed (start, end, status, error): {unexplained[:5]}"

            # writes: nothing but BackendUnavailableError may fail, and none failed here (retries outlast a failover)
            # writes: a patient writer (write_retry_seconds 30) outlasts the failover; the impatient one (1 s)
            # may raise BackendUnavailableError, nothing else
            errors = [w[4] for w in writes if w[4] != "acked"]
            issued_in = [w for w in writes if t_kill <= w[0] <= t_promoted]
            print(f"writes issued between the kill and the promotion: {len(issued_in)} "
                  f"({sum(w[4] == 'acked' for w in issued_in)} acked, the rest raised); raised in all: {len(errors)}")
            assert not [e for e in errors if not e.startswith("unavailable")], f"{summary}\n{errors[:5]}"
            patient_failed = [w[4] for w in writes if w[5] != 7 and w[4] != "acked"]
            assert not patient_failed, f"{summary}\nwrites with 30 s of retries failed: {patient_failed[:3]}"

            # (d) writes work after the promotion, and read back through the same server
            fresh = np.array(victim_keys[:50] + other_keys[:50])
            _write(writer_store, oracle, fresh)
            xs = _rest_read_all(probe, fresh.tolist())
            assert not _final_mismatches(oracle, fresh.tolist(), xs), f"{summary}\nfresh writes not read back"

            # every acknowledged write is readable; one acked just before the kill may have missed the replica
            keys = list(range(KILL_KEYS))
            mismatches = _final_mismatches(oracle, keys, _rest_read_all(probe, keys))
            acked_at = {k: oracle.acked_at[k] for k, _, _ in mismatches}
            older = [m for m in mismatches if m[1] < m[2]]
            lost_before_kill = [m for m in older if acked_at[m[0]] < t_kill]
            lost_after_kill = [m for m in older if acked_at[m[0]] >= t_kill]
            raised = {(int(k), int(q)) for w in writes if w[4] != "acked" for k, q in zip(w[2], w[3])}
            newer = [m for m in mismatches if m[1] > m[2]]  # rows of writes that raised: allowed, nothing else
            wrong_reads = [p for e in lookups for p in e[5]]
            print(f"{len(lost_before_kill)} acked writes lost to asynchronous replication (acked before the kill, "
                  f"missing on the promoted replica): {lost_before_kill[:10]}; {len(newer)} keys hold rows of "
                  f"writes that raised; {len(errors)} writes raised")
            assert not lost_after_kill, (f"{summary}\nwrites acked after the kill are lost (key, seq read, seq acked): "
                                         f"{lost_after_kill[:10]}")
            lost_keys = {m[0] for m in lost_before_kill}
            unexplained = [p for p in wrong_reads if int(p.split()[1].rstrip(":")) not in lost_keys]
            assert not unexplained, f"{summary}\nwrong lookups: {unexplained[:10]}"
            assert all((k, seen) in raised for k, seen, _ in newer), f"rows newer than acked, not from a raised write: {newer[:5]}"
            probe.close()
    finally:
        writer_store.close()
        impatient.close()


# ------------------------------------------------------------------------------------------ 3. replicas
REPLICA_KEYS = 3000
READ_COMMANDS = ("get", "mget", "eval", "evalsha")  # GETs a script runs count as calls of GET too


def _read_calls(port: int) -> int:
    calls = command_calls(port)
    return sum(calls.get(name, 0) for name in READ_COMMANDS)


def _reset_stats(cluster: ThrowawayCluster) -> None:
    for port in cluster.live_ports():
        command(port, "CONFIG", "RESETSTAT")


def test_read_from_replicas_reads_replicas_and_survives_a_dead_one(redis_cluster_factory, tmp_path):
    cluster = redis_cluster_factory()
    writer = _store(cluster, tmp_path, "topo", key_prefix="rr")
    keys = list(range(REPLICA_KEYS))
    oracle = Oracle(REPLICA_KEYS)
    _write(writer, oracle, np.arange(REPLICA_KEYS))
    # Redis lists a replica in CLUSTER SLOTS once it has reported a replication offset: the reading store
    # starts after that (see the next test for one that starts before).
    listed_in = wait_replicas_listed(cluster)
    store = _store(cluster, tmp_path, "topo", key_prefix="rr", read_from_replicas=True)

    def read_all_sync() -> list:
        xs = []
        for i in range(0, REPLICA_KEYS, 500):  # keys of many slots: the read script per node
            xs += _read(store, keys[i:i + 500]).values["x"]
        return xs

    async def read_all_async() -> tuple[list, list]:
        reads = [(VIEW, ["id"], [(k,) for k in keys[i:i + 300]], FEATURES, TYPES) for i in range(0, REPLICA_KEYS, 300)]
        out = [x for r in await store.read_many_async(reads) for x in r.values["x"]]
        singles = await store.read_many_async([(VIEW, ["id"], [(k,)], FEATURES, TYPES) for k in keys[:30]])
        return out, [x for r in singles for x in r.values["x"]]

    def check_all(what: str) -> None:
        lost = _final_mismatches(oracle, keys, read_all_sync())
        assert not lost, f"{what}, sync: {len(lost)} keys off (key, seq read, seq acked): {lost[:10]}"
        many, singles = asyncio.run(read_all_async())
        lost = _final_mismatches(oracle, keys, many)
        assert not lost, f"{what}, async: {len(lost)} keys off: {lost[:10]}"
        assert not _final_mismatches(oracle, keys[:30], singles), f"{what}: one-key async reads off"
        one = _read(store, [keys[0]]).values["x"]  # one key: one slot, MGET
        assert not _final_mismatches(oracle, keys[:1], one), what

    try:
        masters = cluster.masters()
        replicas = {m: cluster.replica_of(m) for m in masters}
        assert all(replicas.values()), replicas
        waited = wait_replicated(cluster)
        _reset_stats(cluster)
        check_all("after replication caught up")
        master_reads = {m: _read_calls(m) for m in masters}
        replica_reads = {r: _read_calls(r) for r in replicas.values()}
        stats = f"read calls per master {master_reads}, per replica {replica_reads}"
        print(f"replicas listed after {listed_in:.2f}s, replication caught up in {waited:.3f}s; {stats}")
        assert all(n == 0 for n in master_reads.values()), f"masters served reads: {stats}"
        assert all(n > 0 for n in replica_reads.values()), f"a replica served no read: {stats}"
        replica_cmds = {r: command_calls(r) for r in replicas.values()}
        # keys of many slots: the read script on every replica; one key: MGET, on the replica of its slot
        assert all(c.get("eval", 0) > 0 for c in replica_cmds.values()), replica_cmds
        assert sum(c.get("mget", 0) for c in replica_cmds.values()) > 0, replica_cmds

        # new values: right once replication has caught up
        _write(writer, oracle, np.arange(0, REPLICA_KEYS, 3))
        wait_replicated(cluster)
        check_all("after an update, replicated")

        # a replica dies: reads still answer, from its master
        victim_master = masters[0]
        dead = replicas[victim_master]
        _reset_stats(cluster)
        cluster.kill(dead)
        t0 = time.monotonic()
        try:
            check_all(f"right after replica {dead} was killed")
        except BackendUnavailableError as exc:
            pytest.fail(f"reads fail while replica {dead} is down (no fallback to its master {victim_master}): {exc}")
        first_pass = time.monotonic() - t0
        fallback = _read_calls(victim_master)
        others = {r: _read_calls(r) for m, r in replicas.items() if m != victim_master}
        print(f"replica {dead} killed: a full check took {first_pass:.2f}s; its master {victim_master} served "
              f"{fallback} read calls, the other replicas {others}")
        assert fallback > 0, f"master {victim_master} served no read after its replica died"
        assert all(n > 0 for n in others.values()), f"the live replicas stopped serving reads: {others}"
        # once the cluster has flagged the replica failed (CLUSTER SLOTS leaves it out), still right
        deadline = time.monotonic() + 15
        while dead in listed_replicas(victim_master).get(victim_master, []) and time.monotonic() < deadline:
            time.sleep(0.1)
        check_all(f"after replica {dead} was flagged failed")
    finally:
        store.close()
        writer.close()


def test_read_from_replicas_uses_replicas_listed_after_the_store_read_the_map(redis_cluster_factory, tmp_path):
    """A feature server started with a fresh cluster (docker-compose's one-shot init, then the server):
    when the store first reads the slot map, CLUSTER SLOTS lists no replica yet (none has reported a
    replication offset); once it does, lookups must move to the replicas."""
    cluster = redis_cluster_factory()
    store = _store(cluster, tmp_path, "topo", key_prefix="rl", read_from_replicas=True)
    try:
        before = {m: listed_replicas(m).get(m) for m in cluster.masters()}
        oracle = Oracle(500)
        _write(store, oracle, np.arange(500))  # the store reads the map here
        listed_in = wait_replicas_listed(cluster)
        wait_replicated(cluster)
        keys = list(range(500))
        t0 = time.monotonic()
        replica_reads: dict[int, int] = {}
        while time.monotonic() - t0 < 10:
            _reset_stats(cluster)
            assert not _final_mismatches(oracle, keys, _read(store, keys).values["x"])
            replica_reads = {r: _read_calls(r) for m in cluster.masters() for r in cluster.replicas_of(m)}
            if all(replica_reads.values()):
                break
            time.sleep(0.5)
        assert all(replica_reads.values()), (
            f"replicas listed {listed_in:.2f}s after the first write (CLUSTER SLOTS listed {before} when the "
            f"store started), yet {time.monotonic() - t0:.0f}s later lookups still go to the masters: read "
            f"calls per replica {replica_reads}")
    finally:
        store.close()
