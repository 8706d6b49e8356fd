"""Online lookups: the latest value per entity, with Feast's statuses.

``PRESENT`` a fresh value; ``NULL_VALUE`` a fresh row whose value is null; ``NOT_FOUND`` no row for the
entity; ``OUTSIDE_MAX_AGE`` a row older than the view's TTL at read time (its value is not served);
``INVALID`` a stored row that cannot be decoded (damaged, or written with a time out of range): that
entity's features of that view alone are null with this status, the rest of the batch is served, the
response counts it (``OnlineResponse.invalid_rows``), and a warning names the view, the entity and where
the row is stored, once per row. Any later write of the entity (push, stream, materialization) replaces
such a row.
Resolved feature references are cached per registry version, so a lookup costs one online-store read
per view and a little Python. The cache is bounded in bytes (``FeatureStore.online_cache_bytes``,
``DEFAULT_SHAPE_CACHE_BYTES``): least recently used plans are dropped first, so distinct requests
of a hostile client cost CPU, never unbounded memory.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from logging import getLogger
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pyarrow as pa

from featurestore import on_demand
from featurestore import types as fstypes
from featurestore import values as input_values
from featurestore.catalog import Catalog
from featurestore.coverage import intervals as covered_intervals
from featurestore.definitions import FeatureService
from featurestore.errors import InvalidInputError
from featurestore.online_aggregate import finish, view_state_types
from featurestore.ports.online_store import CAP_ASYNC_READ, EventTimes, ReadResult
from featurestore.retrieval import (
    ViewRequest,
    arrow_fields,
    key_columns,
    on_demand_inputs,
    output_names,
    parse_ref,
    resolve_features,
)

if TYPE_CHECKING:
    from featurestore.store import FeatureStore

UTC = timezone.utc
INVALID = "INVALID"  # a stored row that cannot be decoded (see the module docstring)
log = getLogger(__name__)
PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE = "PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"
DEFAULT_SHAPE_CACHE_BYTES = 16 * 2**20


@dataclass
class OnlineResponse:
    """Column-major lookup results: entity key columns first, then features, in request order."""

    feature_names: list[str]
    values: dict[str, list]
    statuses: dict[str, list[str]]
    event_timestamps: dict[str, list[datetime | None]]
    # feature view -> entity rows answered INVALID (their stored row cannot be decoded)
    invalid_rows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, list]:
        return {name: self.values[name] for name in self.feature_names}

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.to_dict(), columns=self.feature_names)

    def to_rest(self) -> dict[str, Any]:
        """Feast's ``/get-online-features`` response shape."""
        results = []
        for name in self.feature_names:
            results.append({
                "values": [_jsonable(v) for v in self.values[name]],
                "statuses": self.statuses[name],
                "event_timestamps": [_iso(t) for t in self.event_timestamps[name]],
            })
        return {"metadata": {"feature_names": self.feature_names}, "results": results}


_EPOCH = "1970-01-01T00:00:00Z"


def _iso(t: datetime | None) -> str:
    if t is None:
        return _EPOCH
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return _iso(v)
    if isinstance(v, bytes):
        import base64

        return base64.b64encode(v).decode()
    if isinstance(v, float) and v != v:
        return None  # NaN is not JSON
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


@dataclass
class _RequestShape:
    """A resolved request: views to read, key columns, output names."""

    requests: list[ViewRequest]
    names: dict[tuple[str, str], str]
    keys: dict[str, list[tuple[str, pa.DataType]]]
    types: dict[str, dict[str, pa.DataType]]
    ttl: dict[str, float | None]
    entity_columns: list[str] = field(default_factory=list)
    # Aggregation views: their aggregations by name, and the stored state's column types.
    aggregations: dict[str, dict] = field(default_factory=dict)
    state: dict[str, dict[str, pa.DataType]] = field(default_factory=dict)
    on_demand: list[ViewRequest] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    # Per view, in request order, what a lookup needs (computed once per shape): name, join keys and
    # their types, features to read with their types (the stored state for aggregation views), output
    # names of the view's features, TTL seconds.
    views: list[tuple] = field(default_factory=list)


