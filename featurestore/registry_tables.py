"""What ``featurestore list`` and ``describe`` show: registry objects as rows (``list_rows``, the
``--json`` form of ``list``) and as rich tables for a terminal. Everything is built from the stored
specs after ``redact``, so a secret written out in a source shows as *** here too."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from featurestore.quality_runs import QualityRun
from transforms.ir import from_spec

KIND_TITLES = {"entity": "entity", "data_source": "source", "feature_view": "feature view",
               "on_demand_feature_view": "on-demand view", "feature_service": "feature service"}
_PLURALS = {"entity": "entities"}
_STREAM_SOURCES = ("kafka", "push")
_DESCRIPTION_WIDTH = 48
_KEYS_WIDTH = 32  # a service's views, a view's tags: whole in --json


def duration(seconds: float | None) -> str:
    """3600 -> ``1h``, 93600 -> ``1d 2h``; None -> ``-``."""
    if seconds is None:
        return "-"
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return " ".join(parts) or "0s"


def expression(spec: dict | None) -> str:
    """A transform/filter spec as the builder expression that made it (``(col('a') > 1)``)."""
    return "-" if spec is None else repr(from_spec(spec))


def _tags(tags: dict | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((tags or {}).items())) or "-"


def _users(snapshot: dict[str, dict[str, dict]], name: str) -> tuple[list[str], list[str]]:
    """(services, on-demand views) that read the view or on-demand view ``name``."""
    services = sorted(s for s, spec in snapshot.get("feature_service", {}).items()
                      if any(p["view"] == name for p in spec.get("features", [])))
    odfvs = sorted(o for o, spec in snapshot.get("on_demand_feature_view", {}).items()
                   if name in spec.get("sources", []))
    return services, odfvs


def _service_feature_count(snapshot: dict[str, dict[str, dict]], spec: dict) -> int:
    count = 0
    for projection in spec.get("features", []):
        if projection.get("features") is not None:
            count += len(projection["features"])
            continue
        view = (snapshot.get("feature_view", {}).get(projection["view"])
                or snapshot.get("on_demand_feature_view", {}).get(projection["view"]) or {})
        count += len(view.get("schema", []))
    return count


def list_rows(kind: str, snapshot: dict[str, dict[str, dict]]) -> list[dict[str, Any]]:
    """One row per object of ``kind`` (sorted by name): name, kind, keys, features, source, owner, tags,
    description. ``keys`` are a view's entities, an entity's join keys or a service's views."""
    rows = []
    for name, spec in sorted(snapshot.get(kind, {}).items()):
        row: dict[str, Any] = {"name": name, "kind": KIND_TITLES.get(kind, kind), "keys": [], "features": None,
                               "source": None, "owner": spec.get("owner", ""), "tags": dict(spec.get("tags") or {}),
                               "description": spec.get("description", "")}
        if kind == "feature_view":
            source = spec.get("source") or {}
            row.update(kind="stream view" if source.get("kind") in _STREAM_SOURCES else "batch view",
                       keys=list(spec.get("entities", [])), features=len(spec.get("schema", [])),
                       source=source.get("name"))
        elif kind == "on_demand_feature_view":
            row.update(kind=f"on-demand view ({spec.get('mode', '?')})", keys=list(spec.get("sources", [])),
                       features=len(spec.get("schema", [])), source=", ".join(spec.get("sources", [])) or None)
        elif kind == "entity":
            row.update(keys=list(spec.get("join_keys", [])))
        elif kind == "data_source":
            row.update(kind=f"{spec.get('kind', '?')} source", source=spec.get("path") or spec.get("table")
                       or spec.get("topic") or spec.get("query"))
        elif kind == "feature_service":
            row.update(keys=[p["view"] for p in spec.get("features", [])],
                       features=_service_feature_count(snapshot, spec))
        rows.append(row)
    return rows


_KEYS_TITLE = {"feature_view": "entities", "entity": "join keys", "feature_service": "views",
               "on_demand_feature_view": "reads", "data_source": "-"}


