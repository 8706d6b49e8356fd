"""The stream job's last step without Flink: the sink's decisions, its exactly-once commits across
crashes, aggregation folds of out-of-order events, and exports that see what it committed.

The sink (``featurestore.streaming.sink.EventSink``) is fed the columns the job's SQL hands it; the
stores, the dead-letter topic (the CI Kafka broker) and the engines are real.
"""

from __future__ import annotations

import json
import random
import uuid
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.kafka import KafkaClient, KafkaConfig
from featurestore.errors import StreamIncompleteWarning
from featurestore.streaming.blueprint import Blueprint, build_blueprint
from featurestore.streaming.sink import EventSink
from featurestore.streaming.writers import OfflineRows, online_writer
from tests.repo_helpers import store_for

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([("user_id", pa.int64()), ("price", pa.float64()), ("kind", pa.string()), ("ts", TS)])

FEATURES = """
    from datetime import timedelta
    from featurestore import Entity, FeatureView, FileSource, KafkaSource, Aggregation, Field, col
    from featurestore.types import Float64
    user = Entity(name="user", join_keys=["user_id"])
    hist = FileSource(name="clicks_history", path="data/clicks.parquet", timestamp_field="ts")
    clicks = KafkaSource(name="clicks", bootstrap_servers="{bootstrap}", topic="{topic}", batch_source=hist,
                         watermark_delay=timedelta(seconds=5), allowed_lateness=timedelta(seconds=1))
    spend = FeatureView(name="spend", entities=[user], source=clicks, ttl=timedelta(days=1),
        filter=col("kind") != "x",
        aggregations=[Aggregation(column="price", function="sum", window=timedelta(minutes=10)),
                      Aggregation(column="price", function="count", window=None)])
    last = FeatureView(name="last", entities=[user], source=clicks, ttl=timedelta(days=1),
        schema=[Field(name="price", dtype=Float64)])
"""


def _store(tmp_path: Path, history: list[dict], bootstrap: str = "127.0.0.1:1", topic: str = "clicks",
           engine: dict | None = None):
    store = store_for(tmp_path, FEATURES.format(bootstrap=bootstrap, topic=topic),
                      tables={"clicks": pa.Table.from_pylist(history, schema=SCHEMA)})
    if engine is not None:
        with open(tmp_path / "featurestore.yaml", "a") as f:
            f.write(f"engine: {json.dumps(engine)}\n")
        store = type(store)(tmp_path)
    store.apply()
    return store


def _row(blueprint: Blueprint, e: dict[str, Any]) -> dict[str, Any]:
    row = {k: e[k] for k in blueprint.keys}
    row.update({f.name: e[f.name] for f in blueprint.stored})
    return {**row, "event_timestamp": e["ts"], "created_timestamp": None}


# ------------------------------------------------------------------ aggregation folds, out of order


def test_an_event_older_than_its_entitys_newest_is_folded_and_written(tmp_path: Path):
    store = _store(tmp_path, [])
    plan = build_blueprint(store, "spend")
    writer = online_writer(plan, store)
    t = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    later = {"user_id": 1, "price": 2.0, "kind": "a", "ts": t + timedelta(seconds=3)}
    earlier = {"user_id": 1, "price": 5.0, "kind": "a", "ts": t}
    # the same Kafka record time (one millisecond): the rows differ only by what they fold
    assert writer.write([(_row(plan, later), 0, 0, 1_000)]) == (1, 0)
    assert writer.write([(_row(plan, earlier), 0, 1, 1_000)]) == (1, 0)
    assert writer.write([(_row(plan, earlier), 0, 1, 1_000)]) == (0, 0)  # a replay folds nothing
    got = store.get_online_features(features=["spend:price_sum_10m", "spend:price_count_lifetime"],
                                    entity_rows=[{"user_id": 1}]).to_dict()
    assert got["price_sum_10m"] == [7.0] and got["price_count_lifetime"] == [2]


# ------------------------------------------------------------------ the sink against an oracle


