"""The stream job on real parts: the CI Kafka broker, a Flink mini-cluster in ``.venv-flink``, Redis.

- the same events through Kafka -> Flink and through batch materialization give equal online values
  and equal offline rows (a plain view and an aggregation view, both with a filter and a transform);
- killing the job mid-stream and starting it again loses nothing and counts nothing twice;
- malformed and late messages go to the dead-letter topic with the reason, and the job keeps going;
- so do events a view's transform fails on (an integer overflow), where a batch engine would raise;
- the broker going away for a while: the job waits and carries on.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.kafka import KafkaClient, KafkaConfig
from featurestore import FeatureStore
from featurestore.config import RepoConfig
from featurestore.streaming import manager
from tests.repo_helpers import write_repo

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
SPARK = {"type": "spark", "master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2"}}
SCHEMA = pa.schema([("user_id", pa.int64()), ("price", pa.float64()), ("kind", pa.string()), ("ts", TS)])


@pytest.fixture(scope="module")
def flink_ready(flink_python: Path) -> None:
    """The Flink venv exists (the jobs start it themselves)."""


@pytest.fixture(scope="module")
def bootstrap(kafka_bootstrap: str) -> str:
    return kafka_bootstrap


@pytest.fixture
def kafka(bootstrap: str) -> Iterator[KafkaClient]:
    client = KafkaClient(KafkaConfig(bootstrap_servers=bootstrap, timeout_seconds=30))
    yield client
    client.close()


def _redis_db(url: str, db: int) -> str:
    import redis

    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    out = f"{base}/{db}"
    redis.Redis.from_url(out).flushdb()
    return out


FEATURES = """
from datetime import timedelta
from featurestore import Entity, FeatureView, FileSource, KafkaSource, Aggregation, Field, col
from featurestore.types import Float64, String

user = Entity(name="user", join_keys=["user_id"])
history = FileSource(name="clicks_history", path="data/clicks.parquet", timestamp_field="ts")
clicks = KafkaSource(name="clicks", bootstrap_servers="{bootstrap}", topic="{topic}", format="json",
                     timestamp_field="ts", batch_source=history, watermark_delay=timedelta(seconds={delay}),
                     allowed_lateness=timedelta(seconds={lateness}))
windowed = [Aggregation(column="price2", function=f, window=timedelta(minutes=10))
            for f in ("sum", "count", "mean", "min", "max", "last")]
user_clicks = FeatureView(name="user_clicks", entities=[user], source=clicks, ttl=timedelta(days=1),
                          filter=col("kind") != "x", transform=[(col("price") * 2).alias("price2")],
                          aggregations=windowed + [Aggregation(column="price2", function="sum"),
                                                   Aggregation(column="price2", function="count")])
user_last = FeatureView(name="user_last", entities=[user], source=clicks, ttl=timedelta(days=1),
                        filter=col("price") > 0.5,
                        transform=[col("kind").str.upper().alias("kind_upper"), (col("price") + 1).alias("price1")],
                        schema=[Field(name="kind_upper", dtype=String), Field(name="price1", dtype=Float64)])
