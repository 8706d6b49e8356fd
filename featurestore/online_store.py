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
"""

from __future__ import annotations

import datetime
import pathlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

# Capability names a backend may declare in ``capabilities``.
CAP_TTL_EXPIRY = "ttl_expiry"  # rows disappear by themselves once event_ts + ttl has passed
CAP_MULTI_PROCESS = "multi_process"  # several processes may write and read the same store at once
CAP_REMOTE = "remote"  # a network service: calls can fail with BackendUnavailableError


@dataclass
class WriteResult:
    """What one ``write`` did: rows stored, and rows skipped (stale, duplicate in the batch, expired)."""

    written: int
    skipped_stale: int


@dataclass
class ReadResult:
    """Values of one ``read``.

    ``values[feature]`` lists a Python value per requested key, in key order (``None`` when the key or
    the feature is missing or the value is null); ``event_timestamps`` holds the stored row's event time
    per key (UTC, tz-aware), ``None`` when the store has no row for that key.
    """

    values: dict[str, list]
    event_timestamps: list[datetime.datetime | None]


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
