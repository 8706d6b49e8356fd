"""Push: rows sent by clients go to the online store, the offline store or both.

The rows are validated against the view (unknown or missing columns, values its types do not accept
by ``featurestore.values``, times outside ``featurestore.timestamps``' rules: an error naming the
column; nothing is written then) and written through the same event-time monotonic path as
materialization, so a late or replayed push never overwrites a newer value. Only views fed by a push
source take pushes.

A push source with a Kafka topic (``PushSource(..., bootstrap_servers=, topic=)``) streams instead:
the rows are validated against the columns its views' stream jobs read, exactly as the jobs validate
messages (``featurestore.streaming.events``), and written to the topic (acknowledged by the broker
before ``push`` returns); each view's stream job applies them to both stores, folding them into
aggregations in event-time order. That is the path for views with aggregations.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from featurestore import types as fstypes
from featurestore import values
from featurestore.catalog import Catalog
from featurestore.definitions import FeatureView
from featurestore.errors import InvalidInputError, NotFoundError
from featurestore.ports.engine import CREATED_TS, EVENT_TS
from featurestore.retrieval import key_columns
from featurestore.sources import PushSource
from featurestore.streaming import events
from featurestore.streaming.blueprint import EventColumn, build_blueprint
from featurestore.timestamps import TS

if TYPE_CHECKING:
    from featurestore.store import FeatureStore

TARGETS = ("online", "offline", "online_and_offline")


@dataclass
class PushResult:
    views: list[str]
    rows: int
    online_written: int = 0
    online_skipped: int = 0
    streamed: int = 0  # rows written to the push source's Kafka topic, for its views' stream jobs


def views_for(catalog: Catalog, name: str) -> list[FeatureView]:
    """Views fed by push source ``name`` (or the view called ``name``, if a push source feeds it: a view
    over a batch or Kafka source takes its rows from there, never from a push)."""
    views = catalog.views
    fed = [v for v in views.values() if isinstance(v.source, PushSource) and v.source.name == name]
    if not fed and name in views:
        view = views[name]
        if not isinstance(view.source, PushSource):
            raise InvalidInputError(
                f"feature view {name!r} is fed by {type(view.source).__name__} {view.source.name!r}, not by a "
                f"PushSource, so it cannot be pushed to (rows reach it from its source through materialize"
                f"{' or its stream job' if getattr(view.source, 'streams', False) else ''})")
        fed = [view]
    if not fed:
        raise NotFoundError(f"no push source or feature view named {name!r}")
    return fed


def as_table(rows: Any) -> pa.Table:
    try:
        return _as_table(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidInputError(f"push: the rows cannot form a table: {exc}") from None


def _column(name: str, data: Any) -> pa.Array:
    if isinstance(data, (pa.Array, pa.ChunkedArray)):
        return data
    data = list(data)
    values.check_one_kind(f"push: column {name!r}", data)
    try:
        return pa.array(data)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidInputError(f"push: column {name!r} has values of mixed or unsupported types ({exc})") from None


def _as_table(rows: Any) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, dict):
        lengths = {len(v) for v in rows.values()}
        if len(lengths) > 1:
            raise InvalidInputError(f"push: columns have different lengths {sorted(lengths)}")
        return pa.table({k: _column(k, v) for k, v in rows.items()})
    if isinstance(rows, list):
        return pa.Table.from_pylist(rows)
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        return pa.Table.from_pandas(rows, preserve_index=False)
    raise InvalidInputError(f"push takes a DataFrame, an Arrow table, a dict of lists or a list of dicts, "
                            f"got {type(rows).__name__}")


def conform(view: FeatureView, table: pa.Table) -> pa.Table:
    """The pushed rows as the view's typed columns plus canonical timestamps, or an error naming what
    is wrong (values are checked by ``featurestore.values``, times by ``featurestore.timestamps``)."""
    ts_field, created_field = view.source.timestamp_field, view.source.created_timestamp_field
    keys = [(f.name, f.dtype) for f in view.entity_columns]
    key_names = {k for k, _ in keys}
    expected = dict(keys) | {f.name: f.dtype for f in view.schema if f.name not in key_names}
    expected[ts_field] = fstypes.Timestamp
    if created_field:
        expected[created_field] = fstypes.Timestamp
    unknown = [c for c in table.column_names if c not in expected]
    if unknown:
        raise InvalidInputError(f"push to {view.name!r}: unknown columns {unknown}")
    missing = [c for c in [k for k, _ in keys] + [ts_field] if c not in table.column_names]
    if missing:
        raise InvalidInputError(f"push to {view.name!r}: missing columns {missing}")
    arrays, names = [], []
    for name, dtype in expected.items():
        if name not in table.column_names:
            if name == created_field:
                continue
            arrays.append(pa.nulls(table.num_rows, dtype.to_arrow()))  # a feature not pushed is null
        else:
            arrays.append(values.column(table.column(name), dtype, f"push to {view.name!r}: column {name!r}"))
        names.append(EVENT_TS if name == ts_field else CREATED_TS if name == created_field else name)
    if CREATED_TS not in names:
        arrays.append(pa.nulls(table.num_rows, TS))
        names.append(CREATED_TS)
    out = pa.Table.from_arrays(arrays, names=names)
    for k, _ in keys:
        if out.column(k).null_count:
            raise InvalidInputError(f"push to {view.name!r}: join key {k!r} has null values")
    if out.column(EVENT_TS).null_count:
        raise InvalidInputError(f"push to {view.name!r}: column {ts_field!r} has null values")
    return out


def push(store: "FeatureStore", name: str, rows: Any, to: str = "online") -> PushResult:
    if to not in TARGETS:
        raise InvalidInputError(f"push: 'to' must be one of {TARGETS}, got {to!r}")
    views = views_for(store.online_reader.catalog(), name)
    table = as_table(rows)
    source = views[0].source
    if isinstance(source, PushSource) and source.streams:
        return _push_to_stream(store, name, views, table)
    conformed = [(v, conform(v, table)) for v in views]  # validate every view before writing any
    result = PushResult([v.name for v in views], table.num_rows)
    for view, data in conformed:
        if to in ("online", "online_and_offline"):
            ttl = view.ttl_seconds
            written = store.online_store.write(view.name, [k for k, _ in key_columns(view)], data,
                                               event_ts_column=EVENT_TS, created_ts_column=CREATED_TS,
                                               ttl=None if ttl is None else timedelta(seconds=ttl))
            result.online_written += written.written
            result.online_skipped += written.skipped_stale
        if to in ("offline", "online_and_offline"):
            store.offline_store.appends.append(view.name, data, EVENT_TS)
    return result


def _stream_columns(store: "FeatureStore", view: FeatureView) -> tuple[EventColumn, ...]:
    """The columns the view's stream job reads (``blueprint.build_blueprint``), kept per view
    definition on the store, so a push does not read the source's schema and compile the view's SQL
    again."""
    cache = store.__dict__.setdefault("_stream_columns", {})
    key = (view.name, json.dumps(view.to_spec(), sort_keys=True, default=str))
    if key not in cache:
        cache[key] = build_blueprint(store, view.name, view=view).columns
    return cache[key]


def _stream_messages(store: "FeatureStore", name: str, views: list[FeatureView], table: pa.Table) -> list[str]:
    """The rows as the JSON messages the views' stream jobs read, each checked as the jobs check them."""
    columns: dict[str, EventColumn] = {}
    for view in views:
        for c in _stream_columns(store, view):
            known = columns.get(c.json)
            columns[c.json] = c if known is None else replace(known, required=known.required or c.required)
    unknown = [c for c in table.column_names if c not in columns]
    if unknown:
        raise InvalidInputError(f"push to {name!r}: unknown columns {unknown} (its stream jobs read "
                                f"{sorted(columns)})")
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InvalidInputError(f"push to {name!r}: missing columns {missing}")

    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        return value

    spec = list(columns.values())
    messages = []
    for i, row in enumerate(table.to_pylist()):
        text = json.dumps({k: plain(v) for k, v in row.items()})
        try:
            events.parse(text, spec)
        except events.EventError as exc:
            raise InvalidInputError(f"push to {name!r}: row {i}: {exc}") from None
        messages.append(text)
    return messages


def _push_to_stream(store: "FeatureStore", name: str, views: list[FeatureView], table: pa.Table) -> PushResult:
    from connectors.kafka import KafkaClient, KafkaConfig  # confluent_kafka, only for streaming pushes

    source = views[0].source
    messages = _stream_messages(store, name, views, table)  # validate every row before writing any
    clients = store.__dict__.setdefault("_push_kafka", {})
    client = clients.get(source.bootstrap_servers)
    if client is None:
        client = clients[source.bootstrap_servers] = KafkaClient(KafkaConfig(bootstrap_servers=source.bootstrap_servers))
    written = client.produce(source.topic, messages)
    return PushResult([v.name for v in views], table.num_rows, streamed=written)