class Recorder:
    """A random stream of messages per partition, and what the semantics make of them."""

    def __init__(self, seed: int, partitions: int, users: int, start: datetime):
        self.rnd = random.Random(seed)
        self.partitions = partitions
        self.users = users
        self.clock = {p: start for p in range(partitions)}
        self.messages: list[dict[str, Any]] = []  # partition, offset, kind ("ok" | "bad" | "late"), event
        self.next_offset = {p: 0 for p in range(partitions)}

    def produce(self, n: int) -> None:
        rnd = self.rnd
        for _ in range(n):
            user = rnd.randrange(self.users)
            p = user % self.partitions
            self.clock[p] += timedelta(milliseconds=rnd.randrange(1, 400))
            roll = rnd.random()
            if roll < 0.03:
                kind, event = "bad", None
            elif roll < 0.06:
                kind = "late"
                event = {"user_id": user, "price": rnd.randrange(40) / 4, "kind": "a",
                         "ts": self.clock[p] - timedelta(seconds=rnd.uniform(7, 60))}
            else:
                kind = "ok"
                event = {"user_id": user, "price": rnd.randrange(40) / 4, "kind": rnd.choice("aax"),
                         "ts": self.clock[p] - timedelta(milliseconds=rnd.randrange(4000))}
            self.messages.append({"partition": p, "offset": self.next_offset[p], "kind": kind, "event": event})
            self.next_offset[p] += 1

    def columns(self, blueprint: Blueprint, batch: list[dict]) -> list[list[Any]]:
        """The columns the job's SQL would hand the sink for ``batch``."""
        names = blueprint.output_columns
        cols: list[list[Any]] = [[] for _ in range(len(names) + 6)]
        for m in batch:
            e = m["event"]
            values: dict[str, Any] = {}
            if e is not None:
                values = {"user_id": str(e["user_id"]), "price": repr(e["price"]),
                          "event_timestamp": e["ts"].replace(tzinfo=None).isoformat(sep=" ")}
            for j, name in enumerate(names):
                cols[j].append(values.get(name))
            base = len(names)
            cols[base].append(m["partition"])
            cols[base + 1].append(m["offset"])
            cols[base + 2].append(1_767_225_600_000)  # the Kafka record time, epoch ms
            cols[base + 3].append(None if e is not None else json.dumps(
                {"reason": "bad JSON", "view": blueprint.view, "topic": blueprint.kafka.topic,
                 "partition": m["partition"], "offset": m["offset"]}))
            keeps = blueprint.view != "spend" or (e is not None and e["kind"] != "x")
            cols[base + 4].append(keeps)
            cols[base + 5].append(None)
        return cols