def list_table(kind: str, rows: list[dict[str, Any]], version: int) -> Table:
    title = KIND_TITLES.get(kind, kind)
    title = _PLURALS.get(title, title + "s") if len(rows) != 1 else title
    table = Table(title=f"{len(rows)} {title} (registry version {version})",
                  title_justify="left")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("kind", no_wrap=True)
    if kind != "data_source":
        table.add_column(_KEYS_TITLE.get(kind, "keys"), max_width=_KEYS_WIDTH, no_wrap=True, overflow="ellipsis")
    if kind in ("feature_view", "on_demand_feature_view", "feature_service"):
        table.add_column("features", justify="right")
    if kind in ("feature_view", "data_source"):
        table.add_column("source" if kind == "feature_view" else "reads")
    table.add_column("owner", min_width=min(40, max((len(r["owner"]) for r in rows), default=1)))
    table.add_column("tags", max_width=_KEYS_WIDTH, no_wrap=True, overflow="ellipsis")
    table.add_column("description", max_width=_DESCRIPTION_WIDTH, no_wrap=True, overflow="ellipsis")
    for row in rows:
        cells = [row["name"], row["kind"]]
        if kind != "data_source":
            cells.append(", ".join(row["keys"]) or "-")
        if kind in ("feature_view", "on_demand_feature_view", "feature_service"):
            cells.append(str(row["features"]))
        if kind in ("feature_view", "data_source"):
            cells.append(row["source"] or "-")
        cells += [row["owner"] or "-", _tags(row["tags"]), row["description"] or ""]
        table.add_row(*(Text(c) for c in cells))  # Text: names and descriptions are not rich markup
    return table


def _fields(rows: list[tuple[str, Any]]) -> Table:
    grid = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, value in rows:
        grid.add_row(label, value if isinstance(value, (Table, Text)) else Text(str(value)))
    return grid


def _dtype(dtype: Any) -> str:
    return dtype if isinstance(dtype, str) else json.dumps(dtype, sort_keys=True)


