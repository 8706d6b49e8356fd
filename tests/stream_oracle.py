"""A brute-force oracle for the stream conformance test (tests/test_stream_conformance.py).

Written for clarity, independent of the product's code: its own parser of the messages, a replay of
each partition in offset order for the lateness rule, and plain loops for the online values and the
point-in-time export values of the two views the test runs.

Semantics (what a correct stream job guarantees):

- a message that is not a JSON object with the four fields, each of its type (``user_id`` a JSON
  integer, ``price`` a JSON number, ``kind`` a string, ``ts`` ISO 8601 text), is malformed: it is
  dead-lettered and does not move the watermark;
- per partition, the watermark is the largest event time of the well-formed messages read so far
  (offset order) minus ``watermark_delay``; an event is late iff its time < watermark - allowed
  lateness (strictly); late events are dead-lettered ("late: ...") and applied to neither store;
- every other event is applied once to both stores (when it passes the view's filter).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

UTC = timezone.utc
WINDOW = timedelta(minutes=10)
FIELDS = ("user_id", "price", "kind", "ts")


# ------------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Message:
    """One produced record: where it is and what the generator meant it to be.

    ``intent`` is "event" (on time), "late", "bad_json", "missing" or "wrong_type"; ``field`` names the
    missing or mistyped field."""

    partition: int
    offset: int
    text: str
    key: str | None
    intent: str
    field: str | None = None


@dataclass(frozen=True)
class Event:
    user_id: int
    price: float
    kind: str
    ts: datetime


def parse(text: str) -> tuple[Event | None, str | None, str | None]:
    """(event, None, None) or (None, problem, field): problem is "bad_json", "missing" or "wrong_type"."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None, "bad_json", None
    if not isinstance(obj, dict):
        return None, "bad_json", None
    for name in FIELDS:
        if name not in obj:
            return None, "missing", name
        if obj[name] is None:  # a null price or kind would be a value: the generator writes none
            return None, "null", name
    uid, price, kind, ts = (obj[n] for n in FIELDS)
    if not isinstance(uid, int) or isinstance(uid, bool):
        return None, "wrong_type", "user_id"
    if not isinstance(price, (int, float)) or isinstance(price, bool):
        return None, "wrong_type", "price"
    if not isinstance(kind, str):
        return None, "wrong_type", "kind"
    if not isinstance(ts, str):
        return None, "wrong_type", "ts"
    try:
        t = datetime.fromisoformat(ts)
    except ValueError:
        return None, "wrong_type", "ts"
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return Event(uid, float(price), kind, t), None, None


@dataclass
class Verdict:
    """What a correct job does with one message."""

    message: Message
    outcome: str                      # "event" | "late" | "bad_json" | "missing" | "wrong_type"
    event: Event | None = None
    field: str | None = None
    watermark: datetime | None = None  # the partition's watermark when the message was read

    @property
    def dead(self) -> bool:
        return self.outcome != "event"

    def reason_ok(self, reason: str) -> bool:
        """Whether a dead letter's reason fits (the texts of tests/test_streaming_job.py)."""
        if self.outcome == "late":
            return reason.startswith("late:")
        if self.outcome == "bad_json":
            return reason.startswith("bad JSON")
        if self.outcome == "missing":
            return reason == f"missing field {self.field!r}"
        if self.outcome == "wrong_type":
            return f"field {self.field!r} should be" in reason
        return False

    def describe(self) -> str:
        where = f"[{self.message.partition}:{self.message.offset}]"
        if self.event is None:
            return f"{where} {self.outcome}({self.field}) {self.message.text[:80]!r}"
        wm = "-" if self.watermark is None else self.watermark.isoformat()
        return (f"{where} {self.outcome} user={self.event.user_id} ts={self.event.ts.isoformat()} "
                f"watermark={wm}")


def replay(partitions: dict[int, list[Message]], delay: timedelta, lateness: timedelta) -> dict[tuple[int, int], Verdict]:
    """Every message's verdict, replaying each partition in offset order."""
    out: dict[tuple[int, int], Verdict] = {}
    for p, messages in partitions.items():
        largest: datetime | None = None
        for m in sorted(messages, key=lambda m: m.offset):
            event, problem, fld = parse(m.text)
            if event is None:
                out[(p, m.offset)] = Verdict(m, problem, field=fld)
                continue
            watermark = None if largest is None else largest - delay
            late = watermark is not None and event.ts < watermark - lateness
            out[(p, m.offset)] = Verdict(m, "late" if late else "event", event, watermark=watermark)
            largest = event.ts if largest is None else max(largest, event.ts)
    return out


