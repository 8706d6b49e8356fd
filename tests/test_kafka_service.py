"""The Kafka test service answers, and connectors/kafka.py round-trips records through it.

The broker is the single-node KRaft broker that ``.ci/services.sh`` starts (``make test`` exports
``FS_TEST_KAFKA_BOOTSTRAP``); without it these tests skip, and fail under CI=true.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from connectors.kafka import KafkaClient, KafkaConfig
from featurestore.errors import BackendUnavailableError, ConflictError


@pytest.fixture
def kafka(kafka_bootstrap: str) -> Iterator[KafkaClient]:
    client = KafkaClient(KafkaConfig(bootstrap_servers=kafka_bootstrap, timeout_seconds=20))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fresh_topic(kafka: KafkaClient) -> Iterator[str]:
    """A topic name no other test uses; deleted afterwards if the test created it."""
    name = f"fs-test-{uuid.uuid4().hex[:16]}"
    try:
        yield name
    finally:
        if name in kafka.list_topics():
            kafka.delete_topic(name)


@pytest.mark.kafka
def test_broker_answers_metadata(kafka: KafkaClient) -> None:
    meta = kafka.cluster_metadata()
    assert len(meta.brokers) == 1
    assert kafka.ping()


@pytest.mark.kafka
def test_produce_and_read_back_on_a_fresh_topic(kafka: KafkaClient, fresh_topic: str) -> None:
    kafka.create_topic(fresh_topic, partitions=3)
    assert fresh_topic in kafka.list_topics()
    assert kafka.read_topic(fresh_topic) == []

    base_ms = int(time.time() * 1000) - 60_000
    events = [{"user": i % 7, "seq": i, "price": round(i * 1.25, 2), "note": f"é{i}"} for i in range(300)]
    sent = kafka.produce(fresh_topic, events, key=lambda e: str(e["user"]),
                         timestamp_ms=lambda e: base_ms + e["seq"])
    assert sent == len(events)

    messages = kafka.read_topic(fresh_topic)
    assert sorted((m.json() for m in messages), key=lambda e: e["seq"]) == events
    # Keys, timestamps and placement survive the trip: one key lives in one partition, in send order.
    partitions_of_key: dict[bytes, set[int]] = {}
    for m in messages:
        event = m.json()
        assert m.key == str(event["user"]).encode()
        assert m.timestamp_ms == base_ms + event["seq"]
        partitions_of_key.setdefault(m.key, set()).add(m.partition)
    assert all(len(parts) == 1 for parts in partitions_of_key.values())
    for part in {m.partition for m in messages}:
        seqs = [m.json()["seq"] for m in messages if m.partition == part]
        offsets = [m.offset for m in messages if m.partition == part]
        assert seqs == sorted(seqs)
        assert offsets == list(range(len(offsets)))

    # A bounded read stops at the end as of the call; later records show up in the next read.
    kafka.produce(fresh_topic, [b"raw bytes", "text", None])
    again = kafka.read_topic(fresh_topic)
    assert len(again) == len(events) + 3
    assert {m.value for m in again if m.key is None} == {b"raw bytes", b"text", None}
    assert len(kafka.read_topic(fresh_topic, max_messages=10)) == 10


@pytest.mark.kafka
def test_create_topic_twice(kafka: KafkaClient, fresh_topic: str) -> None:
    kafka.create_topic(fresh_topic)
    with pytest.raises(ConflictError, match=fresh_topic):
        kafka.create_topic(fresh_topic)
    kafka.create_topic(fresh_topic, exist_ok=True)


def test_unreachable_broker_is_backend_unavailable() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    client = KafkaClient(KafkaConfig(bootstrap_servers="127.0.0.1:1", timeout_seconds=1))
    started = time.monotonic()
    assert client.ping(timeout=1) is False
    with pytest.raises(BackendUnavailableError, match="127.0.0.1:1"):
        client.list_topics()
    assert time.monotonic() - started < 10


def test_config_is_strict_and_passes_client_settings_through() -> None:
    with pytest.raises(ValidationError):
        KafkaConfig(bootstrap_servers="127.0.0.1:9092", bootstrap="typo")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        KafkaConfig(bootstrap_servers="")
    cfg = KafkaConfig(bootstrap_servers="b:9092", client_config={"client.id": "mine", "acks": "1"})
    conf = cfg.librdkafka(acks="all")
    assert conf["bootstrap.servers"] == "b:9092"
    assert conf["client.id"] == "mine" and conf["acks"] == "1"  # the user's settings win