"""


def _events(n: int, users: int, start: datetime, span: timedelta, seed: int) -> list[dict[str, Any]]:
    """In event-time order; prices are multiples of 1/4, so every sum is exact in any order."""
    rnd = random.Random(seed)
    step = span / n
    out = []
    for i in range(n):
        out.append({"user_id": rnd.randrange(users), "price": rnd.randrange(0, 40) * 0.25,
                    "kind": rnd.choice(["a", "b", "x"]),
                    "ts": start + step * i + timedelta(microseconds=rnd.randrange(1000))})
    return out


def _json(e: dict[str, Any]) -> str:
    return json.dumps({**e, "ts": e["ts"].isoformat()})


FAST_CHECKPOINTS = "{checkpoint_interval_seconds: 1}"


def _applied_repo(tmp_path: Path, code: str, tables: dict[str, pa.Table], redis_url: str,
                  stream_engine: str = FAST_CHECKPOINTS, cluster: bool = False) -> FeatureStore:
    """A repo of ``code`` with its source tables, online store ``redis_url`` (a Redis Cluster when
    ``cluster``) and ``stream_engine``, applied."""
    online = (f"{{type: redis, url: '{redis_url}', cluster: true, key_prefix: 'fs{uuid.uuid4().hex[:10]}'}}"
              if cluster else f"{{type: redis, url: '{redis_url}'}}")
    repo = write_repo(tmp_path, code, tables=tables, online_store=online)
    with open(repo / "featurestore.yaml", "a") as f:
        f.write(f"stream_engine: {stream_engine}\n")
    store = FeatureStore(repo)
    store.apply()
    return store


def _repo(tmp_path: Path, bootstrap: str, topic: str, redis_url: str, history: list[dict], *, delay: float = 5,
          lateness: float = 0, stream_engine: str = FAST_CHECKPOINTS, cluster: bool = False) -> FeatureStore:
    return _applied_repo(tmp_path, FEATURES.format(bootstrap=bootstrap, topic=topic, delay=delay, lateness=lateness),
                         {"clicks": pa.Table.from_pylist(history, schema=SCHEMA)}, redis_url, stream_engine, cluster)


def _start_on(store: FeatureStore, view: str, kafka, topic: str, events: list[dict],
              jobs: list[tuple[FeatureStore, str]]) -> None:
    """Create ``topic``, produce ``events``, start the view's job and wait until it admitted them all."""
    kafka.create_topic(topic)
    kafka.produce(topic, [_json(e) for e in events])
    manager.start(store, view, wait_seconds=0)
    jobs.append((store, view))
    _wait("the first events", lambda: manager.status_of(store, view).counters.get("admitted", 0) == len(events),
          120, jobs)