# ------------------------------------------------------------------------------------- views
@dataclass
class AggregationView:
    """``user_clicks``: kind != "x", price2 = price * 2; sum/count/max/mean over 10 minutes, lifetime
    sum and count."""

    ttl: timedelta
    name: str = "user_clicks"
    features: tuple[str, ...] = ("price2_sum_10m", "price2_count_10m", "price2_max_10m", "price2_mean_10m",
                                 "price2_sum_lifetime", "price2_count_lifetime")
    offline_columns: tuple[str, ...] = ("user_id", "event_timestamp", "price2")

    @staticmethod
    def keep(e: Event) -> bool:
        return e.kind != "x"

    @staticmethod
    def offline_row(e: Event) -> tuple:
        return (e.user_id, e.ts, e.price * 2)

    def at(self, events: Iterable[Event], t: datetime, check_ttl: bool = True) -> tuple:
        """The feature values at ``t`` over a user's kept events (None everywhere when no event is at or
        before t, or the latest is older than the TTL)."""
        ev = [e for e in events if e.ts <= t]
        if not ev or (check_ttl and max(e.ts for e in ev) < t - self.ttl):
            return (None,) * len(self.features)
        win = [e.price * 2 for e in ev if e.ts > t - WINDOW]
        life = [e.price * 2 for e in ev]
        return (sum(win) if win else None, len(win), max(win) if win else None,
                sum(win) / len(win) if win else None, sum(life), len(life))

    def online(self, kept: list[Event], now: datetime) -> tuple:
        """The online value at lookup time ``now``: the state holds every kept stream event (all before
        ``now``); the row is fresh while its newest event is within the TTL."""
        if not kept:
            return (None,) * len(self.features)
        if max(e.ts for e in kept) < now - self.ttl:
            return (None,) * len(self.features)
        return self.at(kept, now, check_ttl=False)

    def export(self, events: list[Event], t: datetime) -> tuple:
        return self.at(events, t)


@dataclass
class PlainView:
    """``user_last``: price > 0.5; kind_upper = upper(kind), price1 = price + 1; the latest event."""

    ttl: timedelta
    name: str = "user_last"
    features: tuple[str, ...] = ("kind_upper", "price1")
    offline_columns: tuple[str, ...] = ("user_id", "event_timestamp", "kind_upper", "price1")

    @staticmethod
    def keep(e: Event) -> bool:
        return e.price > 0.5

    @staticmethod
    def offline_row(e: Event) -> tuple:
        return (e.user_id, e.ts, e.kind.upper(), e.price + 1)

    @staticmethod
    def _values(e: Event | None) -> tuple:
        return (None, None) if e is None else (e.kind.upper(), e.price + 1)

    def online(self, kept: list[Event], now: datetime) -> tuple:
        if not kept:
            return self._values(None)
        latest = max(kept, key=lambda e: e.ts)  # event times are unique per user
        return self._values(None if latest.ts < now - self.ttl else latest)

    def export(self, events: list[Event], t: datetime) -> tuple:
        cands = [e for e in events if t - self.ttl <= e.ts <= t]
        return self._values(max(cands, key=lambda e: e.ts) if cands else None)


@dataclass
class Expected:
    """What a correct job leaves behind, from the verdicts."""

    verdicts: dict[tuple[int, int], Verdict]
    view: Any
    history: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dead = {k: v for k, v in self.verdicts.items() if v.dead}
        self.kept: dict[int, list[Event]] = {}
        for v in self.verdicts.values():
            if v.outcome == "event" and self.view.keep(v.event):
                self.kept.setdefault(v.event.user_id, []).append(v.event)
        self.all_events: dict[int, list[Event]] = {u: list(evs) for u, evs in self.kept.items()}
        for e in self.history:
            if self.view.keep(e):
                self.all_events.setdefault(e.user_id, []).append(e)

    def online(self, users: list[int], now: datetime) -> dict[int, tuple]:
        return {u: self.view.online(self.kept.get(u, []), now) for u in users}

    def offline_rows(self) -> list[tuple]:
        return sorted(self.view.offline_row(e) for evs in self.kept.values() for e in evs)

    def export(self, rows: list[tuple[int, datetime]]) -> list[tuple]:
        return [self.view.export(self.all_events.get(u, []), t) for u, t in rows]