def _schema_table(title: str, columns: list[dict], keys: list[dict] = ()) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("column", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("description")
    for field in keys:
        note = f"join key{': ' + field['description'] if field.get('description') else ''}"
        table.add_row(Text(field["name"]), Text(_dtype(field["dtype"])), Text(note, style="dim"))
    for field in columns:
        table.add_row(Text(field["name"]), Text(_dtype(field["dtype"])), Text(field.get("description") or ""))
    return table


def _source_text(source: dict | None) -> str:
    if not source:
        return "-"
    where = source.get("path") or source.get("table") or source.get("topic") or source.get("query") or ""
    text = f"{source.get('name')} ({source.get('kind')}{': ' + str(where) if where else ''})"
    if source.get("timestamp_field"):
        text += f", event time {source['timestamp_field']}"
    return text


def _aggregations(aggs: list[dict]) -> Table:
    table = Table(title="aggregations", title_justify="left")
    for title in ("feature", "function", "of column", "window"):
        table.add_column(title, no_wrap=title != "feature")
    for a in aggs:
        window = a.get("window_seconds")
        table.add_row(Text(a.get("name", "")), Text(a.get("function", "")), Text(str(a.get("column", ""))),
                      Text("lifetime" if window is None else duration(window)))
    return table


def _check_text(check: dict) -> str:
    if "expr" in check:
        rule = expression(check["expr"])
    elif check.get("kind") == "row_count" or "min" in check or "max" in check:
        rule = f"row count in [{check.get('min')}, {check.get('max')}]"
    elif "max_age_seconds" in check:
        rule = f"newest row younger than {duration(check['max_age_seconds'])}"
    else:
        rule = json.dumps(check, sort_keys=True)
    return f"{check.get('name')}: {rule} (on fail: {check.get('on_fail')})"


def _when(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def quality_text(run: QualityRun | None) -> Text:
    if run is None:
        return Text("no runs recorded")
    text = Text(f"{run.kind} {_when(run.started)} .. {_when(run.ended)}: {run.rows_written} of {run.rows_in} "
                "rows written")
    for check in run.checks:
        action = check.get("action", "?")
        style = "bold red" if action in ("failed", "dropped") else "yellow" if action == "warned" else "green"
        text.append(f"\n{check.get('name')}: ")
        text.append(action, style=style)
        text.append(f" ({check.get('rows_failed', 0)} of {check.get('rows_checked', 0)} rows failed)")
    return text


_SHOWN = {"name", "description", "owner", "tags", "schema", "entity_columns", "event_columns", "source", "entities",
          "ttl_seconds", "online", "transform", "filter", "aggregations", "checks", "features", "join_keys",
          "sources", "request_schema", "mode", "udf", "kind"}


def describe_view(kind: str, name: str, spec: dict, snapshot: dict[str, dict[str, dict]],
                  quality: QualityRun | None | str = None) -> Group:
    """A readable layout of one (redacted) spec. ``quality`` is the view's latest run, None when it has
    none, or a message saying why it could not be read."""
    rows: list[tuple[str, Any]] = [("description", spec.get("description") or "-")]
    parts: list[Any] = []
    if "owner" in spec or kind in ("feature_view", "feature_service"):
        rows.append(("owner", spec.get("owner") or "-"))
    rows.append(("tags", _tags(spec.get("tags"))))
    services, odfvs = _users(snapshot, name)
    if kind == "feature_view":
        entities = snapshot.get("entity", {})
        rows.append(("entities", ", ".join(f"{e} ({', '.join(entities.get(e, {}).get('join_keys', []))})"
                                           for e in spec.get("entities", [])) or "-"))
        rows.append(("source", _source_text(spec.get("source"))))
        rows.append(("filter", expression(spec.get("filter"))))
        transforms = spec.get("transform") or []
        rows.append(("transforms", "\n".join(expression(t) for t in transforms) if transforms else "-"))
        rows.append(("ttl", duration(spec.get("ttl_seconds"))))
        rows.append(("online", "yes" if spec.get("online") else "no"))
        rows.append(("checks", "\n".join(_check_text(c) for c in spec.get("checks") or []) or "-"))
        if spec.get("drift_thresholds"):
            rows.append(("drift thresholds", json.dumps(spec["drift_thresholds"], sort_keys=True)))
        rows.append(("used by services", ", ".join(services) or "-"))
        rows.append(("read by on-demand views", ", ".join(odfvs) or "-"))
        rows.append(("latest quality run", quality if isinstance(quality, str) else quality_text(quality)))
        parts.append(_schema_table("schema", spec.get("schema", []), spec.get("entity_columns", [])))
        if spec.get("aggregations"):
            parts.append(_aggregations(spec["aggregations"]))
            if spec.get("event_columns"):
                parts.append(_schema_table("event columns (aggregated)", spec["event_columns"]))
    elif kind == "on_demand_feature_view":
        rows.append(("reads", ", ".join(spec.get("sources", [])) or "-"))
        rows.append(("mode", spec.get("mode", "-")))
        udf = spec.get("udf") or {}
        if udf:
            rows.append(("function", f"{udf.get('module')}:{udf.get('function')}"))
        rows.append(("used by services", ", ".join(services) or "-"))
        parts.append(_schema_table("schema", spec.get("schema", [])))
        if spec.get("request_schema"):
            parts.append(_schema_table("request fields", spec["request_schema"]))
    elif kind == "feature_service":
        table = Table(title="features", title_justify="left")
        table.add_column("view", no_wrap=True)
        table.add_column("features")
        for p in spec.get("features", []):
            table.add_row(Text(p["view"]), Text("all" if p.get("features") is None else ", ".join(p["features"])))
        rows.append(("features", str(_service_feature_count(snapshot, spec))))
        parts.append(table)
    elif kind == "entity":
        rows.append(("join keys", ", ".join(spec.get("join_keys", [])) or "-"))
        views = sorted(v for v, s in snapshot.get("feature_view", {}).items() if name in s.get("entities", []))
        rows.append(("views", ", ".join(views) or "-"))
    elif kind == "data_source":
        rows.append(("kind", spec.get("kind", "-")))
        views = sorted(v for v, s in snapshot.get("feature_view", {}).items()
                       if (s.get("source") or {}).get("name") == name)
        rows.append(("read by views", ", ".join(views) or "-"))
    for key in sorted(set(spec) - _SHOWN):  # anything else the spec holds, as JSON
        value = spec[key]
        if value not in (None, {}, [], ""):
            rows.append((key.replace("_", " "), value if isinstance(value, str) else json.dumps(value, sort_keys=True)))
    heading = Text(f"{KIND_TITLES.get(kind, kind)} ", style="bold")
    heading.append(name, style="bold cyan")
    return Group(heading, _fields(rows), *parts)
