"""The online store contract: the latest feature values per entity key, for lookups at inference.

Backends live in ``connectors/`` (``online_redis``, ``online_sqlite``) and are loaded by short name
from the ``featurestore.online_stores`` entry-point group. The materializer, the REST server and the
streaming job call only the methods below.

Semantics every backend keeps:

- **Event-time monotonic upsert.** Per entity key a row is stored only when its
  ``(event_ts, created_ts)`` is strictly newer than the stored one (a missing created timestamp is
  the smallest). Equal or older rows are skipped and counted in ``WriteResult.skipped_stale``, so
  replays and reruns change nothing, even with several writers at once. Within one ``write`` call the
  newest row per key wins (on a full tie, the first one in the batch).
- **TTL.** ``write`` gets the view's ttl. A backend may let rows expire after ``event_ts + ttl`` (Redis
  does) and may skip rows that are already expired; ``read`` always returns what it holds together
  with its event timestamp, and the caller decides whether a value is too old (``OUTSIDE_MAX_AGE``).
- **Exact values.** What ``read`` returns equals what was written, for every product type.
- **Damaged rows.** A stored row that cannot be decoded never fails a ``read``: that key alone reads as
  absent and is listed in ``ReadResult.invalid``; ``write`` treats such a row as absent, so any later
  row for the key replaces it.
"""

from __future__ import annotations

import datetime
import pathlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from featurestore.timestamps import from_us, to_us

_UTC = datetime.timezone.utc

# Capability names a backend may declare in ``capabilities``.
CAP_TTL_EXPIRY = "ttl_expiry"  # rows disappear by themselves once event_ts + ttl has passed
CAP_MULTI_PROCESS = "multi_process"  # several processes may write and read the same store at once
CAP_REMOTE = "remote"  # a network service: calls can fail with BackendUnavailableError
CAP_ASYNC_READ = "async_read"  # ``read_many_async``: several views' reads awaited at once, without threads


@dataclass
class WriteResult:
    """What one ``write`` did: rows stored, and rows skipped (stale, duplicate in the batch, expired)."""

    written: int
    skipped_stale: int


class EventTimes(Sequence):
    """A read's event times, one per key: a read-only sequence of tz-aware UTC datetimes (``None`` where
    the store holds no row), kept as int64 microseconds since the epoch until someone iterates it.

    A lookup mostly needs only comparisons (TTL statuses, the newest time for the freshness gauge) and
    JSON text, which numpy and orjson get straight from the numbers (``naive``); building a tz-aware
    ``datetime`` per key costs more than the rest of decoding a row, so it is done once, on first access.
    """

    __slots__ = ("us", "present", "_aware")

    def __init__(self, us: np.ndarray, present: np.ndarray | None = None) -> None:
        self.us = us  # int64; entries where ``present`` is False are meaningless
        self.present = present  # bool per key, or None when every key has a row
        self._aware: list | None = None

    def __len__(self) -> int:
        return len(self.us)

    def __getitem__(self, index):
        return self._list()[index]

    def __iter__(self):
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (EventTimes, list, tuple)):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # mutable-looking and compared by value, like a list

    def __repr__(self) -> str:
        return f"EventTimes({self._list()!r})"

    def naive(self) -> list:
        """Naive UTC datetimes (``None`` where absent): numpy builds them in C; orjson's ``OPT_NAIVE_UTC``
        writes them exactly as the tz-aware ones."""
        out = self.us.astype("datetime64[us]").astype(object).tolist()
        if self.present is not None:
            out = [v if ok else None for v, ok in zip(out, self.present.tolist())]
        return out

    def _list(self) -> list:
        if self._aware is None:
            self._aware = [None if v is None else v.replace(tzinfo=_UTC) for v in self.naive()]
        return self._aware

    def newest(self) -> datetime.datetime | None:
        us = self.us if self.present is None else self.us[self.present]
        return from_us(int(us.max())) if len(us) else None

    def fresh_since(self, oldest: datetime.datetime | None) -> np.ndarray:
        """Per key: it has a row, with an event time at or after ``oldest`` (any time when None)."""
        fresh = np.ones(len(self.us), dtype=bool) if self.present is None else self.present.copy()
        if oldest is not None:
            fresh &= self.us >= to_us(oldest)
        return fresh


@dataclass
class ReadResult:
    """Values of one ``read``.

    ``values[feature]`` lists a Python value per requested key, in key order (``None`` when the key or
    the feature is missing or the value is null); ``event_timestamps`` holds the stored row's event time
    per key (UTC, tz-aware), ``None`` when the store has no row for that key: a list, or an
    ``EventTimes`` (the same sequence, decoded lazily). ``complete`` may name features known to hold
    a value for every key (a hint that saves the caller a scan for ``None``; empty when unknown).
    ``invalid`` maps the index of each key whose stored row cannot be decoded to a message naming where
    the row is stored and why; such a key reads as absent (values ``None``, event time ``None``).
    """

    values: dict[str, list]
    event_timestamps: "list[datetime.datetime | None] | EventTimes"
    complete: frozenset = frozenset()
    invalid: dict[int, str] = field(default_factory=dict)


class OnlineStore(ABC):
    """Latest feature values per entity key of each feature view."""

    capabilities: frozenset[str] = frozenset()

    @abstractmethod
    def __init__(self, config: Any, repo_path: pathlib.Path, project: str) -> None: ...

    @abstractmethod
    def write(self, view: str, join_keys: list[str], table: pa.Table, *, event_ts_column: str,
              created_ts_column: str | None = None, ttl: datetime.timedelta | None = None) -> WriteResult:
        """Upsert ``table``'s rows (join key columns, feature columns, event/created timestamp columns).

        Every column that is not a join key or a timestamp column is a feature. Monotonic per key.
        """

    @abstractmethod
    def read(self, view: str, join_keys: list[str], keys: list[tuple], features: list[str],
             feature_types: dict[str, pa.DataType]) -> ReadResult:
        """The stored values of ``features`` for each key tuple (values in ``join_keys`` order)."""

    async def read_many_async(self, reads: list[tuple]) -> list[ReadResult]:
        """``read`` for each argument tuple of ``reads``, awaited together (``CAP_ASYNC_READ``)."""
        raise NotImplementedError(f"{type(self).__name__} has no asynchronous reads")

    @abstractmethod
    def delete_view(self, view: str) -> None:
        """Remove every row of ``view`` (idempotent)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the object is not used afterwards."""

    def __enter__(self) -> "OnlineStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
