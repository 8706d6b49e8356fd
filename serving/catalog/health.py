"""Whether each view can be trusted right now: how fresh its data is against its TTL, what its newest
materialization run or stream commit recorded (checks), its newest drift run, and its stream job.

``HealthBoard`` keeps this for every view in memory. The first page that needs it waits for one read;
after that a page older than ``FEATURESTORE_UI_REFRESH_SECONDS`` (default 10) starts a refresh in a
background thread and is answered with what is known, so no page waits on the offline store. A
view's quality and drift records are read again only when their table's fingerprint changed.

Freshness is the end of the newest interval materialized into the offline store (``coverage``), or the
newest checkpoint of a running stream job, whichever is later; a view is stale when that is older than
its TTL.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from featurestore import coverage, drift_records, quality_runs
from featurestore.drift_records import DriftValue
from featurestore.quality_report import svg_charts
from featurestore.quality_runs import QualityRun
from featurestore.streaming import manager
from featurestore.streaming.manager import JobStatus
from serving.metrics import env_seconds

log = logging.getLogger("featurestore.serving")
UTC = timezone.utc
REFRESH_ENV = "FEATURESTORE_UI_REFRESH_SECONDS"
PLOT_DAYS = 90  # the view page plots the runs of this many days
RECENT = 5  # runs kept per view for the overview's recent materializations


def refresh_seconds(environ=None) -> float:
    """``FEATURESTORE_UI_REFRESH_SECONDS``, or 10."""
    return env_seconds(REFRESH_ENV, 10.0, environ)


@dataclass
class ViewHealth:
    view: str
    ttl: timedelta | None
    materialized_until: datetime | None = None
    recent_runs: list[QualityRun] = field(default_factory=list)  # the newest few, oldest first
    drift: list[DriftValue] = field(default_factory=list)
    job: JobStatus | None = None

    @property
    def last_run(self) -> QualityRun | None:
        return self.recent_runs[-1] if self.recent_runs else None

    @property
    def fresh_as_of(self) -> datetime | None:
        times = [t for t in (self.materialized_until, self.job_checkpoint) if t is not None]
        return max(times) if times else None

    @property
    def job_checkpoint(self) -> datetime | None:
        if self.job is None or not self.job.running or not self.job.last_checkpoint_time:
            return None
        return datetime.fromtimestamp(self.job.last_checkpoint_time, UTC)

    def age(self, now: datetime) -> timedelta | None:
        fresh = self.fresh_as_of
        return None if fresh is None else now - fresh

    def stale(self, now: datetime) -> bool:
        age = self.age(now)
        return self.ttl is not None and self.ttl > timedelta(0) and age is not None and age > self.ttl

    @property
    def failing_checks(self) -> list[dict[str, Any]]:
        """The newest run's checks that did not pass."""
        if self.last_run is None:
            return []
        return [c for c in self.last_run.checks if c.get("action") not in (None, "passed")]

    @property
    def drifted(self) -> list[str]:
        return sorted({v.feature for v in self.drift if v.drifted})


