"""Prometheus metrics of one app, in its own ``CollectorRegistry`` (several apps in one process, e.g.
in tests, never collide and the global registry stays untouched).

- ``featurestore_http_request_duration_seconds{route,method,status}`` histogram; ``route`` is the route
  template (``/registry/feature-views/{name}``), ``unmatched`` for unknown paths, so cardinality is bounded
- ``featurestore_store_errors_total{kind}`` errors raised by the store, by error class
- ``featurestore_online_lookups_total`` and ``featurestore_online_entity_rows_total``
- ``featurestore_online_invalid_rows_total{view}`` entity rows of lookups answered ``INVALID``: their
  stored row could not be decoded (the server log names each row once)
- ``featurestore_feature_freshness_seconds{view}`` seconds since the newest event timestamp seen in
  lookups of the view (computed at scrape time)
- ``featurestore_pushed_rows_total{push_source}``
- ``featurestore_shape_cache_bytes`` and ``featurestore_shape_cache_plans``: the lookup plans cached per
  distinct request (bounded by ``shape_cache_bytes``, ``serving.limits``)

From the quality records in the offline store, per registered view (``watch_quality``):

- ``featurestore_feature_drift{view,feature,statistic}``: the newest recorded ``featurestore drift`` run's
  statistics (``psi``, ``ks``, ``ks_pvalue``, ``chi2``, ``chi2_pvalue``); ``featurestore_feature_drifted
  {view,feature}`` is 1 when one of them crossed the view's threshold, else 0, and
  ``featurestore_feature_drift_timestamp_seconds{view}`` says when that run was computed
- ``featurestore_check_failed_rows{view,check}``: rows each check failed in the view's newest
  materialization run or stream commit; ``featurestore_quality_run_timestamp_seconds{view}`` is when
  that run ended

The server never computes drift: ``featurestore drift`` records its results and the server reads the
records, at most once per ``FEATURESTORE_QUALITY_METRICS_SECONDS`` (default 30; 0 reads at every
scrape), reading only the runs since the newest it has.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from featurestore import drift_records, quality_runs
from featurestore.drift_records import DriftValue
from featurestore.errors import ConfigError
from featurestore.quality_runs import QualityRun

log = logging.getLogger("featurestore.serving")
QUALITY_REFRESH_ENV = "FEATURESTORE_QUALITY_METRICS_SECONDS"

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Freshness(Collector):
    def __init__(self) -> None:
        self.newest: dict[str, float] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("featurestore_feature_freshness_seconds",
                                   "Seconds since the newest event timestamp seen in online lookups, per view",
                                   labels=["view"])
        now = time.time()
        for view, newest in sorted(self.newest.items()):
            family.add_metric([view], now - newest)
        yield family


class _ShapeCache(Collector):
    def __init__(self, store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        reader = self.store.online_reader
        yield GaugeMetricFamily("featurestore_shape_cache_bytes",
                                "Bytes held by the cached online lookup plans", value=reader.shape_cache_bytes)
        yield GaugeMetricFamily("featurestore_shape_cache_plans",
                                "Online lookup plans cached (one per distinct request)",
                                value=reader.shape_cache_plans)


class _Quality(Collector):
    """Drift and check-failure gauges from the newest recorded runs of each registered view. A view's
    records are read again only when its table's fingerprint changed, and then only the runs from the
    newest one seen on."""

    def __init__(self, store, refresh_seconds: float) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.drift: dict[str, list[DriftValue]] = {}
        self.runs: dict[str, QualityRun] = {}
        self._marks: dict[tuple[str, str], str] = {}  # (area, view) -> the table's fingerprint when read
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < self.refresh_seconds:
                return
            try:
                views = set(self.store.catalog().views)
            except Exception as exc:  # noqa: BLE001 - a scrape answers with what it has
                log.warning("quality metrics not refreshed (%s: %s)", type(exc).__name__, exc)
                views = set(self.drift) | set(self.runs)
            for view in sorted(views):
                try:
                    self._read(view)
                except Exception as exc:  # noqa: BLE001 - one view's damaged records hide only its own
                    log.warning("quality metrics of view %r not refreshed (%s: %s)", view, type(exc).__name__, exc)
            for gone in (set(self.drift) | set(self.runs)) - views:
                self.drift.pop(gone, None)
                self.runs.pop(gone, None)
            self._read_at = time.monotonic()

    def _read(self, view: str) -> None:
        offline = self.store.offline_store
        mark = offline.drift.fingerprint(view)
        if self._marks.get(("drift", view)) != mark:
            newest = self.drift.get(view)
            found = drift_records.latest(self.store, view, since=newest[0].computed_at if newest else None)
            if found:
                self.drift[view] = found
            self._marks[("drift", view)] = mark
        mark = offline.quality.fingerprint(view)
        if self._marks.get(("quality", view)) != mark:
            run = self.runs.get(view)
            later = quality_runs.runs(self.store, view, since=run.started if run else None)
            if later:
                self.runs[view] = later[-1]
            self._marks[("quality", view)] = mark

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self._refresh()
        drift = GaugeMetricFamily("featurestore_feature_drift",
                                  "The newest recorded drift statistic of each feature (featurestore drift)",
                                  labels=["view", "feature", "statistic"])
        drifted = GaugeMetricFamily("featurestore_feature_drifted",
                                    "1 when a drift statistic of the feature crossed the view's threshold in "
                                    "the newest recorded run, else 0", labels=["view", "feature"])
        drift_time = GaugeMetricFamily("featurestore_feature_drift_timestamp_seconds",
                                       "When the view's newest recorded drift run was computed", labels=["view"])
        failed = GaugeMetricFamily("featurestore_check_failed_rows",
                                   "Rows each check failed in the view's newest materialization run or stream "
                                   "commit", labels=["view", "check"])
        run_time = GaugeMetricFamily("featurestore_quality_run_timestamp_seconds",
                                     "When the view's newest materialization run or stream commit ended",
                                     labels=["view"])
        for view, values in sorted(self.drift.items()):
            drift_time.add_metric([view], values[0].computed_at.timestamp())
            features: dict[str, bool] = {}
            for v in values:
                drift.add_metric([view, v.feature, v.statistic], v.value)
                features[v.feature] = features.get(v.feature, False) or v.drifted
            for feature, crossed in sorted(features.items()):
                drifted.add_metric([view, feature], 1.0 if crossed else 0.0)
        for view, run in sorted(self.runs.items()):
            run_time.add_metric([view], run.ended.timestamp())
            for check in run.checks:
                failed.add_metric([view, str(check.get("name"))], float(check.get("rows_failed") or 0))
        yield from (drift, drifted, drift_time, failed, run_time)


def env_seconds(name: str, default: float, environ=None) -> float:
    """Seconds (0 or more) from the environment variable ``name``, or ``default`` when it is unset."""
    text = (os.environ if environ is None else environ).get(name, "").strip()
    try:
        seconds = float(text) if text else default
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"{name}={text!r}: expected seconds (0 or more)")
    return seconds


def quality_refresh_seconds(environ=None) -> float:
    """``FEATURESTORE_QUALITY_METRICS_SECONDS``, or 30."""
    return env_seconds(QUALITY_REFRESH_ENV, 30.0, environ)


class ServingMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._latency = Histogram("featurestore_http_request_duration_seconds",
                                  "HTTP request latency by route template, method and status",
                                  ["route", "method", "status"], buckets=BUCKETS, registry=self.registry)
        self._errors = Counter("featurestore_store_errors", "Errors raised by the store, by error class",
                               ["kind"], registry=self.registry)
        self._lookups = Counter("featurestore_online_lookups", "Online lookup requests served",
                                registry=self.registry)
        self._entity_rows = Counter("featurestore_online_entity_rows", "Entity rows looked up online",
                                    registry=self.registry)
        self._pushed = Counter("featurestore_pushed_rows", "Rows received by /push, by push source",
                               ["push_source"], registry=self.registry)
        self._invalid = Counter("featurestore_online_invalid_rows",
                                "Entity rows of online lookups whose stored row could not be decoded, by view",
                                ["view"], registry=self.registry)
        self._freshness = _Freshness()
        self.registry.register(self._freshness)
        self._children: dict[tuple[str, str, int], object] = {}
        self._lock = threading.Lock()

    def watch_shape_cache(self, store) -> None:
        """Report the size of ``store``'s lookup plan cache at each scrape."""
        self.registry.register(_ShapeCache(store))

    def watch_quality(self, store, refresh_seconds: float | None = None) -> None:
        """Export the newest recorded drift statistics and check failures of ``store``'s views, read
        again at most every ``refresh_seconds`` (default: ``quality_refresh_seconds()``)."""
        self.registry.register(_Quality(store, quality_refresh_seconds() if refresh_seconds is None
                                        else refresh_seconds))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, self._latency.labels(route, method, str(status)))
        child.observe(seconds)

    def store_error(self, kind: str) -> None:
        self._errors.labels(kind).inc()

    def lookup(self, rows: int, newest_by_view: dict[str, datetime | None]) -> None:
        self._lookups.inc()
        self._entity_rows.inc(rows)
        newest = self._freshness.newest
        for view, ts in newest_by_view.items():
            if ts is not None:
                t = ts.timestamp()
                if t > newest.get(view, float("-inf")):
                    newest[view] = t

    def invalid_rows(self, view: str, rows: int) -> None:
        self._invalid.labels(view).inc(rows)

    def pushed(self, push_source: str, rows: int) -> None:
        self._pushed.labels(push_source).inc(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