def _wait(what: str, check: Callable[[], bool], timeout: float, jobs: list[tuple[FeatureStore, str]] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for store, view in jobs:
            st = manager.status_of(store, view)
            assert st.running, f"the stream job of {view} died:\n{st.log}"
        time.sleep(0.5)
    details = "\n".join(str(manager.status_of(s, v)) for s, v in jobs)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{details}")


ALL_FEATURES = {
    "user_clicks": ["price2_sum_10m", "price2_count_10m", "price2_mean_10m", "price2_min_10m", "price2_max_10m",
                    "price2_last_10m", "price2_sum_lifetime", "price2_count_lifetime"],
    "user_last": ["kind_upper", "price1"],
}


def _online(store: FeatureStore, view: str, users: list[int]) -> dict:
    refs = [f"{view}:{f}" for f in ALL_FEATURES[view]]
    return store.get_online_features(features=refs, entity_rows=[{"user_id": u} for u in users]).to_dict()


def _offline(store: FeatureStore, view: str, appended: bool = False) -> list[tuple]:
    table = (store.offline_store.appends if appended else store.offline_store).read(view)
    cols = [c for c in table.column_names if c != "created_timestamp"]
    return sorted(tuple(r[c] for c in cols) for r in table.select(cols).to_pylist())


@pytest.mark.redis_cluster
def test_stream_and_batch_give_the_same_online_values_and_offline_rows(tmp_path, bootstrap, kafka, redis_url,
                                                                        redis_cluster_url, flink_ready, jobs):
    """The stream job writes to a Redis Cluster, the batch engines to one Redis node: same values."""
    topic = f"fs-stream-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    events = _events(1500, 60, now - timedelta(minutes=6), timedelta(minutes=5), seed=11)
    stream = _repo(tmp_path / "stream", bootstrap, topic, redis_cluster_url, events, cluster=True)
    # The batch side, on each batch engine: same repo files, its own registry, offline store and Redis db.
    batches = {}
    for db, engine in ((3, {"type": "local"}), (12, SPARK)):
        cfg = RepoConfig(project="test", registry=f"sqlite:///data/registry_{engine['type']}.db",
                         offline_store={"type": "parquet", "path": f"data/offline_{engine['type']}"},
                         online_store={"type": "redis", "url": _redis_db(redis_url, db)}, engine=engine)
        batches[engine["type"]] = FeatureStore(stream.repo_path, config=cfg)
        batches[engine["type"]].apply()
        batches[engine["type"]].materialize(now - timedelta(hours=1), now)
    kafka.create_topic(topic)
    kafka.produce(topic, [_json(e) for e in events])
    for view in ("user_clicks", "user_last"):
        manager.start(stream, view, wait_seconds=0)
        jobs.append((stream, view))
    users = sorted({e["user_id"] for e in events})
    kept = [e for e in events if e["kind"] != "x"]
    _wait("all offline rows", lambda: set(stream.offline_store.appends.views()) == {"user_clicks", "user_last"}
          and stream.offline_store.appends.read("user_clicks").num_rows == len(kept)
          and stream.offline_store.appends.read("user_last").num_rows == sum(e["price"] > 0.5 for e in events), 180, jobs)
    for view in ("user_clicks", "user_last"):
        for engine, batch in batches.items():
            _wait(f"{view} online values equal to the {engine} engine's",
                  lambda view=view, batch=batch: _online(stream, view, users) == _online(batch, view, users), 60, jobs)
            assert _online(stream, view, users) == _online(batch, view, users), engine
            assert _offline(stream, view, appended=True) == _offline(batch, view), engine
    values = _online(stream, "user_clicks", users)
    assert sum(values["price2_count_lifetime"]) == len(kept)
    assert sum(v is not None for v in values["price2_sum_10m"]) > len(users) // 2  # the windows are live
    _wait("status counters", lambda: manager.status_of(stream, "user_clicks").counters.get("offline_rows")
          == len(kept) and manager.status_of(stream, "user_clicks").counters.get("events") == len(events),
          10)  # each operator writes its counters about once a second
    status = manager.status_of(stream, "user_clicks")
    assert status.running and status.counters["events"] == len(events)
    assert status.counters["admitted"] == len(kept) and status.counters.get("late_events", 0) == 0
    _wait("the consumed offsets checkpointed", lambda: manager.status_of(stream, "user_clicks", lag=True).lag == 0, 30)


def test_killed_job_resumes_from_its_checkpoint_and_counts_every_event_once(tmp_path, bootstrap, kafka,
                                                                            redis_url, flink_ready, jobs):
    topic = f"fs-stream-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    events = _events(4000, 25, now - timedelta(minutes=4), timedelta(minutes=3), seed=5)
    store = _repo(tmp_path, bootstrap, topic, _redis_db(redis_url, 4), events[:1])
    kafka.create_topic(topic)
    first, second = events[:2000], events[2000:]
    kafka.produce(topic, [_json(e) for e in first])
    manager.start(store, "user_clicks", wait_seconds=0)
    jobs.append((store, "user_clicks"))
    _wait("a checkpoint after some events", lambda: manager.status_of(store, "user_clicks").counters.get(
        "offline_rows", 0) > 0 and manager.status_of(store, "user_clicks").last_checkpoint is not None, 120, jobs)

    def produce_slowly():
        for i in range(0, len(second), 100):
            kafka.produce(topic, [_json(e) for e in second[i:i + 100]])
            time.sleep(0.15)

    producer = threading.Thread(target=produce_slowly)
    producer.start()
    time.sleep(1.5)
    pid = manager.status_of(store, "user_clicks").pid
    manager.kill(pid, signal.SIGKILL)  # mid-stream, no chance to flush anything
    producer.join()
    _wait("the killed job to be gone", lambda: not manager.status_of(store, "user_clicks").running, 30)
    status = manager.start(store, "user_clicks", wait_seconds=0)
    assert status.restored_from is not None and "chk-" in status.restored_from

    kept = [e for e in events if e["kind"] != "x"]
    users = sorted({e["user_id"] for e in events})
    want_count = {u: sum(1 for e in kept if e["user_id"] == u) for u in users}
    want_sum = {u: sum(e["price"] * 2 for e in kept if e["user_id"] == u) for u in users}

    def online_totals() -> tuple[dict, dict]:
        values = _online(store, "user_clicks", users)
        return (dict(zip(users, values["price2_count_lifetime"])), dict(zip(users, values["price2_sum_lifetime"])))

    _wait("every event counted", lambda: sum(c or 0 for c in online_totals()[0].values()) >= len(kept), 180,
          [(store, "user_clicks")])
    _wait("every offline row", lambda: store.offline_store.appends.read("user_clicks").num_rows >= len(kept), 60,
          [(store, "user_clicks")])
    time.sleep(3)  # anything counted twice would show up by now
    counts, sums = online_totals()
    assert counts == want_count
    assert sums == want_sum
    offline = store.offline_store.appends.read("user_clicks")
    assert offline.num_rows == len(kept)
    got = sorted((r["user_id"], r["price2"], r["event_timestamp"]) for r in offline.to_pylist())
    assert got == sorted((e["user_id"], e["price"] * 2, e["ts"]) for e in kept)


def test_malformed_and_late_messages_go_to_the_dead_letter_topic(tmp_path, bootstrap, kafka, redis_url,
                                                                 flink_ready, jobs):
    topic = f"fs-stream-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC).replace(microsecond=0)
    on_time = _events(200, 5, now - timedelta(minutes=3), timedelta(minutes=2), seed=3)
    for e in on_time:
        e["kind"] = "a"
    store = _repo(tmp_path, bootstrap, topic, _redis_db(redis_url, 5), on_time, delay=1, lateness=30)
    _start_on(store, "user_clicks", kafka, topic, on_time, jobs)
    time.sleep(1.5)  # a watermark past the first events is out
    newest = max(e["ts"] for e in on_time)
    within = {"user_id": 1, "price": 1.0, "kind": "a", "ts": newest - timedelta(seconds=20)}  # allowed lateness
    too_late = {"user_id": 1, "price": 1.0, "kind": "a", "ts": newest - timedelta(minutes=1)}
    after = {"user_id": 99, "price": 2.0, "kind": "a", "ts": newest + timedelta(seconds=1)}
    kafka.produce(topic, ["{not json", json.dumps({"user_id": 1, "kind": "a", "ts": now.isoformat()}),
                          json.dumps({"user_id": "1", "price": 1, "kind": "a", "ts": now.isoformat()}),
                          _json(within), _json(too_late), _json(after)])
    _wait("the event after the bad ones", lambda: _online(store, "user_clicks", [99])["price2_count_lifetime"] == [1],
          60, jobs)
    dead = kafka.read_topic(f"{topic}.dead-letter", timeout=30)
    reasons = sorted(m.json()["reason"] for m in dead)
    assert len(reasons) == 4, reasons
    assert reasons[0].startswith("bad JSON")
    assert "field 'user_id' should be Int64" in reasons[1]
    assert reasons[2].startswith("late: event time")
    assert reasons[3] == "missing field 'price'"
    assert {m.json()["offset"] for m in dead} >= {200, 201, 202}
    _wait("status counters", lambda: manager.status_of(store, "user_clicks").counters.get("late_events") == 1, 10)
    status = manager.status_of(store, "user_clicks")
    assert status.counters["dead_letters"] == 3 and status.running
    from click.testing import CliRunner

    from featurestore.cli import main

    shown = CliRunner().invoke(main, ["--repo", str(store.repo_path), "stream", "status", "user_clicks"])
    assert shown.exit_code == 0 and f"running (pid {status.pid})" in shown.output
    assert "late_events=1" in shown.output and "dead_letters=3" in shown.output
    _wait("offline rows", lambda: store.offline_store.appends.read("user_clicks").num_rows == 202, 30, jobs)
    offline_times = set(store.offline_store.appends.read("user_clicks").column("event_timestamp").to_pylist())
    assert within["ts"] in offline_times and too_late["ts"] not in offline_times
    stopped = CliRunner().invoke(main, ["--repo", str(store.repo_path), "stream", "stop", "user_clicks"])
    assert stopped.exit_code == 0 and "user_clicks: stopped" in stopped.output
    assert not manager.status_of(store, "user_clicks").running


OVERFLOW_FEATURES = """
from datetime import timedelta
from featurestore import Entity, FeatureView, FileSource, KafkaSource, Field, col
from featurestore.types import Int64
user = Entity(name="user", join_keys=["user_id"])
history = FileSource(name="orders_history", path="data/orders.parquet", timestamp_field="ts")
orders = KafkaSource(name="orders", bootstrap_servers="{bootstrap}", topic="{topic}", format="json",
                     timestamp_field="ts", batch_source=history, watermark_delay=timedelta(seconds=1),
                     allowed_lateness=timedelta(minutes=10))
user_qty = FeatureView(name="user_qty", entities=[user], source=orders, ttl=timedelta(days=1),
                       filter=col("qty") >= 0, transform=[(col("qty") + 1).alias("qty1")],
                       schema=[Field(name="qty1", dtype=Int64)])
"""
ORDERS = pa.schema([("user_id", pa.int64()), ("qty", pa.int64()), ("ts", TS)])


def test_events_a_transform_fails_on_go_to_the_dead_letter_topic_and_the_job_carries_on(
        tmp_path, bootstrap, kafka, redis_url, flink_ready, jobs):
    topic = f"fs-overflow-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC).replace(microsecond=0)
    first = [{"user_id": i % 4, "qty": i, "ts": now - timedelta(seconds=120 - i)} for i in range(40)]
    store = _applied_repo(tmp_path, OVERFLOW_FEATURES.format(bootstrap=bootstrap, topic=topic),
                          {"orders": pa.Table.from_pylist(first, schema=ORDERS)}, _redis_db(redis_url, 8))
    _start_on(store, "user_qty", kafka, topic, first, jobs)
    pid = manager.status_of(store, "user_qty").pid

    def online(users: list[int]) -> list:
        return store.get_online_features(features=["user_qty:qty1"],
                                         entity_rows=[{"user_id": u} for u in users]).to_dict()["qty1"]

    assert online([0, 1, 2, 3]) == [37, 38, 39, 40]
    # user 2's newest event overflows qty + 1: were it applied, its (null) value would be the newest
    bad = {"user_id": 2, "qty": 2**63 - 1, "ts": now}
    after = [{"user_id": 1, "qty": 100, "ts": now + timedelta(seconds=1)},
             {"user_id": 99, "qty": 5, "ts": now + timedelta(seconds=2)}]
    kafka.produce(topic, [_json(bad)] + [_json(e) for e in after])
    _wait("the events after the failing one", lambda: online([1, 99]) == [101, 6], 60, jobs)
    dead = kafka.read_topic(f"{topic}.dead-letter", timeout=30)
    assert len(dead) == 1, [m.json() for m in dead]
    letter = dead[0].json()
    assert letter["reason"] == "transform: integer overflow in +: 9223372036854775807"
    assert (letter["view"], letter["topic"], letter["partition"], letter["offset"]) == ("user_qty", topic, 0, 40)
    assert letter["row"]["user_id"] == 2 and letter["row"]["qty1"] is None
    assert online([2]) == [39]  # not applied online
    _wait("offline rows", lambda: store.offline_store.appends.read("user_qty").num_rows == 42, 30, jobs)
    offline = store.offline_store.appends.read("user_qty").to_pylist()
    assert now not in {r["event_timestamp"] for r in offline}  # nor offline
    assert sorted(r["qty1"] for r in offline) == sorted([e["qty"] + 1 for e in first] + [101, 6])
    _wait("status counters", lambda: manager.status_of(store, "user_qty").counters.get("transform_errors") == 1, 10)
    status = manager.status_of(store, "user_qty")
    assert status.running and status.pid == pid  # the same job, never failed over
    assert status.counters["events"] == 43 and status.counters["admitted"] == 42
    assert status.counters.get("dead_letters", 0) == 0 and status.counters.get("late_events", 0) == 0
    log = (manager.job_dir(store, "user_qty") / "job.log").read_text(errors="replace")
    assert "NumberFormatException" not in log  # no failed attempt either
    from click.testing import CliRunner

    from featurestore.cli import main

    shown = CliRunner().invoke(main, ["--repo", str(store.repo_path), "stream", "status", "user_qty"])
    assert shown.exit_code == 0 and "transform_errors=1" in shown.output, shown.output


CHECKED_FEATURES = """
from datetime import timedelta
from featurestore import Check, Entity, FeatureView, FileSource, KafkaSource, Field, col
from featurestore.types import Float64
user = Entity(name="user", join_keys=["user_id"])
history = FileSource(name="clicks_history", path="data/clicks.parquet", timestamp_field="ts")
clicks = KafkaSource(name="clicks", bootstrap_servers="{bootstrap}", topic="{topic}", format="json",
                     timestamp_field="ts", batch_source=history, watermark_delay=timedelta(seconds=1),
                     allowed_lateness=timedelta(minutes=10))
checked = FeatureView(name="checked", entities=[user], source=clicks, ttl=timedelta(days=1),
    transform=[(col("price") * 2).alias("price2")], schema=[Field(name="price2", dtype=Float64)],
    checks=[Check(col("price") >= 0, name="price_non_negative", on_fail="drop"),
            Check(col("kind").isin(["a", "b"]), name="known_kind", on_fail="warn"),
            Check(col("price2") < 30, name="small", on_fail="fail")])
"""


def test_events_failing_a_drop_or_fail_check_are_dead_lettered_with_the_checks_name(
        tmp_path, bootstrap, kafka, redis_url, flink_ready, jobs):
    from featurestore import quality_runs

    topic = f"fs-checks-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC).replace(microsecond=0)
    rnd = random.Random(11)
    events = [{"user_id": i % 6, "price": rnd.choice([None, -2.0, -0.25, 0.0, 1.5, 14.75, 15.0, 20.0]),
               "kind": rnd.choice([None, "a", "b", "x"]), "ts": now - timedelta(seconds=120 - i)} for i in range(80)]

    def first_failed(e: dict) -> str | None:  # false or null fails a check; drop and fail dead-letter
        if e["price"] is None or e["price"] < 0:
            return "price_non_negative"
        return None if e["price"] * 2 < 30 else "small"

    dropped = {n: first_failed(e) for n, e in enumerate(events) if first_failed(e)}
    warned = [e for n, e in enumerate(events) if n not in dropped and e["kind"] not in ("a", "b")]
    assert {"price_non_negative", "small"} == set(dropped.values()) and warned
    store = _applied_repo(tmp_path, CHECKED_FEATURES.format(bootstrap=bootstrap, topic=topic),
                          {"clicks": pa.Table.from_pylist([], schema=SCHEMA)}, _redis_db(redis_url, 12))
    kafka.create_topic(topic)
    kafka.produce(topic, [_json(e) for e in events])
    manager.start(store, "checked", wait_seconds=0)
    jobs.append((store, "checked"))
    kept = len(events) - len(dropped)
    _wait("the events that pass", lambda: manager.status_of(store, "checked").counters.get("admitted", 0) == kept,
          120, jobs)
    letters = {m.json()["offset"]: m.json() for m in kafka.read_topic(f"{topic}.dead-letter", timeout=30)}
    assert {o: letter["reason"] for o, letter in letters.items()} == {
        n: f"check {name} failed" for n, name in dropped.items()}
    assert all(letter["view"] == "checked" and letter["row"]["user_id"] == events[o]["user_id"]
               for o, letter in letters.items())
    _wait("offline rows", lambda: "checked" in store.offline_store.appends.views()
          and store.offline_store.appends.read("checked").num_rows == kept, 30, jobs)
    assert sorted(r["event_timestamp"] for r in store.offline_store.appends.read("checked").to_pylist()) == sorted(
        e["ts"] for n, e in enumerate(events) if n not in dropped)
    _wait("status counters", lambda: manager.status_of(store, "checked").counters.get("check_dropped") == len(dropped),
          10)
    counters = manager.status_of(store, "checked").counters
    assert counters["check_warned"] == len(warned)
    assert counters["check_failed:known_kind"] == sum(e["kind"] not in ("a", "b") for e in events)
    assert counters.get("dead_letters", 0) == 0 and counters.get("transform_errors", 0) == 0
    _wait("quality records", lambda: sum(r.rows_written for r in quality_runs.runs(store, "checked")) == kept, 30)
    runs = quality_runs.runs(store, "checked")
    assert {r.kind for r in runs} == {"stream"}
    totals = {}
    for r in runs:
        for c in r.checks:
            totals[c["name"]] = totals.get(c["name"], 0) + c["rows_failed"]
    assert totals == {"price_non_negative": sum(v == "price_non_negative" for v in dropped.values()),
                      "known_kind": counters["check_failed:known_kind"],
                      "small": sum(e["price"] is None or e["price"] * 2 >= 30 for e in events)}  # null fails too


def _services(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / ".ci" / "services.sh"), *args], capture_output=True, text=True,
                          timeout=180, cwd=ROOT)


