"""The catalog's page frame and small HTML pieces. Every text from the registry or the stores passes
through ``e`` (``html.escape``) before it reaches a page."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from html import escape
from typing import Iterable, Sequence
from urllib.parse import quote, urlencode

from serving.catalog.index import KINDS

UTC = timezone.utc


def e(value: object) -> str:
    return escape("" if value is None else str(value))


def url(path: str, **query: object) -> str:
    given = {k: v for k, v in query.items() if v not in (None, "")}
    return path + ("?" + urlencode(given) if given else "")


def object_url(kind: str, name: str, tail: str = "") -> str:
    return f"/ui/{kind}/{quote(name, safe='')}{tail}"


def link(kind: str, name: str) -> str:
    return f'<a href="{e(object_url(kind, name))}">{e(name)}</a>'


def when(value: datetime | None) -> str:
    if value is None:
        return "never"
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return f'<time datetime="{value.isoformat()}">{value.strftime("%Y-%m-%d %H:%M UTC")}</time>'


def duration(value: timedelta | float | None) -> str:
    if value is None:
        return "none"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            whole = seconds / size
            return f"{whole:.0f} {unit}" if whole >= 10 or whole == int(whole) else f"{whole:.1f} {unit}"
    return f"{seconds:.0f} s"


def tags(values: dict[str, str]) -> str:
    if not values:
        return '<span class="muted">none</span>'
    return " ".join(f'<a class="tag" href="{e(url("/ui/search", tag=f"{k}={v}"))}">{e(k)}={e(v)}</a>'
                    for k, v in sorted(values.items()))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], caption: str = "", empty: str = "None.",
          css: str = "") -> str:
    """A table of already-escaped cells (callers escape with ``e``)."""
    rows = list(rows)
    if not rows:
        return f'<p class="muted">{e(empty)}</p>'
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return (f'<div class="scroll"><table class="{css}">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def facts(items: Sequence[tuple[str, str]]) -> str:
    """A definition list of (label, already-escaped value)."""
    return '<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def section(title: str, body: str, ident: str) -> str:
    return f'<section aria-labelledby="h-{ident}"><h2 id="h-{ident}">{e(title)}</h2>{body}</section>'


def status(label: str, level: str) -> str:
    """A status word with its level (ok, warn, alert) in its class and its text (not colour alone)."""
    return f'<span class="status {level}">{e(label)}</span>'


def page(title: str, body: str, *, active: str = "", q: str = "", version: int | None = None,
         project: str = "") -> str:
    nav = [("/ui", "Overview", "overview"), ("/ui/search", "Search", "search"), ("/ui/lineage", "Lineage", "lineage")]
    nav += [(f"/ui/{kind}", plural, kind) for kind, (_, _, plural) in KINDS.items()]
    links = "".join(f'<li><a href="{href}"{" aria-current=page" if key == active else ""}>{e(text)}</a></li>'
                    for href, text, key in nav)
    footer = f"Registry version {version}" if version is not None else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · featurestore catalog</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/static/catalog.css">
<script src="/ui/static/catalog.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<a class="brand" href="/ui">featurestore <span>{e(project) or "catalog"}</span></a>
<form class="find" role="search" action="/ui/search" method="get">
<label for="q" class="sr">Search the catalog</label>
<input id="q" name="q" type="search" value="{e(q)}" placeholder="Search views, features, tags, owners (press /)"
 autocomplete="off" aria-controls="suggestions" aria-autocomplete="list" aria-expanded="false">
<button type="submit">Search</button>
<ul id="suggestions" role="listbox" aria-label="Suggestions" hidden></ul>
</form>
<nav aria-label="Catalog"><ul>{links}</ul></nav>
</header>
<main id="main" tabindex="-1">
<h1>{e(title)}</h1>
{body}
</main>
<footer>{e(footer)}</footer>
</body>
</html>
"""
