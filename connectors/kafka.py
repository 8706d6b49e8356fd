"""Kafka I/O: topic admin, producing and bounded reads, with confluent-kafka (librdkafka).

This is the small client the product and its tests use around a stream job: create the topic a
source reads, produce events into it, read a topic back (e.g. a dead-letter topic), check that the
broker answers. The stream job itself reads Kafka inside Flink, not through this module.

``confluent_kafka`` is imported on first use, so importing this module costs nothing; without the
package a call raises ``MissingDependencyError`` ("pip install 'featurestore[streaming]'").

Example (needs a broker; ``make test`` starts one and sets ``FS_TEST_KAFKA_BOOTSTRAP``)::

    from connectors.kafka import KafkaClient, KafkaConfig

    kafka = KafkaClient(KafkaConfig(bootstrap_servers="127.0.0.1:59092"))
    kafka.create_topic("clicks", partitions=1)
    kafka.produce("clicks", [{"user": 1, "price": 9.5}], key=lambda row: str(row["user"]))
    [message.json() for message in kafka.read_topic("clicks")]   # [{'user': 1, 'price': 9.5}]

Failures to reach the broker (connect, metadata, delivery, timeouts) raise ``BackendUnavailableError``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from featurestore.errors import BackendUnavailableError, ConflictError, MissingDependencyError

_LOG = logging.getLogger("featurestore.kafka")

ConfigValue = Union[str, int, float, bool]
Value = Union[bytes, str, Mapping[str, Any], None]


class KafkaConfig(BaseModel):
    """Connection settings: ``{type: kafka, bootstrap_servers: "127.0.0.1:9092"}``.

    ``client_config`` is passed to librdkafka as is (e.g. ``security.protocol``, ``sasl.*``), after
    the settings here, so it can override them.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["kafka"] = "kafka"
    bootstrap_servers: str = Field(min_length=1)
    client_id: str = "featurestore"
    timeout_seconds: float = Field(10.0, gt=0)
    client_config: dict[str, ConfigValue] = Field(default_factory=dict)

    def librdkafka(self, **extra: ConfigValue) -> dict[str, Any]:
        """The librdkafka settings; its log lines go to the ``featurestore.kafka`` logger, not stderr."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "logger": _LOG,
        }
        conf.update(extra)
        conf.update(self.client_config)
        return conf


@dataclass(frozen=True)
class Message:
    """One record read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def text(self) -> str | None:
        return None if self.value is None else self.value.decode("utf-8")

    def json(self) -> Any:
        return None if self.value is None else json.loads(self.value)


def _ck() -> Any:
    try:
        import confluent_kafka
        import confluent_kafka.admin  # noqa: F401  (a submodule: not loaded by the package itself)
    except ImportError as exc:
        raise MissingDependencyError("confluent-kafka", "streaming") from exc
    return confluent_kafka


def _encode(value: Value) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), default=str).encode("utf-8")