def test_job_waits_out_a_broker_outage(tmp_path, bootstrap, kafka, redis_url, flink_ready, jobs):
    if not (ROOT / ".ci" / "state" / "kafka").is_dir():
        pytest.skip("the broker is not one .ci/services.sh runs, so this test cannot stop it")
    topic = f"fs-stream-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    events = _events(400, 10, now - timedelta(minutes=3), timedelta(minutes=2), seed=9)
    for e in events:
        e["kind"] = "a"
    store = _repo(tmp_path, bootstrap, topic, _redis_db(redis_url, 6), events[:1])
    kafka.create_topic(topic)
    kafka.produce(topic, [_json(e) for e in events[:200]])
    manager.start(store, "user_clicks", wait_seconds=0)
    jobs.append((store, "user_clicks"))
    users = sorted({e["user_id"] for e in events})

    def counted() -> int:
        return sum(c or 0 for c in _online(store, "user_clicks", users)["price2_count_lifetime"])

    _wait("the first 200 events", lambda: counted() == 200, 120, jobs)
    pid = manager.status_of(store, "user_clicks").pid
    stopped = _services("stop", "kafka")
    assert stopped.returncode == 0, stopped.stderr
    try:
        time.sleep(8)
        assert manager.status_of(store, "user_clicks").running
    finally:
        started = _services("start", "kafka")
        assert started.returncode == 0, started.stderr
    producer = KafkaClient(KafkaConfig(bootstrap_servers=bootstrap, timeout_seconds=60))
    try:
        producer.produce(topic, [_json(e) for e in events[200:]])
    finally:
        producer.close()
    _wait("the events produced after the outage", lambda: counted() == 400, 180, jobs)
    assert manager.status_of(store, "user_clicks").pid == pid  # the same job carried on


