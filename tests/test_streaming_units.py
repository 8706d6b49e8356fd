"""The stream job's pure parts, without Flink or Kafka: the KafkaSource definition, reading messages,
the per-entity aggregation state (checked against the batch engine's export), the job plan, and the
offline store's exactly-once appends."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from featurestore import FileSource, KafkaSource
from featurestore import types as fstypes
from featurestore.errors import ConflictError, DefinitionError, InvalidInputError
from featurestore.online_aggregate import finish
from featurestore.streaming import events as ev
from featurestore.streaming.blueprint import Blueprint, EventColumn, build_blueprint
from featurestore.streaming.state import AggregationState
from featurestore.streaming.writers import OfflineRows
from featurestore.timestamps import to_us
from tests.repo_helpers import store_for
from transforms.aggregation import Aggregation

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
HISTORY = FileSource(name="h", path="data/h.parquet", timestamp_field="ts")


# ------------------------------------------------------------------------------ the definition


def test_kafka_source_defaults_and_spec_round_trip():
    from featurestore.sources import source_from_spec

    src = KafkaSource(name="clicks", bootstrap_servers="127.0.0.1:9092", topic="clicks", batch_source=HISTORY,
                      allowed_lateness=30)
    assert src.timestamp_field == "ts"  # taken from the history
    assert src.dead_letter_topic == "clicks.dead-letter"
    assert src.allowed_lateness == timedelta(seconds=30)
    again = source_from_spec(src.to_spec())
    assert again == src


@pytest.mark.parametrize("kwargs, field", [
    ({"bootstrap_servers": ""}, "bootstrap_servers"),
    ({"topic": "bad topic!"}, "topic"),
    ({"format": "avro"}, "format"),
    ({"batch_source": None}, "batch_source"),
    ({"watermark_delay": timedelta(seconds=-1)}, "watermark_delay"),
    ({"dead_letter_topic": "clicks"}, "dead_letter_topic"),
])
def test_kafka_source_rejects_bad_settings_naming_them(kwargs, field):
    args = {"name": "clicks", "bootstrap_servers": "b:9092", "topic": "clicks", "batch_source": HISTORY, **kwargs}
    with pytest.raises(DefinitionError) as err:
        KafkaSource(**args)
    assert err.value.field == field


# ------------------------------------------------------------------------------ reading messages

COLUMNS = [
    EventColumn("user_id", "user", fstypes.Int64, True),
    EventColumn("ts", "ts", fstypes.Timestamp, True),
    EventColumn("price", "price", fstypes.Float64, False),
    EventColumn("kind", "kind", fstypes.String, False),
    EventColumn("ok", "ok", fstypes.Bool, False),
    EventColumn("blob", "blob", fstypes.Bytes, False),
]


def _msg(**fields):
    base = {"user": 7, "ts": "2024-05-01T10:00:00.000123+02:00", "price": 2, "kind": "a", "ok": True,
            "blob": "AAE=", "extra": [1]}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_parse_types_and_times():
    assert ev.parse(_msg(), COLUMNS) == [7, "2024-05-01 08:00:00.000123", 2.0, "a", True, b"\x00\x01"]
    assert ev.parse(_msg(ts=1_700_000_000_123, price=None), COLUMNS)[1:3] == ["2023-11-14 22:13:20.123000", None]
    assert ev.parse(_msg(ts="2024-05-01T10:00:00"), COLUMNS)[1] == "2024-05-01 10:00:00.000000"  # no zone: UTC


@pytest.mark.parametrize("raw, reason", [
    (b"{nope", "bad JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "not an object"),
    (_msg(price=...), "missing field 'price'"),
    (_msg(user=None), "field 'user' is null"),
    (_msg(user="7"), "field 'user' should be Int64"),
    (_msg(user=True), "field 'user' should be Int64"),
    (_msg(user=2**63), "out of range for Int64"),
    (_msg(price="1.5"), "field 'price' should be Float64"),
    (_msg(ok=1), "field 'ok' should be Bool"),
    (_msg(blob="%%%"), "not valid base64"),
    (_msg(ts="yesterday"), "field 'ts' should be an ISO 8601 timestamp"),
])
def test_malformed_messages_name_the_reason(raw, reason):
    with pytest.raises(ev.EventError) as err:
        ev.parse(raw, COLUMNS)
    assert reason in str(err.value)


def test_dead_letter_record_keeps_the_message():
    rec = json.loads(ev.dead_letter("bad JSON: x", b"\xff", view="v", topic="t", partition=0, offset=5))
    assert rec == {"reason": "bad JSON: x", "view": "v", "topic": "t", "partition": 0, "offset": 5,
                   "value_base64": "/w=="}


# ------------------------------------------------------------------------------ aggregation state

AGGS = [Aggregation(column="amount", function=f, window=w)
        for f in ("sum", "count", "mean", "min", "max", "last", "stddev")
        for w in (timedelta(minutes=10), timedelta(hours=1), None)]


def _events(n: int, users: int, now: datetime, seed: int = 7) -> pa.Table:
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        t = now - timedelta(seconds=rnd.randrange(1, 2 * 3600), microseconds=rnd.randrange(10**6))
        rows.append({"user_id": rnd.randrange(users), "amount": None if rnd.random() < 0.1 else rnd.randrange(-40, 40) * 0.25,
                     "ts": t})
    rows.sort(key=lambda r: r["ts"])
    return pa.Table.from_pylist(rows, schema=pa.schema([("user_id", pa.int64()), ("amount", pa.float64()), ("ts", TS)]))


def test_streamed_state_gives_the_batch_export_values(tmp_path: Path):
    now = datetime.now(UTC).replace(microsecond=0)
    events = _events(3000, 40, now)
    aggs = ", ".join(f"Aggregation(column='amount', function='{a.function}', window="
                     f"{'None' if a.window is None else f'timedelta(seconds={int(a.window.total_seconds())})'})"
                     for a in AGGS)
    store = store_for(tmp_path, f"""
        from datetime import timedelta
        from featurestore import Entity, FeatureView, FileSource, Aggregation
        user = Entity(name="user", join_keys=["user_id"])
        src = FileSource(name="ev", path="data/ev.parquet", timestamp_field="ts")
        v = FeatureView(name="v", entities=[user], source=src, aggregations=[{aggs}])
    """, tables={"ev": events})
    store.apply()
    aggs = store.get_feature_view("v").aggregations
    state = AggregationState(aggs)
    per_user: dict[int, dict] = {}
    arrivals = events.to_pylist()
    random.Random(3).shuffle(arrivals)  # any arrival order gives the same values
    for r in arrivals:
        st = per_user.setdefault(r["user_id"], state.new())
        state.add(st, to_us(r["ts"]), None, r, 1)
    entity_df = pa.table({"user_id": pa.array(sorted(per_user), pa.int64()),
                          "event_timestamp": pa.array([now] * len(per_user), TS)})
    names = [f"v:{a.name}" for a in aggs]
    want = store.get_historical_features(entity_df=entity_df, features=names).to_arrow().to_pylist()
    for a in aggs:  # the data exercises every aggregation
        assert sum(r[a.name] not in (None, 0) for r in want) > len(want) // 2, a.name
    for row in want:
        online = state.row(per_user[row["user_id"]])
        for a in aggs:
            got = finish(a, online, now)
            exp = row[a.name]
            if a.function == "stddev" and exp is not None:
                assert got == pytest.approx(exp, rel=1e-9), (row["user_id"], a.name)
            else:
                assert got == exp, (row["user_id"], a.name, got, exp)
        assert online["event_timestamp"] == max(r["ts"] for r in events.to_pylist() if r["user_id"] == row["user_id"])


def test_state_drops_events_no_lookup_can_need():
    state = AggregationState([Aggregation.from_spec(
        {"column": "x", "function": "sum", "window_seconds": 60, "name": "x_sum_1m"})])
    st = state.new()
    t0 = to_us(datetime(2024, 1, 1, tzinfo=UTC))
    for i in range(10):
        state.add(st, t0 + i * 30_000_000, None, {"x": i}, 1000 + i)
    assert st["ts"] == [t0 + 8 * 30_000_000, t0 + 9 * 30_000_000]  # (latest - 60 s, latest]
    assert state.row(st)["created_timestamp"] == datetime(1970, 1, 1, 0, 0, 1, 9000, tzinfo=UTC)


# ------------------------------------------------------------------------------ the plan


FEATURES = """
    from datetime import timedelta
    from featurestore import Entity, FeatureView, FileSource, KafkaSource, Aggregation, col
    user = Entity(name="user", join_keys=["user_id"])
    hist = FileSource(name="clicks_history", path="data/clicks.parquet", timestamp_field="ts")
    clicks = KafkaSource(name="clicks", bootstrap_servers="127.0.0.1:1", topic="clicks", batch_source=hist)
    user_clicks = FeatureView(name="user_clicks", entities=[user], source=clicks, ttl=timedelta(days=1),
        filter=col("kind") != "x", transform=[(col("price") * 2).alias("price2")],
        aggregations=[Aggregation(column="price2", function="sum", window=timedelta(minutes=10))])
    plain = FeatureView(name="plain", entities=[user], source=hist)
    from featurestore import Field
    from featurestore.types import Int64
    unused_next = FeatureView(name="unused_next", entities=[user], source=clicks,
        transform=[(col("unused") + 1).alias("next")], schema=[Field(name="next", dtype=Int64)])
