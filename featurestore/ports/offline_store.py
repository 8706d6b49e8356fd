"""The offline store contract: every feature view's history, for training exports and backfills.

Backends live in ``connectors/`` (``offline_delta``: Delta Lake tables) and are loaded by short name from the
``featurestore.offline_stores`` entry-point group. Materialization, exports, pushes and the stream
job call only the methods below; the optional ones only when the backend declares their capability.

Semantics every backend keeps:

- **Interval replace.** ``write(view, rows, start, end)`` replaces the view's rows with
  ``start <= ts < end`` by ``rows`` atomically: a reader sees the interval before or after, never half
  of it. Reruns replace rather than duplicate. Which intervals were materialized is recorded by the
  caller in the registry (``featurestore.coverage``), not by the store.
- **Appends.** ``appends`` is a second store of the same kind holding rows that stream jobs and
  pushes add (``append``). Materialization never replaces them; exports read both tables.
- **Exactly-once stream commits.** ``commit_append(..., stream=, offsets=, progress=)`` makes the
  staged rows visible together with the Kafka offsets and the progress they complete, in one commit;
  ``stream_progress`` reads both back from the same commit.
- **Times.** Timestamps are stored as UTC microseconds (``featurestore.timestamps``).
- **Other writers.** A store declaring ``CAP_DELTA`` keeps each view as a Delta table that other
  Delta writers may replace intervals of, each replace claiming ``REPLACE_TXN`` (see its comment).
- **Damage.** A table or data file that cannot be read raises ``DamagedStateError`` naming the file;
  a store declaring ``CAP_REPAIR`` names ``repair_command(view)`` there, and ``repair(view)`` brings
  the table back to a readable state, reporting what could not be kept (``TableRepair``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

# Capability names a backend may declare in ``capabilities``.
CAP_FILES = "files"  # ``files()`` lists data files an engine can read directly (else it gets ``read()``)
# Each view is a Delta table at ``table_uri(view)`` that other Delta writers (the Spark engine) may
# commit to. Every interval-replace commit, whoever writes it, carries the application transaction
# ``REPLACE_TXN`` at (the table version it read + 1): each replace thereby depends on that id, so two
# replaces never both commit against the same snapshot, and the claims only grow.
CAP_DELTA = "delta"
REPLACE_TXN = "featurestore.replace"
CAP_COMPACT = "compact"  # ``compact`` merges small files and ``vacuum`` removes unreferenced ones
CAP_VERSIONS = "versions"  # ``version(view)`` names a commit and ``read(..., version=)`` reads it again
CAP_REPAIR = "repair"  # ``repair(view)`` makes a damaged table readable again


def repair_command(view: str) -> str:
    """The command that repairs a view's offline tables (``featurestore.repair``)."""
    return f"featurestore offline repair {view}"


@dataclass
class TableRepair:
    """What ``repair`` found in one table and did about it.

    ``lost_times`` are the event-time ranges (inclusive) of rows the repair could not keep; None when
    they are unknown (commits that could not be read: any time may be affected). ``notes`` say, one
    line each, what was damaged and what was done."""

    view: str
    table: str
    notes: list[str] = field(default_factory=list)
    lost_rows: int | None = 0
    lost_times: list[tuple[datetime, datetime]] | None = field(default_factory=list)
    set_aside: str | None = None  # where the damaged files were moved

    @property
    def damaged(self) -> bool:
        return bool(self.notes)


