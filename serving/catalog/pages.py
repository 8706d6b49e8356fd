"""The catalog's pages, each a function of the index (and the health board) returning HTML."""

from __future__ import annotations

import difflib
import json
from datetime import datetime, timezone
from typing import Any

from featurestore import checks as checks_mod
from featurestore.registry.store import ObjectVersion
from featurestore.secrets import redact
from serving.catalog import lineage
from serving.catalog.health import HealthBoard, ViewHealth
from serving.catalog.html import (
    duration,
    e,
    facts,
    link,
    object_url,
    page,
    section,
    status,
    table,
    tags,
    url,
    when,
)
from serving.catalog.index import KINDS, CatalogIndex, Entry, Hit
from transforms.ir import render

UTC = timezone.utc
RECENT_RUNS = 20


class PageNotFound(Exception):
    """A page that does not exist; the message says what is missing."""


class BadRequest(Exception):
    """A page asked for with parameters it cannot use; the message names the parameter."""


def _frame(index: CatalogIndex, project: str, title: str, body: str, **kw: Any) -> str:
    return page(title, body, version=index.version, project=project, **kw)


# ------------------------------------------------------------------------------------------ overview


def overview(index: CatalogIndex, board: HealthBoard, project: str) -> str:
    now = datetime.now(UTC)
    counts = "".join(f'<li><a href="/ui/{kind}"><b>{len(index.by_kind[kind])}</b> {e(plural)}</a></li>'
                     for kind, (_, _, plural) in KINDS.items())
    body = [f'<ul class="counts" aria-label="What the registry holds">{counts}</ul>']
    attention = []
    for name, h in sorted(board.views.items()):
        reasons = []
        if h.stale(now):
            reasons.append(status(f"stale: data {duration(h.age(now))} old, TTL {duration(h.ttl)}", "alert"))
        for c in h.failing_checks:
            level = "alert" if c.get("action") == "failed" else "warn"
            reasons.append(status(f"check {c.get('name')} {c.get('action')} ({c.get('rows_failed', 0):,} rows)",
                                  level))
        if h.drifted:
            reasons.append(status(f"drifted: {', '.join(h.drifted)}", "warn"))
        if reasons:
            attention.append((link("views", name), " ".join(reasons)))
    body.append(section("Needs attention", table(["View", "Why"], attention, empty="Every view is fresh and passes its checks."),
                        "attention"))
    runs = sorted(((name, run) for name, h in board.views.items() for run in h.recent_runs),
                  key=lambda item: item[1].ended, reverse=True)[:RECENT_RUNS]
    rows = [(link("views", name), e(run.kind), when(run.ended), f"{run.rows_in:,}", f"{run.rows_written:,}",
             _checks_summary(run.checks)) for name, run in runs]
    body.append(section("Recent materializations", table(
        ["View", "Kind", "Ended", "Rows read", "Rows written", "Checks"], rows,
        empty="No materialization or stream commit has recorded a run yet."), "runs"))
    jobs = [(link("views", j.view), status("running", "ok") if j.running else status(
        "stopped" + (f" (exit {j.exit_code})" if j.exit_code not in (None, 0) else ""),
        "alert" if j.exit_code not in (None, 0) else "warn"),
        e("unknown" if j.lag is None else f"{j.lag:,}"), when(datetime.fromtimestamp(j.last_checkpoint_time, UTC))
        if j.last_checkpoint_time else "never", _failures(j.counters)) for j in board.jobs]
    body.append(section("Stream jobs", table(["View", "State", "Lag (records)", "Last checkpoint", "Failures"], jobs,
                                             empty="No stream job was started in this repo."), "jobs"))
    if board.read_at is not None:
        body.append(f'<p class="muted">Health read {when(board.read_at)}.</p>')
    return _frame(index, project, "Overview", "".join(body), active="overview")


