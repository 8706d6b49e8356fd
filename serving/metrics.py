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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

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