PUSH_FEATURES = """
from datetime import timedelta
from featurestore import Entity, FeatureView, FileSource, PushSource, Aggregation
user = Entity(name="user", join_keys=["user_id"])
history = FileSource(name="clicks_history", path="data/clicks.parquet", timestamp_field="ts")
pushed = PushSource(name="clicks_push", batch_source=history, bootstrap_servers="{bootstrap}", topic="{topic}")
user_spend = FeatureView(name="user_spend", entities=[user], source=pushed, ttl=timedelta(days=1),
                         aggregations=[Aggregation(column="price", function="sum", window=timedelta(minutes=10)),
                                       Aggregation(column="price", function="count")])
"""


def test_push_to_a_streaming_push_source_takes_the_stream_path(tmp_path, bootstrap, kafka, redis_url, flink_ready,
                                                               jobs):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    topic = f"fs-push-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    history = [{"user_id": 1, "price": 1.0, "kind": "a", "ts": now - timedelta(days=3)}]
    store = _applied_repo(tmp_path, PUSH_FEATURES.format(bootstrap=bootstrap, topic=topic),
                          {"clicks": pa.Table.from_pylist(history, schema=SCHEMA)}, _redis_db(redis_url, 7))
    kafka.create_topic(topic)
    manager.start(store, "user_spend", wait_seconds=0)
    jobs.append((store, "user_spend"))
    times = [(now - timedelta(seconds=30 - i)).isoformat() for i in range(6)]
    with TestClient(create_app(store)) as client:
        resp = client.post("/push", json={"push_source_name": "clicks_push", "to": "online_and_offline", "df": {
            "user_id": [1, 2, 1, 2, 1, 3], "price": [1.5, 2.0, 0.25, 4, 3.0, 8.0], "ts": times}})
        assert resp.status_code == 200, resp.text
        assert resp.json()["rows"] == 6 and resp.json()["views"] == ["user_spend"]
        bad = client.post("/push", json={"push_source_name": "clicks_push", "df": {
            "user_id": [1], "price": ["lots"], "ts": [times[0]]}})
        assert bad.status_code == 422 and "field 'price' should be Float64" in bad.text

        def online() -> dict:
            body = {"features": ["user_spend:price_sum_10m", "user_spend:price_count_lifetime"],
                    "entities": {"user_id": [1, 2, 3]}}
            results = client.post("/get-online-features", json=body).json()["results"]
            return {"sum": results[1]["values"], "count": results[2]["values"]}

        _wait("the pushed rows online", lambda: online() == {"sum": [4.75, 6.0, 8.0], "count": [3, 2, 1]}, 120,
              jobs)
    _wait("the pushed rows offline", lambda: "user_spend" in store.offline_store.appends.views()
          and store.offline_store.appends.read("user_spend").num_rows == 6, 30, jobs)
    assert sorted(store.offline_store.appends.read("user_spend").column("price").to_pylist()) == [0.25, 1.5, 2.0, 3.0, 4.0, 8.0]