class OfflineStore(ABC):
    """A backend's history of every view. Constructed as ``cls(config, repo_path, project)``."""

    capabilities: frozenset[str] = frozenset()

    # -- materialized rows ------------------------------------------------------------------------
    @abstractmethod
    def write(self, view: str, table: pa.Table, start: datetime, end: datetime, timestamp_column: str) -> None:
        """Replace the view's rows in [start, end) by ``table``'s rows and mark the interval covered."""

    @abstractmethod
    def read(self, view: str, start: datetime | None = None, end: datetime | None = None,
             columns: list[str] | None = None, version: int | None = None) -> pa.Table:
        """Rows with start <= ts <= end (inclusive both ends), in the stored schema; ``version`` names
        an older commit (``CAP_VERSIONS``)."""

    @abstractmethod
    def fingerprint(self, view: str, version: int | None = None) -> str:
        """Changes with every commit of the view (and when it is deleted and recreated); ``version``
        names an older commit (``CAP_VERSIONS``)."""

    @abstractmethod
    def schema(self, view: str) -> pa.Schema | None:
        """The stored Arrow schema of the view's rows, None before its first commit."""

    @abstractmethod
    def views(self) -> list[str]:
        """Names of views with committed data, sorted."""

    @abstractmethod
    def delete_view(self, view: str) -> bool:
        """Remove the view's data; returns whether there was any. Idempotent."""

    @property
    def storage_options(self) -> dict[str, str]:
        """Object-store settings (``${VAR}`` not expanded) an engine needs to open ``files()`` URIs."""
        return {}

    def files(self, view: str, start: datetime | None = None, end: datetime | None = None,
              version: int | None = None) -> list[str]:
        """Data files that can hold the view's rows in [start, end] (``CAP_FILES``); ``version`` names
        an older commit (``CAP_VERSIONS``). A version whose files are gone raises NotFoundError."""
        raise NotImplementedError(f"{type(self).__name__} does not list data files")

    # -- appended rows (stream jobs, pushes) ------------------------------------------------------
    @property
    @abstractmethod
    def appends(self) -> "OfflineStore":
        """The store of appended rows, beside the materialized one."""

    @property
    def quarantine(self) -> "OfflineStore":
        """The store of rows checks dropped (``on_fail="drop"``), one table per view."""
        raise NotImplementedError(f"{type(self).__name__} keeps no quarantined rows")

    @property
    def quality(self) -> "OfflineStore":
        """The store of quality records (check results, statistics), one table per view."""
        raise NotImplementedError(f"{type(self).__name__} keeps no quality records")

    @property
    def drift(self) -> "OfflineStore":
        """The store of drift results (``featurestore drift``), one table per view."""
        raise NotImplementedError(f"{type(self).__name__} keeps no drift results")

    @abstractmethod
    def append(self, view: str, table: pa.Table, timestamp_column: str, *, stream: str | None = None,
               offsets: dict[int, tuple[int, int]] | None = None, progress: dict[str, Any] | None = None) -> None:
        """Add rows without replacing any; with ``stream``, record ``offsets`` and ``progress`` in the
        same commit."""

    @abstractmethod
    def stage_append(self, view: str, table: pa.Table, timestamp_column: str) -> Any:
        """The rows of an append written but not yet visible; ``commit_append`` publishes them."""

    @abstractmethod
    def commit_append(self, staged: Any, *, stream: str | None = None,
                      offsets: dict[int, tuple[int, int]] | None = None,
                      progress: dict[str, Any] | None = None) -> None:
        """Publish a staged append (see ``append``)."""

    @abstractmethod
    def discard_append(self, staged: Any) -> None:
        """Remove a staged append that will not be committed."""

    @abstractmethod
    def stream_progress(self, view: str, stream: str) -> tuple[dict[int, int], dict[str, Any]]:
        """(last committed offset per partition, the progress committed with them) of ``stream``."""

    def stream_offsets(self, view: str, stream: str) -> dict[int, int]:
        """Per partition, the last offset of ``stream`` whose rows ``view`` has committed ({} if none)."""
        return self.stream_progress(view, stream)[0]

    @abstractmethod
    def streams(self, view: str) -> dict[str, dict[str, Any]]:
        """Every stream's committed progress for ``view``."""

    # -- optional abilities -----------------------------------------------------------------------
    def table_uri(self, view: str) -> str:
        """Where the view's Delta table is, for another Delta writer or reader (``CAP_DELTA``)."""
        raise NotImplementedError(f"{type(self).__name__} does not keep views as Delta tables")

    def compact(self, view: str, *, max_small_files: int = 16) -> int:
        """Merge the view's small files once there are more than ``max_small_files``; returns how many
        were merged (``CAP_COMPACT``)."""
        return 0

    def vacuum(self, view: str | None = None, grace: timedelta = timedelta(days=7)) -> list[str]:
        """Delete files that no version younger than ``grace`` needs; returns them (``CAP_COMPACT``)."""
        return []

    def repair(self, view: str) -> TableRepair:
        """Make the view's table readable again (``CAP_REPAIR``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot repair its tables")

    def close(self) -> None:  # noqa: B027 - stores without resources need nothing here
        """Release connections and handles."""