class OnlineReader:
    """Serves lookups for one FeatureStore; thread-safe; re-reads the registry when it changes."""

    def __init__(self, store: "FeatureStore", registry_ttl_seconds: float = 1.0):
        self.store = store
        self.registry_ttl = registry_ttl_seconds
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._reported: set[str] = set()  # undecodable rows already logged (bounded)
        self._checked = 0.0
        self._shapes = ShapeCache()

    def catalog(self) -> Catalog:
        """The registry's definitions, re-read at most every ``registry_ttl`` seconds and parsed only
        when the registry version changed."""
        now = time.monotonic()
        if self._catalog is None or now - self._checked > self.registry_ttl:
            with self._lock:
                if self._catalog is None or now - self._checked > self.registry_ttl:
                    catalog = self.store.catalog()
                    if self._catalog is None or catalog.version != self._catalog.version:
                        self._catalog = catalog
                        self._shapes.clear()
                    self._checked = now
        return self._catalog

    def shape(self, features, full_feature_names: bool) -> _RequestShape:
        """What a lookup of ``features`` needs, resolved once per registry version."""
        catalog = self.catalog()
        cache_key = (features.name if isinstance(features, FeatureService) else
                     features if isinstance(features, str) else tuple(features), full_feature_names)
        cached = self._shapes.get(cache_key)
        if cached is not None:
            return cached
        resolved = resolve_features(catalog, features)
        requests = resolved.requests
        offline_only = [r.name for r in requests if not r.view.online]
        if offline_only:
            raise InvalidInputError(f"feature view {offline_only[0]!r} is not served online (online=False)")
        keys = {r.name: key_columns(r.view) for r in requests}
        entity_columns = list(dict.fromkeys(k for r in requests for k, _ in keys[r.name]))
        names = output_names(requests + resolved.on_demand, full_feature_names, entity_columns)
        shape = _RequestShape(
            requests=requests,
            names=names,
            on_demand=resolved.on_demand,
            outputs=[names[parse_ref(r)] for r in dict.fromkeys(resolved.refs)],
            keys=keys,
            types={r.name: dict(arrow_fields(r.view.schema)) for r in requests},
            ttl={r.name: r.view.ttl_seconds for r in requests},
            entity_columns=entity_columns,
        )
        for r in requests:
            if r.view.aggregated:
                shape.aggregations[r.name] = {a.name: a for a in r.view.aggregations}
                shape.state[r.name] = view_state_types(r.view)
        for r in requests:
            name, features = r.name, r.all_features
            if name in shape.aggregations:
                read, types = list(shape.state[name]), shape.state[name]
            else:  # in the view's schema order: one row layout for every order a client lists them in
                position = {f: i for i, f in enumerate(shape.types[name])}
                read = sorted(features, key=position.__getitem__)
                types = {f: shape.types[name][f] for f in read}
            shape.views.append((name, keys[name], [k for k, _ in keys[name]], read, types,
                                [(f, names[(name, f)]) for f in features], shape.ttl[name]))
        self._shapes.put(cache_key, shape, self.store.online_cache_bytes)
        return shape

    @property
    def shape_cache_bytes(self) -> int:
        """Bytes held by the cached lookup plans now (``ShapeCache.bytes``)."""
        return self._shapes.bytes

    @property
    def shape_cache_plans(self) -> int:
        return len(self._shapes)

    def read(self, features: Sequence[str] | FeatureService | str, entity_rows: Any,
             full_feature_names: bool = False, now: datetime | None = None) -> OnlineResponse:
        lookup = self._begin(features, entity_rows, full_feature_names, now)
        online = self.store.online_store
        return self._finish(lookup, [online.read(*args) for args in lookup.reads])

    async def read_async(self, features: Sequence[str] | FeatureService | str, entity_rows: Any,
                         full_feature_names: bool = False, now: datetime | None = None) -> OnlineResponse:
        """``read`` for an event loop: with a backend that has ``CAP_ASYNC_READ`` (Redis), the reads
        of all views are sent at once and awaited without blocking the loop; otherwise as ``read``."""
        lookup = self._begin(features, entity_rows, full_feature_names, now)
        online = self.store.online_store
        if CAP_ASYNC_READ not in online.capabilities or not lookup.reads:
            results = [online.read(*args) for args in lookup.reads]
        else:
            results = await online.read_many_async(lookup.reads)
        return self._finish(lookup, results)

    def _begin(self, features, entity_rows: Any, full_feature_names: bool, now: datetime | None) -> "_Lookup":
        """Validate the request and list the online-store reads it needs (one per view)."""
        shape = self.shape(features, full_feature_names)
        columns = _columns(entity_rows)
        n = _row_count(columns)
        lookup = _Lookup(shape, columns, n, now or datetime.now(UTC))
        for col in shape.entity_columns:
            if col not in columns:
                raise InvalidInputError(f"entities: missing join key {col!r}")
        coerced: dict[str, list] = {}
        tuples: dict[tuple, list] = {}  # views keyed by the same columns share one list of key tuples
        for view, keys, join_keys, read, types, _outs, _ttl in shape.views:
            names = tuple(name for name, _t in keys)
            key_tuples = tuples.get(names)
            if key_tuples is None:
                key_lists = []
                for name, t in keys:
                    if name not in coerced:
                        coerced[name] = _coerce_keys(name, columns[name], t)
                    key_lists.append(coerced[name])
                key_tuples = tuples[names] = list(zip(*key_lists)) if key_lists else [()] * n
            lookup.reads.append((view, join_keys, key_tuples, read, types))
        return lookup

    def _finish(self, lookup: "_Lookup", results: list[ReadResult]) -> OnlineResponse:
        """Statuses (TTL at ``lookup.now``), output names, on-demand features."""
        shape, n, now = lookup.shape, lookup.n, lookup.now
        values: dict[str, list] = {}
        statuses: dict[str, list[str]] = {}
        stamps: dict[str, list] = {}
        invalid_rows: dict[str, int] = {}
        for col in shape.entity_columns:
            values[col] = lookup.columns[col]
            statuses[col] = [PRESENT] * n
            stamps[col] = [None] * n
        for req, (view, *_, outs, ttl), result, read in zip(shape.requests, shape.views, results, lookup.reads):
            if view in shape.aggregations:
                result = _finish_all(shape, req, result, n, now)
            event_ts = result.event_timestamps
            oldest = None if ttl is None else now - timedelta(seconds=ttl)
            # (index, status) of the entities whose row is missing or too old: every feature of theirs
            # is null with that status. Usually few, so the feature lists are patched, not rebuilt.
            if isinstance(event_ts, EventTimes):
                fresh = event_ts.fresh_since(oldest)
                stale = [] if fresh.all() else [
                    (i, NOT_FOUND if event_ts.present is not None and not event_ts.present[i] else OUTSIDE_MAX_AGE)
                    for i in np.flatnonzero(~fresh).tolist()]
            else:
                stale = [(i, NOT_FOUND if t is None else OUTSIDE_MAX_AGE) for i, t in enumerate(event_ts)
                         if t is None or (oldest is not None and t < oldest)]
            invalid = result.invalid
            if invalid:  # such a row reads as absent: its entity is among the stale ones
                stale = [(i, INVALID if i in invalid else status) for i, status in stale]
                invalid_rows[view] = len(invalid)
                self._report_invalid(view, read[1], read[2], invalid)
            complete = result.complete
            for feature, out in outs:
                vals = result.values[feature]
                if feature in complete or None not in vals:
                    sts = [PRESENT] * n
                else:
                    sts = [PRESENT if v is not None else NULL_VALUE for v in vals]
                if stale:
                    vals = list(vals)
                    for i, status in stale:
                        vals[i] = None
                        sts[i] = status
                values[out], statuses[out], stamps[out] = vals, sts, event_ts
        for odfv in shape.on_demand:
            self._run_on_demand(shape, odfv, lookup.columns, values, statuses, stamps, n)
        return OnlineResponse(shape.entity_columns + shape.outputs, values, statuses, stamps, invalid_rows)

    def _report_invalid(self, view: str, join_keys: list[str], keys: list[tuple], invalid: dict[int, str]) -> None:
        """Log each undecodable row once (per reader, while it remembers fewer than 10,000 of them),
        with the command that replaces it."""
        reported = self._reported
        repair = None
        for i, reason in invalid.items():
            if reason in reported:
                continue
            if len(reported) >= 10_000:
                reported.clear()
            reported.add(reason)
            repair = repair or self._repair_command(view)
            entity = ", ".join(f"{k}={v!r}" for k, v in zip(join_keys, keys[i]))
            log.warning("feature view %r, entity %s: %s. Its features are answered INVALID until any new row "
                        "for the entity replaces it (even an older one): %s", view, entity, reason, repair)

    def _repair_command(self, view: str) -> str:
        """How to write the view's rows again: rematerialize the times it was materialized for."""
        try:
            covered = covered_intervals(self.store, view)
        except Exception:  # noqa: BLE001 - a registry hiccup must not fail the lookup that logs this
            covered = []
        if not covered:
            return (f"rematerialize it with `featurestore materialize START END --views {view}` over the times "
                    "its rows came from, or push a row for the entity")
        start, end = covered[0][0].isoformat(), covered[-1][1].isoformat()
        return f"rematerialize it with `featurestore materialize {start} {end} --views {view}`"

    def _run_on_demand(self, shape: _RequestShape, odfv: ViewRequest, columns: dict, values: dict,
                       statuses: dict, stamps: dict, n: int) -> None:
        inputs = on_demand_inputs(odfv, shape.requests, shape.names, lambda name: values[name])
        inputs |= on_demand.request_inputs(odfv.view, columns)
        outputs = on_demand.run(odfv.view, self.store.repo_path, inputs, n)
        for feature in odfv.features:
            out = shape.names[(odfv.name, feature)]
            values[out] = outputs[feature].to_pylist()
            statuses[out] = [PRESENT if v is not None else NULL_VALUE for v in values[out]]
            stamps[out] = [None] * n


