"""The lineage graph drawn on the server as SVG: one column per kind (sources, views, on-demand views,
services; entities too around an entity), each node a link to its page, each edge a curve from the
right side of what feeds it to the left side of what it feeds.

Nodes of a column are ordered by the mean position of the nodes feeding them (the barycentre rule),
which keeps most edges short and uncrossed without a layout library.
"""

from __future__ import annotations

from html import escape

from serving.catalog.index import KINDS, CatalogIndex, Key

COLUMN_ORDER = ("entities", "sources", "views", "on-demand-views", "services")
NODE_W, NODE_H, ROW_GAP, COL_GAP, PAD, HEAD = 210, 30, 10, 80, 12, 34
MAX_LABEL = 26


def draw(index: CatalogIndex, keys: set[Key] | None = None, focus: Key | None = None) -> str:
    """The graph of ``keys`` (None: every source, view, on-demand view and service) as an ``<svg>``."""
    if keys is None:
        keys = {e.key for kind in COLUMN_ORDER[1:] for e in index.by_kind[kind]}
    columns = [sorted(name for kind_, name in keys if kind_ == kind) for kind in COLUMN_ORDER]
    kinds = [kind for kind, names in zip(COLUMN_ORDER, columns) if names]
    columns = [names for names in columns if names]
    position: dict[Key, tuple[int, int]] = {}  # key -> (column, row)
    for c, (kind, names) in enumerate(zip(kinds, columns)):
        if c > 0:
            def centre(name: str, kind: str = kind) -> tuple[float, str]:
                rows = [position[k][1] for k in index.upstream.get((kind, name), []) if k in position]
                return (sum(rows) / len(rows) if rows else float("inf"), name)
            names.sort(key=centre)
        for r, name in enumerate(names):
            position[(kind, name)] = (c, r)
    tallest = max((len(n) for n in columns), default=0)
    width = PAD * 2 + len(columns) * NODE_W + max(len(columns) - 1, 0) * COL_GAP
    height = PAD * 2 + HEAD + tallest * (NODE_H + ROW_GAP)

    def box(key: Key) -> tuple[float, float]:
        c, r = position[key]
        return PAD + c * (NODE_W + COL_GAP), PAD + HEAD + r * (NODE_H + ROW_GAP)

    label = "Lineage of " + (f"{KINDS[focus[0]][1]} {focus[1]}" if focus else "every source, view and service")
    parts = [f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="group" aria-label="{escape(label)}">']
    for c, kind in enumerate(kinds):
        parts.append(f'<text class="column" x="{PAD + c * (NODE_W + COL_GAP)}" y="{PAD + 16}">'
                     f"{escape(KINDS[kind][2])}</text>")
    parts.append('<g class="edges" aria-hidden="true">')
    for down in sorted(position):
        for up in index.upstream.get(down, []):
            if up not in position:
                continue
            x1, y1 = box(up)
            x2, y2 = box(down)
            x1, y1, y2 = x1 + NODE_W, y1 + NODE_H / 2, y2 + NODE_H / 2
            bend = max((x2 - x1) / 2, 30)
            parts.append(f'<path data-from="{escape(up[0])}/{escape(up[1])}" data-to="{escape(down[0])}/'
                         f'{escape(down[1])}" d="M{x1:.0f},{y1:.0f} C{x1 + bend:.0f},{y1:.0f} '
                         f'{x2 - bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"/>')
    parts.append("</g>")
    for key in sorted(position, key=lambda k: position[k]):
        x, y = box(key)
        kind, name = key
        entry = index.entries[key]
        shown = name if len(name) <= MAX_LABEL else name[:MAX_LABEL - 1] + "…"
        css = f"node kind-{kind}" + (" focus" if key == focus else "")
        parts.append(f'<a class="{css}" href="{escape(entry.url)}" aria-label="{escape(entry.noun)} {escape(name)}">'
                     f"<title>{escape(entry.noun)} {escape(name)}</title>"
                     f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
                     f'<text x="{x + 10}" y="{y + NODE_H / 2 + 5:.0f}">{escape(shown)}</text></a>')
    parts.append("</svg>")
    return "".join(parts)


def whole(index: CatalogIndex) -> str:
    return index.drawn(None, lambda: draw(index))


def around(index: CatalogIndex, key: Key) -> str:
    """The neighbourhood of one object: everything it reads from and everything that reads it."""
    return index.drawn(key, lambda: draw(index, index.reach(key), focus=key))