class HealthBoard:
    def __init__(self, store, refresh: float | None = None) -> None:
        self.store = store
        self.refresh = refresh_seconds() if refresh is None else refresh
        self.views: dict[str, ViewHealth] = {}
        self.jobs: list[JobStatus] = []
        self.read_at: datetime | None = None
        self._marks: dict[tuple[str, str], str] = {}
        self._refreshed = float("-inf")
        self._lock = threading.Lock()
        self._running = False
        self._plots: dict[str, tuple] = {}  # view -> (fingerprints, charts, runs, drift)
        self._plot_lock = threading.Lock()

    # -- the board ----------------------------------------------------------------------------------
    def current(self, catalog) -> "HealthBoard":
        """The board, read now if never read, else refreshed in the background when old."""
        if self.read_at is None:
            with self._lock:
                if self.read_at is None:
                    self._read(catalog)
            return self
        if time.monotonic() - self._refreshed >= self.refresh and not self._running:
            self._running = True
            threading.Thread(target=self._refresh_quietly, args=(catalog,), daemon=True,
                             name="catalog-health").start()
        return self

    def _refresh_quietly(self, catalog) -> None:
        try:
            with self._lock:
                self._read(catalog)
        except Exception as exc:  # noqa: BLE001 - the pages keep what they have
            log.warning("catalog health not refreshed (%s: %s)", type(exc).__name__, exc)
        finally:
            self._running = False

    def _read(self, catalog) -> None:
        store = self.store
        covered = store.registry.states(coverage.SCOPE)
        jobs = {}
        try:
            jobs = {j.view: j for j in manager.status(store, lag=True)}
        except Exception as exc:  # noqa: BLE001 - a broken job directory hides only the jobs
            log.warning("stream jobs not read (%s: %s)", type(exc).__name__, exc)
        views: dict[str, ViewHealth] = {}
        for name, view in catalog.views.items():
            health = ViewHealth(view=name, ttl=view.ttl, job=jobs.get(name))
            old = self.views.get(name)
            intervals = coverage.decode(covered.get(name))
            health.materialized_until = intervals[-1][1] if intervals else None
            try:
                health.recent_runs, health.drift = self._records(name, old)
            except Exception as exc:  # noqa: BLE001 - one view's damaged records hide only its own
                log.warning("quality records of view %r not read (%s: %s)", name, type(exc).__name__, exc)
                if old is not None:
                    health.recent_runs, health.drift = old.recent_runs, old.drift
            views[name] = health
        self.views = views
        self.jobs = sorted(jobs.values(), key=lambda j: j.view)
        self.read_at = datetime.now(UTC)
        self._refreshed = time.monotonic()

    def _records(self, view: str, old: ViewHealth | None) -> tuple[list[QualityRun], list[DriftValue]]:
        """The view's newest runs and drift run: read again only when their table changed, and then
        only from the newest run seen on."""
        offline = self.store.offline_store
        recent = old.recent_runs if old else []
        drift = old.drift if old else []
        mark = offline.quality.fingerprint(view)
        if self._marks.get(("quality", view)) != mark:
            later = quality_runs.runs(self.store, view, since=recent[-1].started if recent else None)
            seen = {r.run_id for r in recent}
            recent = (recent + [r for r in later if r.run_id not in seen])[-RECENT:]
            self._marks[("quality", view)] = mark
        mark = offline.drift.fingerprint(view)
        if self._marks.get(("drift", view)) != mark:
            newest = drift_records.latest(self.store, view, since=drift[0].computed_at if drift else None)
            drift = newest or drift
            self._marks[("drift", view)] = mark
        return recent, drift

    # -- one view's plots ---------------------------------------------------------------------------
    def plots(self, view: str) -> tuple[list[tuple[Any, str]] | None, list[QualityRun], list[DriftValue]]:
        """The view's quality charts (chart, inline SVG) of its runs of the last ``PLOT_DAYS`` days and
        its newest drift run, drawn again only when its records changed (None without matplotlib);
        plus those runs and drift."""
        offline = self.store.offline_store
        marks = (offline.quality.fingerprint(view), offline.drift.fingerprint(view))
        with self._plot_lock:
            cached = self._plots.get(view)
            if cached is not None and cached[0] == marks:
                return cached[1], cached[2], cached[3]
            since = datetime.now(UTC) - timedelta(days=PLOT_DAYS)
            runs = quality_runs.runs(self.store, view, since=since)
            drift = drift_records.latest(self.store, view)
            rows = [{"feature": v.feature, "statistic": v.statistic, "value": v.value, "threshold": v.bound,
                     "drifted": v.drifted} for v in drift]
            try:
                charts = svg_charts(runs, rows) if runs or rows else []
            except ImportError:  # matplotlib (the quality extra) is not installed: the tables still show
                charts = None
            self._plots[view] = (marks, charts, runs, drift)
            return charts, runs, drift
