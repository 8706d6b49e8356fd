"""How far a stream job has come, per Kafka partition, and which events are late.

A partition's watermark is the largest event time among the readable messages the job has read from
that partition (in offset order) minus the source's ``watermark_delay``. An event is late when its
event time is behind its own partition's watermark by more than ``allowed_lateness``::

    late  <=>  event_time < max_event_time(partition, earlier offsets) - watermark_delay - allowed_lateness

The job judges this itself, in the one operator that sees every message in offset order, instead of
reading Flink's watermark: Flink combines the partitions' watermarks and lets them run ahead of events
still buffered downstream, and a burst fetched one partition at a time then makes on-time events of
the other partitions look late. Malformed messages (no event time) do not move a watermark; events the
view's filter drops do (they are part of the partition's stream of time).

The progress (last offset handled and largest event time, per partition) is committed atomically with
the offline rows of the same events, so after a restart the job resumes with exactly the state it had
after its last commit: replayed events at or below a committed offset are skipped, later ones are judged
again against the same watermarks and get the same decisions. Pure Python: exports read the committed
progress to tell how complete the stream's history is (``complete_until``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from featurestore.timestamps import from_us


@dataclass
class PartitionProgress:
    """Per partition: the last offset handled and the largest event time read (epoch microseconds).

    ``delay_us`` and ``lateness_us`` are the source's watermark delay and allowed lateness."""

    delay_us: int
    lateness_us: int
    offsets: dict[int, int] = field(default_factory=dict)
    max_event_us: dict[int, int] = field(default_factory=dict)

    def handled(self, partition: int, offset: int) -> bool:
        """Whether the message at ``offset`` was handled before (a replay after a restart)."""
        return offset <= self.offsets.get(partition, -1)

    def is_late(self, partition: int, event_us: int) -> bool:
        top = self.max_event_us.get(partition)
        return top is not None and event_us < top - self.delay_us - self.lateness_us

    def advance(self, partition: int, offset: int, event_us: int | None) -> None:
        """Record the message at ``offset`` as handled; a readable one moves its partition's clock."""
        self.offsets[partition] = offset
        if event_us is not None and event_us > self.max_event_us.get(partition, event_us - 1):
            self.max_event_us[partition] = event_us

    def to_json(self) -> dict[str, Any]:
        """What a commit records beside the offsets (``OfflineStore.append(progress=...)``)."""
        return {"max_event_us": {str(p): t for p, t in sorted(self.max_event_us.items())},
                "watermark_delay_us": self.delay_us, "allowed_lateness_us": self.lateness_us}

    @classmethod
    def from_committed(cls, offsets: dict[int, int], progress: dict[str, Any], delay_us: int,
                       lateness_us: int) -> "PartitionProgress":
        tops = {int(p): int(t) for p, t in (progress.get("max_event_us") or {}).items()}
        return cls(delay_us, lateness_us, dict(offsets), tops)


def complete_until(progress: dict[str, Any]) -> datetime | None:
    """The event time below which no on-time event can still arrive, from a committed progress:
    the smallest partition watermark minus the allowed lateness (None before any event). An export at
    an entity time t < this bound sees every event it ever will; at a later t, on-time events may
    still come. Partitions the job has read nothing from yet are not counted."""
    tops = progress.get("max_event_us") or {}
    if not tops:
        return None
    bound = min(int(t) for t in tops.values()) - int(progress.get("watermark_delay_us", 0)) \
        - int(progress.get("allowed_lateness_us", 0))
    return from_us(bound)