class ShapeCache:
    """Resolved lookup plans by request, least recently used first out, bounded by the bytes they hold
    (``plan_bytes``) rather than by their number: one plan of a thousand references weighs as much as
    hundreds of small ones. Thread-safe; a hit costs a dict lookup and a move to the end."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple, tuple[_RequestShape, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple) -> _RequestShape | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        try:
            self._entries.move_to_end(key)
        except KeyError:  # evicted by another thread meanwhile: still a valid plan
            pass
        return entry[0]

    def put(self, key: tuple, shape: _RequestShape, limit: int) -> None:
        """Cache ``shape`` unless it alone is over ``limit``; drop the least recently used plans until
        the total is within ``limit`` again."""
        size = plan_bytes(key, shape)
        if size > limit:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            total = self.bytes - (old[1] if old is not None else 0)
            # Room is made before the plan goes in, and the total is published once: a reader of
            # ``bytes`` (the /metrics gauge) never sees it over ``limit``, not even for an instant.
            while total + size > limit:
                _, (_, dropped) = self._entries.popitem(last=False)
                total -= dropped
            self._entries[key] = (shape, size)
            self.bytes = total + size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0


def plan_bytes(key: tuple, shape: _RequestShape) -> int:
    """The bytes a cached plan keeps alive: its key and every container, string and number the plan
    reaches, with its ``ViewRequest`` objects but not their views (the catalog's, shared by all plans;
    other catalog objects the plan refers to are counted shallowly, a small overestimate)."""
    total = 0
    seen: set[int] = set()
    stack: list = [key, shape]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif isinstance(obj, _RequestShape):
            stack.extend(getattr(obj, f.name) for f in fields(obj))
        elif isinstance(obj, ViewRequest):
            stack.extend((obj.features, obj.hidden))
    return total


@dataclass
class _Lookup:
    """One lookup between validating the request and assembling the response."""

    shape: _RequestShape
    columns: dict[str, list]
    n: int
    now: datetime
    # (view, join keys, key tuples, features, feature types): the arguments of OnlineStore.read
    reads: list[tuple] = field(default_factory=list)


def _finish_all(shape: "_RequestShape", req: ViewRequest, raw: ReadResult, n: int, now: datetime) -> ReadResult:
    """Aggregation values at ``now`` from the stored state of each entity."""
    aggs = shape.aggregations[req.name]
    names = list(shape.state[req.name])
    values: dict[str, list] = {f: [] for f in req.all_features}
    for i in range(n):
        state = {name: raw.values[name][i] for name in names}
        for f in req.all_features:
            values[f].append(finish(aggs[f], state, now) if raw.event_timestamps[i] is not None else None)
    return ReadResult(values, list(raw.event_timestamps), invalid=raw.invalid)


def _columns(entity_rows: Any) -> dict[str, list]:
    """Entity rows as columns: accepts a list of dicts or a dict of lists (the REST shape)."""
    if isinstance(entity_rows, dict):
        return {k: list(v) for k, v in entity_rows.items()}
    if isinstance(entity_rows, (list, tuple)):
        cols: dict[str, list] = {}
        for i, row in enumerate(entity_rows):
            if not isinstance(row, dict):
                raise InvalidInputError(f"entity_rows[{i}] must be a mapping of join key to value")
            if i and set(row) != set(cols):
                raise InvalidInputError(f"entity_rows[{i}] has keys {sorted(row)}, expected {sorted(cols)}")
            for k, v in row.items():
                cols.setdefault(k, []).append(v)
        return cols
    raise InvalidInputError("entity_rows must be a list of mappings or a mapping of lists")


def _row_count(columns: dict[str, list]) -> int:
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise InvalidInputError(f"entities: columns have different lengths {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def _coerce_keys(name: str, values: list, arrow_type: pa.DataType) -> list:
    """A join key's values, checked by ``featurestore.values``: an integer key takes integers only
    (never ``true``, ``1.0`` or text such as ``"1001"``), a string key takes text."""
    if pa.types.is_integer(arrow_type):
        if set(map(type, values)) <= {int}:  # the usual request: integers only, nothing to convert
            return values
        dtype = fstypes.from_arrow(arrow_type)
        return [input_values.scalar(v, dtype, f"entities: join key {name!r}") for v in values]
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        for v in values:
            if not isinstance(v, str):
                raise InvalidInputError(f"entities: join key {name!r} takes strings, got {v!r}")
        return values
    return values