"""


def _history() -> pa.Table:
    return pa.table({"user_id": pa.array([1], pa.int64()), "price": [1.0], "kind": ["a"], "unused": [1],
                     "ts": pa.array([datetime(2024, 1, 1, tzinfo=UTC)], TS)})


def test_plan_lists_what_messages_carry_and_compiles_the_transforms(tmp_path: Path):
    store = store_for(tmp_path, FEATURES, tables={"clicks": _history()})
    store.apply()
    blueprint = build_blueprint(store, "user_clicks")
    assert [(c.name, c.dtype.to_spec(), c.required) for c in blueprint.columns] == [
        ("user_id", "Int64", True), ("ts", "Timestamp", True), ("price", "Float64", False),
        ("kind", "String", False)]  # not "unused"
    # the filter is a column (no message is dropped before the sink, which keeps per-partition time)
    assert "COALESCE((`kind` <> CAST('x' AS STRING)), FALSE) AS `__fs_keep`" in blueprint.select
    assert "WHERE" not in blueprint.select
    assert "(`price` * CAST(2 AS BIGINT)) AS `price2`" in blueprint.select
    assert blueprint.kafka.group_id == "featurestore.test.user_clicks"
    assert Blueprint.from_json(blueprint.to_json()) == blueprint  # what the job process reads back
    with pytest.raises(InvalidInputError, match="KafkaSource"):
        build_blueprint(store, "plain")


def test_plan_turns_transform_failures_into_an_error_column_instead_of_failing_the_job(tmp_path: Path):
    store = store_for(tmp_path, FEATURES, tables={"clicks": _history()})
    store.apply()
    select = build_blueprint(store, "unused_next").select
    assert "CAST('integer overflow" not in select  # the throwing cast of the batch-like compile
    assert "THEN 'integer overflow in +: ' || CAST(`unused` AS STRING) END) AS `__fs_error` FROM `events`" in select
    assert select.startswith("SELECT `user_id` AS `user_id`, `next` AS `next`, ")
    # the outer select hands the error column on to fs_sink, after the meta columns
    assert ", `__fs_offset`, `__fs_kafka_ts`, `__fs_bad`, `__fs_keep`, `__fs_error` FROM (SELECT `user_id`, " \
        in select
    # nothing in user_clicks can fail: the column is a constant null
    assert "CAST(NULL AS STRING) AS `__fs_error` FROM `events`" in build_blueprint(store, "user_clicks").select


def test_lateness_is_judged_against_the_events_own_partition():
    from featurestore.streaming.progress import PartitionProgress, complete_until

    s = 1_000_000
    progress = PartitionProgress(delay_us=5 * s, lateness_us=2 * s)
    progress.advance(0, 0, 100 * s)
    progress.advance(1, 0, 10 * s)  # partition 1 is far behind partition 0: none of its events is late
    assert not progress.is_late(1, 9 * s)
    assert not progress.is_late(0, 93 * s)  # exactly delay + lateness behind: on time
    assert progress.is_late(0, 93 * s - 1)
    progress.advance(0, 1, 50 * s)  # an older event does not move the clock back
    assert progress.max_event_us[0] == 100 * s and progress.offsets == {0: 1, 1: 0}
    progress.advance(0, 2, None)  # a malformed message: handled, no time
    assert progress.handled(0, 2) and not progress.handled(0, 3) and progress.max_event_us[0] == 100 * s
    again = PartitionProgress.from_committed(progress.offsets, progress.to_json(), 5 * s, 2 * s)
    assert again == progress  # what a commit records is all a restarted job needs
    # the stream is complete below the slowest partition's watermark minus the allowed lateness
    assert complete_until(progress.to_json()) == datetime(1970, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert complete_until({}) is None


def test_dead_letter_of_a_row_says_why_and_where_from():
    from featurestore.streaming.writers import row_dead_letter

    row = {"user_id": 1, "next": None, "event_timestamp": datetime(2024, 1, 1, tzinfo=UTC), "b": b"x"}
    assert json.loads(row_dead_letter("v", "t", "transform: integer overflow in +: 9", row, 0, 7)) == {
        "reason": "transform: integer overflow in +: 9", "view": "v", "topic": "t", "partition": 0, "offset": 7,
        "row": {"user_id": 1, "next": None, "event_timestamp": "2024-01-01T00:00:00+00:00"}}


# ------------------------------------------------------------------------------ offline, exactly once


def _offline_writer(tmp_path: Path):
    """(store, the stream job's offline writer of user_clicks)."""
    store = store_for(tmp_path, FEATURES, tables={"clicks": _history()})
    store.apply()
    return store, OfflineRows(build_blueprint(store, "user_clicks"), store)


def test_offline_commits_record_offsets_and_progress_with_the_rows(tmp_path: Path):
    store, rows = _offline_writer(tmp_path)
    t = datetime(2024, 1, 1, tzinfo=UTC)
    batch = [{"user_id": i, "price2": float(i), "event_timestamp": t, "created_timestamp": None} for i in range(6)]
    staged = rows.stage(batch)
    assert "user_clicks" not in rows.offline.views()  # staged files are not visible before the commit
    assert rows.commit(staged, {0: (0, 4), 1: (0, 2)}, {"max_event_us": {"0": 5}}) == 6
    assert rows.commit(rows.stage([]), {0: (5, 7)}, {"max_event_us": {"0": 9}}) == 0  # e.g. all late
    appended = store.offline_store.appends
    assert appended.stream_progress("user_clicks", "kafka:clicks") == ({0: 7, 1: 2}, {"max_event_us": {"0": 9}})
    assert rows.committed() == ({0: 7, 1: 2}, {"max_event_us": {"0": 9}})
    table = appended.read("user_clicks")
    assert sorted(table.column("user_id").to_pylist()) == list(range(6))
    with pytest.raises(ConflictError, match="overlap"):
        rows.commit(rows.stage(batch[:1]), {0: (3, 3)}, {})
    assert appended.read("user_clicks").num_rows == 6  # nothing half-written
    # appended rows live beside the materialized table: materialization never replaces them
    assert "user_clicks" not in store.offline_store.views()
    assert store.offline_store.delete_view("user_clicks") and appended.views() == []


def test_streaming_appends_are_compacted_as_small_files_pile_up(tmp_path: Path):
    store, rows = _offline_writer(tmp_path)
    t = datetime(2024, 1, 1, tzinfo=UTC)
    offline = store.offline_store.appends
    for i in range(40):  # one commit per batch, as the stream job does
        rows.commit(rows.stage([{"user_id": i, "price2": float(i), "event_timestamp": t + timedelta(minutes=i),
                                 "created_timestamp": None}]), {0: (i, i)}, {})
        rows.compact()
        assert len(offline.files("user_clicks")) <= 17
    table = offline.read("user_clicks").sort_by("user_id")
    assert table.column("user_id").to_pylist() == list(range(40))
    assert offline.stream_offsets("user_clicks", "kafka:clicks") == {0: 39}
    before = len(offline.files("user_clicks"))
    assert before > 1 and offline.compact("user_clicks", max_small_files=1) == before
    assert len(offline.files("user_clicks")) == 1
    assert offline.read("user_clicks").sort_by("user_id").equals(table)
    # the merged files stay for older table versions until vacuum removes them
    assert offline.vacuum("user_clicks", grace=timedelta(0))
    assert len(list(Path(offline.root, "user_clicks").glob("*.parquet"))) == 1


# ------------------------------------------------------------------------------ streaming pushes

PUSH_FEATURES = """
    from datetime import timedelta
    from featurestore import Entity, FeatureView, FileSource, PushSource, Aggregation, col
    user = Entity(name="user", join_keys=["user_id"])
    hist = FileSource(name="clicks_history", path="data/clicks.parquet", timestamp_field="ts")
    pushed = PushSource(name="clicks_push", batch_source=hist, bootstrap_servers="127.0.0.1:1", topic="clicks")
    user_clicks = FeatureView(name="user_clicks", entities=[user], source=pushed, ttl=timedelta(days=1),
        aggregations=[Aggregation(column="price", function="sum", window=timedelta(minutes=10))])
"""


@pytest.mark.parametrize("df, message", [
    ({"user_id": [1], "price": [1.0], "ts": ["2024-01-01T00:00:00"], "colour": ["red"]}, "unknown columns ['colour']"),
    ({"user_id": [1], "ts": ["2024-01-01T00:00:00"]}, "missing columns ['price']"),
    ({"user_id": ["one"], "price": [1.0], "ts": ["2024-01-01T00:00:00"]}, "row 0: field 'user_id' should be Int64"),
    ({"user_id": [1], "price": [1.0], "ts": ["soon"]}, "row 0: field 'ts' should be an ISO 8601 timestamp"),
])
def test_streaming_push_is_validated_like_stream_messages_before_anything_is_sent(tmp_path: Path, df, message):
    from fastapi.testclient import TestClient

    from serving.app import create_app

    store = store_for(tmp_path, PUSH_FEATURES, tables={"clicks": _history()})
    store.apply()
    with TestClient(create_app(store)) as client:  # the broker (port 1) is never reached
        resp = client.post("/push", json={"push_source_name": "clicks_push", "df": df, "to": "online"})
    assert resp.status_code == 422, resp.text
    assert message in resp.text