def test_sink_applies_each_message_once_across_crashes(tmp_path: Path, kafka_bootstrap: str, monkeypatch):
    topic = f"fs-sink-{uuid.uuid4().hex[:10]}"
    store = _store(tmp_path, [], bootstrap=kafka_bootstrap, topic=topic)
    plan = build_blueprint(store, "spend")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    rec = Recorder(seed=7, partitions=3, users=30, start=start)
    rec.produce(3000)
    # arrival order: partitions interleaved in bursts (as a consumer fetches them), each in offset order
    by_part = {p: [m for m in rec.messages if m["partition"] == p] for p in range(3)}
    arrival: list[dict] = []
    while any(by_part.values()):
        p = rec.rnd.choice([q for q in by_part if by_part[q]])
        take = rec.rnd.randrange(1, 400)
        arrival += by_part[p][:take]
        by_part[p] = by_part[p][take:]

    sink = EventSink(plan, store)
    crashes = 0
    i = 0
    while i < len(arrival):
        size = rec.rnd.randrange(1, 300)
        batch = arrival[i:i + size]
        if rec.rnd.random() < 0.15:  # crash after the letters and online writes, before the commit
            with monkeypatch.context() as m:
                m.setattr(OfflineRows, "commit", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
                try:
                    sink.handle(rec.columns(plan, batch))
                except RuntimeError:
                    crashes += 1
                    sink = EventSink(plan, store)  # a restarted job: back to the last commit...
                    i = max(0, i - rec.rnd.randrange(0, 500))  # ...replaying from an older checkpoint
                    continue
        else:
            sink.handle(rec.columns(plan, batch))
        i += size
    assert crashes >= 3

    # the oracle: per partition, in offset order
    top: dict[int, datetime] = {}
    kept, dead = [], []
    for m in sorted(rec.messages, key=lambda m: (m["partition"], m["offset"])):
        e, p = m["event"], m["partition"]
        if e is None:
            dead.append((p, m["offset"]))
            continue
        late = p in top and e["ts"] < top[p] - timedelta(seconds=6)
        top[p] = max(top.get(p, e["ts"]), e["ts"])
        if e["kind"] == "x":
            continue
        if late:
            dead.append((p, m["offset"]))
        else:
            kept.append(e)
    assert len(dead) > sum(m["event"] is None for m in rec.messages) + 20  # late events were judged
    letters = KafkaClient(KafkaConfig(bootstrap_servers=kafka_bootstrap)).read_topic(f"{topic}.dead-letter")
    got_dead = [(m.json()["partition"], m.json()["offset"]) for m in letters]
    assert sorted(got_dead) == sorted(dead)  # each once
    offline = store.offline_store.appends.read("spend")
    assert sorted((r["user_id"], r["price"], r["event_timestamp"]) for r in offline.to_pylist()) == \
        sorted((e["user_id"], e["price"], e["ts"]) for e in kept)
    users = list(range(30))
    got = store.get_online_features(features=["spend:price_count_lifetime", "spend:price_sum_10m"],
                                    entity_rows=[{"user_id": u} for u in users]).to_dict()
    assert got["price_count_lifetime"] == [sum(e["user_id"] == u for e in kept) for u in users]
    assert got["price_sum_10m"] == [sum(e["price"] for e in kept if e["user_id"] == u) or None for u in users]


def test_each_committed_batch_records_the_statistics_of_the_rows_it_applied(tmp_path: Path, kafka_bootstrap: str):
    topic = f"fs-sink-stats-{uuid.uuid4().hex[:10]}"
    store = _store(tmp_path, [], bootstrap=kafka_bootstrap, topic=topic)
    plan = build_blueprint(store, "last")
    rec = Recorder(seed=11, partitions=2, users=20, start=datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
    rec.produce(600)
    sink = EventSink(plan, store)
    for i in range(0, 600, 150):
        sink.handle(rec.columns(plan, rec.messages[i:i + 150]))
    sink.handle(rec.columns(plan, rec.messages[:150]))  # a replay: nothing new, no record
    sink.close()  # the records are written off the batches' path
    runs = store.quality_runs("last")
    assert [r.kind for r in runs] == ["stream"] * 4
    assert sum(r.rows_in for r in runs) == 600
    applied = store.offline_store.appends.read("last").column("price").to_numpy()
    assert sum(r.rows_written for r in runs) == len(applied) < 600  # bad and late ones were dead-lettered
    price = [r.stats["price"] for r in runs]
    assert [p["rows"] for p in price] == [r.rows_written for r in runs]
    assert min(p["min"] for p in price) == applied.min() and max(p["max"] for p in price) == applied.max()
    assert sum(p["mean"] * p["rows"] for p in price) == pytest.approx(applied.sum(), rel=1e-12)
    assert all(p["freshness_seconds"] > 0 for p in price)


# ------------------------------------------------------------------ exports see committed stream rows


@pytest.mark.parametrize("engine", [None, pytest.param(
    {"type": "spark", "master": "local[1]", "conf": {"spark.sql.shuffle.partitions": "2"}},
    marks=pytest.mark.slow, id="spark")])
def test_export_sees_streamed_rows_with_the_history_and_counts_each_event_once(tmp_path: Path, engine):
    now = datetime.now(UTC).replace(microsecond=0)
    history = [{"user_id": u, "price": 1.0 + u, "kind": "a", "ts": now - timedelta(hours=12, minutes=u)}
               for u in range(4)]
    store = _store(tmp_path, history, engine=engine)
    streamed = [{"user_id": u, "price": 10.0 * (u + 1), "kind": "a", "ts": now - timedelta(minutes=5 - u)}
                for u in range(3)]
    archived = history[0]  # the batch source archives the stream: one event is in both
    for view in ("spend", "last"):
        plan = build_blueprint(store, view)
        rows = [_row(plan, e) for e in streamed + [archived]]
        writer = OfflineRows(plan, store)
        writer.commit(writer.stage(rows), {0: (0, len(rows) - 1)},
                                        {"max_event_us": {"0": int(now.timestamp() * 1e6)},
                                         "watermark_delay_us": 5_000_000, "allowed_lateness_us": 1_000_000})
    entity = pa.table({"user_id": pa.array([0, 1, 2, 3, 0], pa.int64()),
                       "event_timestamp": pa.array([now - timedelta(seconds=10)] * 4
                                                   + [now - timedelta(hours=2)], TS)})
    feats = ["spend:price_sum_10m", "spend:price_count_lifetime", "last:price"]

    def export() -> tuple[dict, dict]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            job = store.get_historical_features(entity_df=entity, features=feats)
            out = job.to_arrow().to_pydict()
        assert not [w for w in caught if issubclass(w.category, StreamIncompleteWarning)]
        return out, job.manifest

    want = {"price_sum_10m": [10.0, 20.0, 30.0, None, None], "price_count_lifetime": [2, 2, 2, 1, 1],
            "last:price": [10.0, 20.0, 30.0, 4.0, 1.0]}
    for materialized in (False, True):  # from the batch source, then from the materialized table
        if materialized:
            store.materialize(now - timedelta(days=3), now)
        out, manifest = export()
        assert out["price_sum_10m"] == want["price_sum_10m"], materialized
        assert out["price_count_lifetime"] == want["price_count_lifetime"], materialized
        assert out["price"] == want["last:price"], materialized
        assert manifest["views"]["spend"]["read_from"] == "source+appended"  # lifetime: all history
        assert manifest["views"]["last"]["read_from"] == (
            "offline_store+appended" if materialized else "source+appended")
        assert manifest["views"]["spend"]["stream_complete"] is True
    # an export past what the job has completed says so, in a warning and in its manifest
    late_entity = pa.table({"user_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([now], TS)})
    with pytest.warns(StreamIncompleteWarning, match="'spend'.*completed only events before"):
        job = store.get_historical_features(entity_df=late_entity, features=feats)
        job.to_arrow()
    note = job.manifest["views"]["spend"]
    assert note["stream_complete"] is False
    assert note["stream_complete_until"] == (now - timedelta(seconds=6)).isoformat()