def _checks_summary(outcomes: list[dict]) -> str:
    if not outcomes:
        return '<span class="muted">no checks</span>'
    bad = [c for c in outcomes if c.get("action") not in (None, "passed")]
    if not bad:
        return status(f"{len(outcomes)} passed", "ok")
    return " ".join(status(f"{c.get('name')} {c.get('action')}", "alert" if c.get("action") == "failed" else "warn")
                    for c in bad)


def _failures(counters: dict) -> str:
    bad = {k: v for k, v in counters.items()
           if any(w in k for w in ("fail", "dead", "error", "late", "invalid", "dropped")) and v not in (0, None, "0")}
    return e(", ".join(f"{k}={v}" for k, v in sorted(bad.items()))) or '<span class="muted">none</span>'


# ------------------------------------------------------------------------------------------ search


def search_results(hits: list[Hit]) -> list[dict]:
    return [{"kind": h.entry.kind, "noun": h.entry.noun, "name": h.entry.name, "url": object_url(h.entry.kind, h.entry.name),
             "description": h.entry.description, "owner": h.entry.owner, "tags": h.entry.tags, "matched": h.matched}
            for h in hits]


def search(index: CatalogIndex, project: str, q: str, kind: str, tag: str, owner: str) -> str:
    if kind and kind not in KINDS:
        raise BadRequest(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    hits = index.search(q, kind, tag, owner)
    kinds = "".join(f'<option value="{k}"{" selected" if k == kind else ""}>{e(p)}</option>'
                    for k, (_, _, p) in KINDS.items())
    owners = "".join(f'<option{" selected" if o == owner else ""}>{e(o)}</option>' for o in index.owners)
    tag_list = "".join(f'<option value="{e(t)}">' for t in index.tags)
    form = f"""<form class="filters" action="/ui/search" method="get" role="search" aria-label="Search with filters">
<div><label for="sq">Words</label><input id="sq" name="q" type="search" value="{e(q)}" data-live="results"></div>
<div><label for="skind">Kind</label><select id="skind" name="kind"><option value="">any</option>{kinds}</select></div>
<div><label for="stag">Tag</label><input id="stag" name="tag" value="{e(tag)}" list="tag-list" placeholder="key or key=value">
<datalist id="tag-list">{tag_list}</datalist></div>
<div><label for="sowner">Owner</label><select id="sowner" name="owner"><option value="">any</option>{owners}</select></div>
<button type="submit">Search</button></form>"""
    items = "".join(_result(h) for h in hits[:200])
    more = f'<p class="muted">Showing 200 of {len(hits)}; add words or filters.</p>' if len(hits) > 200 else ""
    listing = (f'<ol class="results" id="results">{items}</ol>{more}' if hits
               else '<ol class="results" id="results"></ol><p class="muted">Nothing matches.</p>')
    found = f'<p id="found" role="status">{len(hits)} found</p>'
    return _frame(index, project, "Search", form + found + listing, active="search", q=q)


def _result(hit: Hit) -> str:
    entry = hit.entry
    meta = [e(entry.noun)]
    if entry.owner:
        meta.append("owner " + e(entry.owner))
    return (f'<li><a href="{e(object_url(entry.kind, entry.name))}">{e(entry.name)}</a> '
            f'<span class="muted">{" · ".join(meta)}</span>'
            + (f"<p>{e(entry.description)}</p>" if entry.description else "")
            + (f"<p>{tags(entry.tags)}</p>" if entry.tags else "") + "</li>")


# ------------------------------------------------------------------------------------------ lists


def kind_list(index: CatalogIndex, project: str, kind: str) -> str:
    if kind not in KINDS:
        raise PageNotFound(f"there is no kind {kind!r} (kinds: {', '.join(KINDS)})")
    rows = [(link(kind, x.name), e(x.description), e(x.owner), tags(x.tags)) for x in index.by_kind[kind]]
    body = table(["Name", "Description", "Owner", "Tags"], rows, empty=f"No {KINDS[kind][2].lower()} are registered.")
    return _frame(index, project, KINDS[kind][2], body, active=kind)


# ------------------------------------------------------------------------------------------ objects


def _entry(index: CatalogIndex, kind: str, name: str) -> Entry:
    if kind not in KINDS:
        raise PageNotFound(f"there is no kind {kind!r} (kinds: {', '.join(KINDS)})")
    entry = index.get(kind, name)
    if entry is None:
        raise PageNotFound(f"{KINDS[kind][1]} {name!r} is not in the registry (version {index.version})")
    return entry


def object_page(index: CatalogIndex, board: HealthBoard, project: str, kind: str, name: str) -> str:
    entry = _entry(index, kind, name)
    head = [("Kind", e(entry.noun))]
    if entry.description:
        head.append(("Description", e(entry.description)))
    head += [("Owner", e(entry.owner) or '<span class="muted">none</span>'), ("Tags", tags(entry.tags))]
    body = {"entities": _entity, "sources": _source, "views": _view, "on-demand-views": _on_demand,
            "services": _service}[kind](index, board, entry, head)
    body += section("Lineage", '<div class="graph">' + lineage.around(index, entry.key) + "</div>"
                    + '<p><a href="/ui/lineage">The whole lineage graph</a></p>', "lineage")
    body += section("History", f'<p><a href="{e(object_url(kind, name, "/history"))}">Versions of this '
                    f"{e(entry.noun)} and the differences between them</a></p>", "history")
    return _frame(index, project, f"{entry.name}", body, active=kind)


def _used_by(index: CatalogIndex, entry: Entry, title: str = "Used by") -> str:
    rows = [(link(x.kind, x.name), e(x.noun), e(x.description)) for x in index.related(entry.key, "down")]
    return section(title, table(["Name", "Kind", "Description"], rows, empty="Nothing uses it."), "used-by")


def _entity(index, board, entry, head) -> str:
    head.append(("Join keys", ", ".join(f"<code>{e(k)}</code>" for k in entry.obj.join_keys)))
    return facts(head) + _used_by(index, entry, "Feature views keyed by it")


def _source_facts(spec: dict) -> list[tuple[str, str]]:
    out = []
    for key, value in spec.items():
        if key in ("name", "description") or value in (None, "", {}, []):
            continue
        text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
        out.append((key.replace("_", " ").capitalize(), f"<code>{e(text)}</code>"))
    return out


def _source(index, board, entry, head) -> str:
    return facts(head + _source_facts(entry.spec)) + _used_by(index, entry, "Feature views reading it")


def _schema_table(fields, role: str) -> str:
    rows = [(f"<code>{e(f.name)}</code>", f"<code>{e(_dtype(f.dtype))}</code>", e(role), e(f.description))
            for f in fields]
    return table(["Column", "Type", "Role", "Description"], rows, empty="No columns.")


def _dtype(dtype) -> str:
    return repr(dtype)


def _view(index, board: HealthBoard, entry, head) -> str:
    view = entry.obj
    now = datetime.now(UTC)
    source = view.source
    health = board.views.get(view.name) or ViewHealth(view=view.name, ttl=view.ttl)
    head += [("Entities", ", ".join(link("entities", n) for n in view.entity_names) or "none"),
             ("Source", f'{link("sources", source.name)} <span class="muted">({e(source.kind)})</span>'),
             ("TTL", e(duration(view.ttl))), ("Online", "yes" if view.online else "no")]
    parts = [facts(head)]
    keys = {f.name for f in view.entity_columns}
    fields = list(view.entity_columns) + [f for f in view.schema if f.name not in keys]
    aggregations = {a.name: a for a in view.aggregations}

    def about(f) -> str:
        a = aggregations.get(f.name)
        made = f" ({a.function} of {a.column} over {_window(a.window)})" if a is not None and f.description else (
            f"{a.function} of {a.column} over {_window(a.window)}" if a is not None else "")
        return e(f.description + made)

    schema_rows = [(f"<code>{e(f.name)}</code>", f"<code>{e(_dtype(f.dtype))}</code>",
                    "join key" if f.name in keys else "feature", about(f)) for f in fields]
    named = {f.name for f in fields}
    for a in view.aggregations:
        if a.name not in named:
            schema_rows.append((f"<code>{e(a.name)}</code>", '<span class="muted">aggregation</span>', "feature",
                                e(f"{a.function} of {a.column} over {_window(a.window)}")))
    parts.append(section("Schema", table(["Column", "Type", "Role", "Description"], schema_rows,
                                         empty="No columns."), "schema"))
    logic = []
    if view.filter is not None:
        logic.append(("Filter (rows kept)", f"<code>{e(render(view.filter))}</code>"))
    for i, t in enumerate(view.transform, 1):
        logic.append((f"Transform {i}", f"<code>{e(render(t))}</code>"))
    body = facts(logic) if logic else '<p class="muted">The source\'s columns as they are.</p>'
    if view.aggregations:
        body += table(["Feature", "Function", "Column", "Window"],
                      [(f"<code>{e(a.name)}</code>", e(a.function), f"<code>{e(a.column)}</code>", e(_window(a.window)))
                       for a in view.aggregations], caption="Aggregations")
    parts.append(section("Filters, transforms and aggregations", body, "logic"))
    fresh = health.fresh_as_of
    age = health.age(now)
    level = ("alert" if health.stale(now) else "ok") if fresh is not None else "warn"
    word = "stale" if health.stale(now) else ("fresh" if fresh is not None else "never materialized")
    fresh_facts = [("State", status(word, level)), ("Data up to", when(fresh)),
                   ("Age", e(duration(age)) if age is not None else "unknown"), ("TTL", e(duration(view.ttl)))]
    if health.job is not None:
        job = health.job
        fresh_facts.append(("Stream job", status("running", "ok") if job.running else status("stopped", "warn")))
        fresh_facts.append(("Stream lag", e("unknown" if job.lag is None else f"{job.lag:,} records")))
    parts.append(section("Freshness", facts(fresh_facts), "freshness"))
    parts.append(section("Checks", _checks(view, health), "checks"))
    charts, runs, drift = board.plots(view.name)
    parts.append(section("Statistics and drift", _plots(charts, runs, drift), "plots"))
    parts.append(_used_by(index, entry))
    return "".join(parts)


def _window(window) -> str:
    return "all time" if window is None else duration(window)


def _check_rule(check) -> str:
    if check.kind == checks_mod.ROW:
        return f"<code>{e(render(check.expr))}</code>"
    if check.kind == checks_mod.ROW_COUNT:
        return e(f"row count between {check.min if check.min is not None else 0} and "
                 f"{check.max if check.max is not None else 'any'}")
    return e(f"newest event at most {duration(check.max_age)} old")


def _checks(view, health: ViewHealth) -> str:
    latest = {c.get("name"): c for c in (health.last_run.checks if health.last_run else [])}
    rows = []
    for check in view.checks:
        got = latest.get(check.name)
        result = status("not run yet", "warn") if got is None else status(
            str(got.get("action")), "ok" if got.get("action") == "passed" else
            ("alert" if got.get("action") == "failed" else "warn"))
        failed = "" if got is None else f"{int(got.get('rows_failed') or 0):,} of {int(got.get('rows_checked') or 0):,}"
        rows.append((e(check.name), _check_rule(check), e(check.on_fail), result, failed))
    note = (f'<p class="muted">Latest run: {e(health.last_run.kind)} ended {when(health.last_run.ended)}.</p>'
            if health.last_run else "")
    return table(["Check", "Rule", "On failure", "Latest result", "Rows failed"], rows,
                 empty="This view declares no checks.") + note


def _plots(charts, runs, drift) -> str:
    if charts is None:
        figures = ('<p class="muted">Charts need matplotlib: <code>pip install \'featurestore[quality]\'</code>.'
                   "</p>")
        charts = []
    else:
        figures = ""
    if not charts and not drift and not figures:
        return '<p class="muted">Nothing to plot: no run with checks or statistics and no drift result in the last 90 days.</p>'
    figures += "".join(f'<figure class="chart" id="chart-{e(c.key)}">{svg}<figcaption id="{e(c.key)}-caption">'
                      f"{e(c.description)}</figcaption></figure>" for c, svg in charts)
    text = f"<p>{len(runs)} runs plotted" + (f"; newest drift run {when(drift[0].computed_at)}" if drift else "") + ".</p>"
    drift_rows = [(f"<code>{e(v.feature)}</code>", e(v.statistic), f"{v.value:.4g}",
                   "" if v.bound is None else f"{v.bound:.4g}", status("drifted", "alert") if v.drifted else status("ok", "ok"))
                  for v in drift]
    return (text + f'<div class="charts">{figures}</div>'
            + (table(["Feature", "Statistic", "Value", "Bound", "Judged"], drift_rows, caption="Newest drift run")
               if drift_rows else ""))


def _on_demand(index, board, entry, head) -> str:
    od = entry.obj
    head += [("Reads", ", ".join(link("views", s) for s in od.sources) or "only the request"),
             ("Mode", e(od.mode)), ("Function", f"<code>{e(od.udf.module)}.{e(od.udf.function)}</code>")]
    parts = [facts(head), section("Schema", _schema_table(od.schema, "feature"), "schema")]
    if od.request_schema:
        parts.append(section("Request data", _schema_table(od.request_schema, "sent with the request"), "request"))
    parts.append(_used_by(index, entry))
    return "".join(parts)


def _service(index, board, entry, head) -> str:
    service = entry.obj
    rows = []
    for p in service.projections():
        kind = "views" if p.view in index.catalog.views else "on-demand-views"
        rows.append((link(kind, p.view), e(KINDS[kind][1]),
                     "every feature" if p.features is None else ", ".join(f"<code>{e(f)}</code>" for f in p.features)))
    return facts(head) + section("Features", table(["From", "Kind", "Features"], rows), "features")


# ------------------------------------------------------------------------------------------ history


def history(index: CatalogIndex, project: str, kind: str, name: str, versions: list[ObjectVersion]) -> str:
    if kind not in KINDS:
        raise PageNotFound(f"there is no kind {kind!r} (kinds: {', '.join(KINDS)})")
    if not versions:
        raise PageNotFound(f"{KINDS[kind][1]} {name!r} was never applied")
    diff_url = object_url(kind, name, "/diff")
    rows = []
    for i, v in enumerate(reversed(versions)):
        previous = "" if v.version == 1 else (f'<a href="{e(url(diff_url, a=v.version - 1, b=v.version))}">'
                                              f"changes from version {v.version - 1}</a>")
        rows.append((f"<b>{v.version}</b>", str(v.registry_version), when(v.applied_at),
                     status("deleted", "warn") if v.deleted else ("current" if i == 0 else ""), previous))
    last = versions[-1].version

    def options(selected: int) -> str:
        return "".join(f'<option value="{v.version}"{" selected" if v.version == selected else ""}>{v.version}</option>'
                       for v in versions)

    form = (f'<form class="filters" action="{e(diff_url)}" method="get" aria-label="Compare two versions">'
            f'<div><label for="da">From version</label><select id="da" name="a">{options(max(last - 1, 1))}</select></div>'
            f'<div><label for="db">To version</label><select id="db" name="b">{options(last)}</select></div>'
            '<button type="submit">Compare</button></form>')
    body = (f'<p>{link(kind, name) if index.get(kind, name) else e(name)} · {len(versions)} versions</p>' + form
            + table(["Version", "Registry version", "Applied", "State", "Diff"], rows, caption="Versions, newest first"))
    return _frame(index, project, f"History of {name}", body, active=kind)


def _version(versions: list[ObjectVersion], given: str | None, param: str) -> ObjectVersion:
    try:
        number = int(given or "")
    except ValueError:
        raise BadRequest(f"{param}={given!r}: expected a version number (1..{len(versions)})") from None
    for v in versions:
        if v.version == number:
            return v
    raise BadRequest(f"{param}={number}: there is no such version (1..{len(versions)})")


def pretty(spec: dict | None) -> list[str]:
    if spec is None:
        return ["(deleted)"]
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def diff(index: CatalogIndex, project: str, kind: str, name: str, versions: list[ObjectVersion],
         a: str | None, b: str | None) -> str:
    if kind not in KINDS:
        raise PageNotFound(f"there is no kind {kind!r} (kinds: {', '.join(KINDS)})")
    if not versions:
        raise PageNotFound(f"{KINDS[kind][1]} {name!r} was never applied")
    old, new = _version(versions, a, "a"), _version(versions, b, "b")
    left = pretty(None if old.deleted else redact(old.spec))
    right = pretty(None if new.deleted else redact(new.spec))
    lines = list(difflib.unified_diff(left, right, f"version {old.version}", f"version {new.version}", n=4,
                                      lineterm=""))
    out = []
    for line in lines[2:]:
        if line.startswith("@@"):
            out.append(f'<span class="hunk">{e(line)}</span>')
        elif line.startswith("+"):
            out.append(f'<ins><span class="sr">added: </span>{e(line)}</ins>')
        elif line.startswith("-"):
            out.append(f'<del><span class="sr">removed: </span>{e(line)}</del>')
        else:
            out.append(f"<span>{e(line)}</span>")
    added = sum(1 for x in lines[2:] if x.startswith("+"))
    removed = sum(1 for x in lines[2:] if x.startswith("-"))
    summary = (f"<p>Version {old.version} ({when(old.applied_at)}) → version {new.version} ({when(new.applied_at)}): "
               f'<span class="added">{added} lines added</span>, <span class="removed">{removed} removed</span>. '
               f'<a href="{e(object_url(kind, name, "/history"))}">All versions</a></p>')
    text = ('<pre class="diff" aria-label="Unified diff of the two specs">' + "".join(out) + "</pre>" if out
            else '<p class="muted">The two versions are the same.</p>')
    return _frame(index, project, f"{name}: version {old.version} → {new.version}", summary + text, active=kind)


# ------------------------------------------------------------------------------------------ lineage


def lineage_page(index: CatalogIndex, project: str, kind: str | None = None, name: str | None = None) -> str:
    if kind is None:
        svg = lineage.whole(index)
        title = "Lineage"
        intro = "<p>Sources feed feature views, views feed on-demand views, and both feed services. Select a node to open it.</p>"
    else:
        entry = _entry(index, kind, name or "")
        svg = lineage.around(index, entry.key)
        title = f"Lineage of {entry.name}"
        intro = f'<p>Everything {link(kind, entry.name)} reads from and everything that reads it.</p>'
    legend = ('<ul class="legend" aria-label="Legend">' + "".join(
        f'<li class="kind-{k}"><span aria-hidden="true"></span>{e(KINDS[k][2])}</li>'
        for k in ("sources", "views", "on-demand-views", "services")) + "</ul>")
    return _frame(index, project, title, intro + legend + f'<div class="graph">{svg}</div>', active="lineage")


def not_found(message: str, project: str = "") -> str:
    return page("Not found", f"<p>{e(message)}</p><p><a href=\"/ui\">Back to the overview</a></p>", project=project)


def bad_request(message: str, project: str = "") -> str:
    return page("Bad request", f"<p>{e(message)}</p><p><a href=\"/ui\">Back to the overview</a></p>", project=project)


def login(message: str = "", next_url: str = "/ui", project: str = "") -> str:
    note = f'<p class="status alert" role="alert">{e(message)}</p>' if message else ""
    body = f"""{note}<p>This catalog needs an API key with the <code>read</code> scope.</p>
<form class="login" method="post" action="/ui/login">
<input type="hidden" name="next" value="{e(next_url)}">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required>
<button type="submit">Open the catalog</button>
</form>
<p class="muted">The key is kept in a cookie for this site only, until the browser closes.</p>"""
    return page("Sign in", body, project=project)
