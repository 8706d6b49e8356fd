"""The lineage graph drawn on the server as SVG: one column per kind (sources, views, on-demand views,
services; entities too around an entity), each node a link to its page, each edge a curve from the
right side of what feeds it to the left side of what it feeds.

Nodes of a column are ordered by the mean position of the nodes feeding them (the barycentre rule),
which keeps most edges short and uncrossed without a layout library; an edge passing a column crosses
it in a lane of its own between the nodes.
"""

from __future__ import annotations

from html import escape

from serving.catalog.index import KINDS, CatalogIndex, Key

COLUMN_ORDER = ("entities", "sources", "views", "on-demand-views", "services")
NODE_W, NODE_H, ROW_GAP, COL_GAP, PAD, HEAD = 210, 30, 10, 80, 12, 34
LANE = 10  # the height of the lane an edge takes through a column it passes
MAX_LABEL = 26


def draw(index: CatalogIndex, keys: set[Key] | None = None, focus: Key | None = None) -> str:
    """The graph of ``keys`` (None: every source, view, on-demand view and service) as an ``<svg>``.

    An edge that passes a column (a view read by a service directly) takes a lane of its own through it,
    between that column's nodes, so it never runs behind a node it does not touch."""
    if keys is None:
        keys = {e.key for kind in COLUMN_ORDER[1:] for e in index.by_kind[kind]}
    kinds = [kind for kind in COLUMN_ORDER if any(k == kind for k, _ in keys)]
    column = {key: kinds.index(key[0]) for key in keys}
    edges = sorted((up, down) for down in keys for up in index.upstream.get(down, []) if up in keys)
    # Slots: real nodes (their key) and lanes ((up, down, column)); each slot's predecessor slots.
    slots: list[list] = [[] for _ in kinds]
    before: dict = {}
    for key in sorted(keys):
        slots[column[key]].append(key)
    for up, down in edges:
        previous = up
        for c in range(column[up] + 1, column[down]):
            lane = (up, down, c)
            slots[c].append(lane)
            before.setdefault(lane, []).append(previous)
            previous = lane
        before.setdefault(down, []).append(previous)
    centre: dict = {}  # slot -> y of its middle
    for c, members in enumerate(slots):
        if c > 0:
            def barycentre(slot) -> tuple[float, str]:
                ys = [centre[p] for p in before.get(slot, []) if p in centre]
                name = slot[1] if len(slot) == 2 else slot[1][1]
                return (sum(ys) / len(ys) if ys else float("inf"), str(name))
            members.sort(key=barycentre)
        y = PAD + HEAD
        for slot in members:
            height = NODE_H if len(slot) == 2 else LANE
            centre[slot] = y + height / 2
            y += height + (ROW_GAP if len(slot) == 2 else 0)
    bottom = max((centre[m[-1]] for m in slots if m), default=PAD + HEAD) + NODE_H
    width = PAD * 2 + len(kinds) * NODE_W + max(len(kinds) - 1, 0) * COL_GAP
    height = int(bottom + PAD)

    def left(c: int) -> float:
        return PAD + c * (NODE_W + COL_GAP)

    label = "Lineage of " + (f"{KINDS[focus[0]][1]} {focus[1]}" if focus else "every source, view and service")
    parts = [f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="group" aria-label="{escape(label)}">']
    for c, kind in enumerate(kinds):
        parts.append(f'<text class="column" x="{left(c)}" y="{PAD + 16}">{escape(KINDS[kind][2])}</text>')
    parts.append('<g class="edges" aria-hidden="true">')
    for up, down in edges:
        x, y = left(column[up]) + NODE_W, centre[up]
        path = [f"M{x:.0f},{y:.0f}"]
        for c in range(column[up] + 1, column[down] + 1):
            y2 = centre[(up, down, c) if c < column[down] else down]
            x2 = left(c)
            bend = COL_GAP / 2
            path.append(f"C{x + bend:.0f},{y:.0f} {x2 - bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}")
            if c < column[down]:
                path.append(f"H{x2 + NODE_W:.0f}")
            x, y = x2 + NODE_W, y2
        parts.append(f'<path data-from="{escape(up[0])}/{escape(up[1])}" data-to="{escape(down[0])}/'
                     f'{escape(down[1])}" d="{" ".join(path)}"/>')
    parts.append("</g>")
    for key in sorted(keys, key=lambda k: (column[k], centre[k])):
        x, y = left(column[key]), centre[key] - NODE_H / 2
        kind, name = key
        entry = index.entries[key]
        shown = name if len(name) <= MAX_LABEL else name[:MAX_LABEL - 1] + "…"
        css = f"node kind-{kind}" + (" focus" if key == focus else "")
        parts.append(f'<a class="{css}" href="{escape(entry.url)}" aria-label="{escape(entry.noun)} {escape(name)}">'
                     f"<title>{escape(entry.noun)} {escape(name)}</title>"
                     f'<rect x="{x}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
                     f'<text x="{x + 10}" y="{y + NODE_H / 2 + 5:.0f}">{escape(shown)}</text></a>')
    parts.append("</svg>")
    return "".join(parts)


def whole(index: CatalogIndex) -> str:
    return index.drawn(None, lambda: draw(index))


def around(index: CatalogIndex, key: Key) -> str:
    """The neighbourhood of one object: everything it reads from and everything that reads it."""
    return index.drawn(key, lambda: draw(index, index.reach(key), focus=key))