@pytest.fixture
def flink_cluster(tmp_path_factory, flink_ready) -> Iterator[Any]:
    from featurestore.streaming import env as flink_env
    from tests.flink_cluster import FlinkCluster

    cluster = FlinkCluster(flink_env.venv_python(), tmp_path_factory.mktemp("flink-home"))
    try:
        cluster.start(flink_env.child_env())
        yield cluster
    finally:
        cluster.stop()


def test_job_runs_on_a_flink_cluster_by_config(tmp_path, bootstrap, kafka, redis_url, flink_cluster, jobs):
    topic = f"fs-stream-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    events = _events(300, 8, now - timedelta(minutes=3), timedelta(minutes=2), seed=21)
    store = _repo(tmp_path, bootstrap, topic, _redis_db(redis_url, 13), events[:1],
                  stream_engine=f"{{checkpoint_interval_seconds: 1, "
                                f"jobmanager: '{flink_cluster.jobmanager}'}}")
    kafka.create_topic(topic)
    kafka.produce(topic, [_json(e) for e in events])
    status = manager.start(store, "user_clicks")
    jobs.append((store, "user_clicks"))
    assert status.running and status.cluster_job and status.pid is None
    [job] = flink_cluster.jobs()
    assert job["state"] == "RUNNING" and status.cluster_job.startswith(job["jid"])
    kept = [e for e in events if e["kind"] != "x"]
    users = sorted({e["user_id"] for e in events})
    want = [sum(1 for e in kept if e["user_id"] == u) for u in users]
    _wait("the cluster job's online values",
          lambda: _online(store, "user_clicks", users)["price2_count_lifetime"] == want, 180)
    _wait("its offline rows", lambda: "user_clicks" in store.offline_store.appends.views()
          and store.offline_store.appends.read("user_clicks").num_rows == len(kept), 60)
    assert manager.stop(store, "user_clicks", timeout=60)
    assert [j["state"] for j in flink_cluster.jobs()] == ["CANCELED"]
    assert not manager.status_of(store, "user_clicks").running