class KafkaClient:
    """Admin, produce and bounded reads against one Kafka cluster."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._admin: Any = None
        self._producer: Any = None

    # ------------------------------------------------------------ admin
    def admin(self) -> Any:
        if self._admin is None:
            self._admin = _ck().admin.AdminClient(self.config.librdkafka())
        return self._admin

    def cluster_metadata(self, timeout: float | None = None) -> Any:
        """The broker's metadata (brokers and topics); BackendUnavailableError if it does not answer."""
        ck = _ck()
        wait = self.config.timeout_seconds if timeout is None else timeout
        try:
            return self.admin().list_topics(timeout=wait)
        except ck.KafkaException as exc:
            raise BackendUnavailableError(
                f"Kafka at {self.config.bootstrap_servers} did not answer within {wait}s: {exc}"
            ) from exc

    def ping(self, timeout: float = 5.0) -> bool:
        try:
            return bool(self.cluster_metadata(timeout).brokers)
        except BackendUnavailableError:
            return False

    def list_topics(self) -> list[str]:
        return sorted(t for t in self.cluster_metadata().topics if not t.startswith("__"))

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1,
                     config: Mapping[str, str] | None = None, exist_ok: bool = False) -> None:
        """Create a topic and wait until every partition has a leader."""
        ck = _ck()
        topic = ck.admin.NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                                  config=dict(config or {}))
        future = self.admin().create_topics([topic], operation_timeout=self.config.timeout_seconds)[name]
        try:
            future.result(timeout=self.config.timeout_seconds)
        except ck.KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if hasattr(err, "code") else None
            if code == ck.KafkaError.TOPIC_ALREADY_EXISTS:
                if not exist_ok:
                    raise ConflictError(f"Kafka topic {name!r} already exists") from exc
            else:
                raise BackendUnavailableError(f"could not create Kafka topic {name!r}: {exc}") from exc
        except Exception as exc:  # concurrent.futures.TimeoutError and friends
            raise BackendUnavailableError(f"could not create Kafka topic {name!r}: {exc!r}") from exc
        self._wait_for_leaders(name, partitions)

    def _wait_for_leaders(self, name: str, partitions: int) -> None:
        deadline = time.monotonic() + self.config.timeout_seconds
        while True:
            topic = self.cluster_metadata().topics.get(name)
            if (topic is not None and topic.error is None and len(topic.partitions) >= partitions
                    and all(p.leader >= 0 for p in topic.partitions.values())):
                return
            if time.monotonic() > deadline:
                raise BackendUnavailableError(f"Kafka topic {name!r} has no leader after "
                                              f"{self.config.timeout_seconds}s")
            time.sleep(0.05)

    def delete_topic(self, name: str) -> None:
        ck = _ck()
        future = self.admin().delete_topics([name], operation_timeout=self.config.timeout_seconds)[name]
        try:
            future.result(timeout=self.config.timeout_seconds)
        except ck.KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if getattr(err, "code", lambda: None)() != ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise BackendUnavailableError(f"could not delete Kafka topic {name!r}: {exc}") from exc

    # ------------------------------------------------------------ produce
    def producer(self) -> Any:
        if self._producer is None:
            self._producer = _ck().Producer(self.config.librdkafka(
                **{"enable.idempotence": True, "linger.ms": 5, "acks": "all"}))
        return self._producer

    def produce(self, topic: str, values: Iterable[Value],
                key: Callable[[Any], Value] | None = None,
                timestamp_ms: Callable[[Any], int] | None = None,
                partition: Callable[[Any], int] | None = None,
                delivered: Callable[[int, int], None] | None = None) -> int:
        """Write values (bytes, str, or a mapping sent as JSON) and wait until all are acknowledged.

        ``key`` and ``timestamp_ms`` compute a record's key and timestamp from its value, ``partition``
        its partition (without it the producer's partitioner picks one from the key). Records to one
        partition keep the order of ``values`` (the producer is idempotent). Returns the number of
        records written; raises BackendUnavailableError if any was not delivered. ``delivered`` is called
        with the partition and offset of each record the broker acknowledged.
        """
        ck = _ck()
        producer = self.producer()
        errors: list[str] = []

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            elif delivered is not None:
                delivered(msg.partition(), msg.offset())

        count = 0
        for value in values:
            kwargs: dict[str, Any] = {"value": _encode(value), "on_delivery": on_delivery}
            if key is not None:
                kwargs["key"] = _encode(key(value))
            if timestamp_ms is not None:
                kwargs["timestamp"] = int(timestamp_ms(value))
            if partition is not None:
                kwargs["partition"] = int(partition(value))
            while True:
                try:
                    producer.produce(topic, **kwargs)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    producer.poll(0.1)
                except ck.KafkaException as exc:
                    raise BackendUnavailableError(f"could not produce to Kafka topic {topic!r}: {exc}") from exc
            producer.poll(0)
            count += 1
        remaining = producer.flush(self.config.timeout_seconds)
        if remaining:
            raise BackendUnavailableError(f"{remaining} record(s) to Kafka topic {topic!r} not acknowledged "
                                          f"within {self.config.timeout_seconds}s")
        if errors:
            raise BackendUnavailableError(f"{len(errors)} record(s) to Kafka topic {topic!r} failed: {errors[0]}")
        return count

    # ------------------------------------------------------------ bounded reads
    def read_topic(self, topic: str, timeout: float | None = None,
                   max_messages: int | None = None, start: dict[int, int] | None = None) -> list[Message]:
        """Every record in ``topic`` from the start up to its end as of this call, in partition order;
        with ``start``, a partition listed there is read from that offset on.

        No consumer group is joined and no offset committed (partitions are assigned directly), so
        reading never disturbs a job's consumer group.
        """
        ck = _ck()
        wait = self.config.timeout_seconds if timeout is None else timeout
        meta = self.cluster_metadata().topics.get(topic)
        if meta is None or meta.error is not None:
            raise BackendUnavailableError(f"Kafka topic {topic!r} not found: {getattr(meta, 'error', None)}")
        consumer = ck.Consumer(self.config.librdkafka(**{
            "group.id": f"fs-read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }))
        try:
            ends: dict[int, int] = {}
            assign = []
            deadline = time.monotonic() + wait
            for p in sorted(meta.partitions):
                low, high = self._watermarks(consumer, ck.TopicPartition(topic, p), deadline)
                low = max(low, (start or {}).get(p, low))
                if high > low:
                    ends[p] = high
                    assign.append(ck.TopicPartition(topic, p, low))
            if not assign:
                return []
            consumer.assign(assign)
            out: list[Message] = []
            while ends and (max_messages is None or len(out) < max_messages):
                if time.monotonic() > deadline:
                    raise BackendUnavailableError(
                        f"reading Kafka topic {topic!r}: {len(out)} record(s) in {wait}s, partitions "
                        f"{sorted(ends)} not read to their end")
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    raise BackendUnavailableError(f"reading Kafka topic {topic!r}: {msg.error()}")
                ts_type, ts = msg.timestamp()
                out.append(Message(topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                                   key=msg.key(), value=msg.value(),
                                   timestamp_ms=None if ts_type == ck.TIMESTAMP_NOT_AVAILABLE else ts,
                                   headers=tuple(msg.headers() or ())))
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
            out.sort(key=lambda m: (m.partition, m.offset))
            return out
        finally:
            consumer.close()

    def group_lag(self, group: str, topic: str, timeout: float | None = None) -> dict[int, int]:
        """Per partition of ``topic``: records after ``group``'s committed offset (all of them when the
        group has committed nothing). Reads offsets only; never joins or changes the group."""
        ck = _ck()
        wait = self.config.timeout_seconds if timeout is None else timeout
        meta = self.cluster_metadata(timeout=wait).topics.get(topic)
        if meta is None or meta.error is not None:
            raise BackendUnavailableError(f"Kafka topic {topic!r} not found: {getattr(meta, 'error', None)}")
        consumer = ck.Consumer(self.config.librdkafka(**{"group.id": group, "enable.auto.commit": False}))
        try:
            deadline = time.monotonic() + wait
            parts = [ck.TopicPartition(topic, p) for p in sorted(meta.partitions)]
            try:
                committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=wait)}
            except ck.KafkaException as exc:
                raise BackendUnavailableError(f"committed offsets of group {group!r}: {exc}") from exc
            lag = {}
            for tp in parts:
                low, high = self._watermarks(consumer, tp, deadline)
                done = committed.get(tp.partition, -1)
                lag[tp.partition] = high - (done if done >= 0 else low)
            return lag
        finally:
            consumer.close()

    @staticmethod
    def _watermarks(consumer: Any, tp: Any, deadline: float) -> tuple[int, int]:
        """(low, high) offsets of a partition, retrying while leadership settles (a topic created
        a moment ago can answer NOT_LEADER_FOR_PARTITION although its metadata already names a leader)."""
        ck = _ck()
        while True:
            try:
                return consumer.get_watermark_offsets(tp, timeout=max(0.5, deadline - time.monotonic()))
            except ck.KafkaException as exc:
                err = exc.args[0] if exc.args else None
                retriable = bool(err is not None and hasattr(err, "retriable") and err.retriable())
                if not retriable and getattr(err, "code", lambda: None)() not in (
                        ck.KafkaError.NOT_LEADER_FOR_PARTITION, ck.KafkaError.LEADER_NOT_AVAILABLE,
                        ck.KafkaError.UNKNOWN_TOPIC_OR_PART, ck.KafkaError._TIMED_OUT):
                    raise BackendUnavailableError(f"Kafka offsets of {tp.topic}[{tp.partition}]: {exc}") from exc
                if time.monotonic() > deadline:
                    raise BackendUnavailableError(
                        f"Kafka offsets of {tp.topic}[{tp.partition}] not available in time: {exc}") from exc
                time.sleep(0.1)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.config.timeout_seconds)
            self._producer = None
        self._admin = None
