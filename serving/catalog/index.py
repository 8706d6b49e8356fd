"""The registry at one version as the catalog reads it: every object with its searchable text and its
lineage edges, built once per registry version and shared by every page until the version changes.

Search is a scan of the prepared, lower-cased text of each object (a few thousand objects take well
under a millisecond per term), so it answers as the user types without touching the registry.
"""

from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass, field
from typing import Any

from featurestore.catalog import Catalog
from featurestore.secrets import redact

# URL segment -> (registry kind, singular noun, plural noun)
KINDS: dict[str, tuple[str, str, str]] = {
    "entities": ("entity", "entity", "Entities"),
    "sources": ("data_source", "source", "Sources"),
    "views": ("feature_view", "feature view", "Feature views"),
    "on-demand-views": ("on_demand_feature_view", "on-demand view", "On-demand views"),
    "services": ("feature_service", "feature service", "Feature services"),
}
# The lineage graph's columns, left to right.
LINEAGE_KINDS = ("sources", "views", "on-demand-views", "services")

Key = tuple[str, str]  # (kind segment, name)


@dataclass
class Entry:
    kind: str
    name: str
    obj: Any
    spec: dict
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    features: tuple[str, ...] = ()  # feature names (views, on-demand views) or references (services)
    _text: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> Key:
        return (self.kind, self.name)

    @property
    def url(self) -> str:
        return f"/ui/{self.kind}/{self.name}"

    @property
    def noun(self) -> str:
        return KINDS[self.kind][1]


@dataclass
class Hit:
    entry: Entry
    score: int
    matched: str  # which field matched best: name, feature, tag, owner, description


class CatalogIndex:
    """Objects by kind and name, lineage edges both ways, and the search text of each object."""

    def __init__(self, version: int, snapshot: dict[str, dict[str, dict]]) -> None:
        self.version = version
        self.catalog = Catalog.parse(version, snapshot)
        self.entries: dict[Key, Entry] = {}
        self.by_kind: dict[str, list[Entry]] = {kind: [] for kind in KINDS}
        for kind, (registry_kind, _, _) in KINDS.items():
            for name, spec in sorted((snapshot.get(registry_kind) or {}).items()):
                entry = self._entry(kind, name, spec)
                self.entries[entry.key] = entry
                self.by_kind[kind].append(entry)
        self.upstream: dict[Key, list[Key]] = {}
        self.downstream: dict[Key, list[Key]] = {}
        self._link()
        self.owners = sorted({e.owner for e in self.entries.values() if e.owner})
        self.tags = sorted({f"{k}={v}" for e in self.entries.values() for k, v in e.tags.items()})
        self._drawn: dict[Any, str] = {}  # lineage SVG by subject, drawn on first use
        self._lock = threading.Lock()

    def _entry(self, kind: str, name: str, spec: dict) -> Entry:
        c = self.catalog
        obj = {"entities": c.entities, "sources": c.sources, "views": c.views, "on-demand-views": c.on_demand,
               "services": c.services}[kind][name]
        features: tuple[str, ...] = ()
        field_text = ""
        if kind in ("views", "on-demand-views"):
            fields = list(obj.schema)
            names = [f.name for f in fields] + ([a.name for a in obj.aggregations] if kind == "views" else [])
            features = tuple(dict.fromkeys(names))
            field_text = " ".join(f"{f.name} {f.description}" for f in fields) + " " + " ".join(features)
        elif kind == "services":
            features = tuple(p.view if p.features is None else f"{p.view}:{f}"
                             for p in obj.projections() for f in (p.features or (None,)))
            field_text = " ".join(features)
        entry = Entry(kind=kind, name=name, obj=obj, spec=redact(spec),
                      description=getattr(obj, "description", "") or "", owner=getattr(obj, "owner", "") or "",
                      tags=dict(getattr(obj, "tags", {}) or {}), features=features)
        entry._text = {"name": name.lower(), "feature": field_text.lower(),
                       "tag": " ".join(f"{k}={v}" for k, v in entry.tags.items()).lower(),
                       "owner": entry.owner.lower(), "description": entry.description.lower()}
        return entry

    def _edge(self, up: Key, down: Key) -> None:
        if up in self.entries and down in self.entries and up not in self.upstream.get(down, []):
            self.upstream.setdefault(down, []).append(up)
            self.downstream.setdefault(up, []).append(down)

    def _link(self) -> None:
        c = self.catalog
        for name, view in c.views.items():
            self._edge(("sources", view.source.name), ("views", name))
            for entity in view.entity_names:
                self._edge(("entities", entity), ("views", name))
        for name, od in c.on_demand.items():
            for source in od.sources:
                self._edge(("views", source), ("on-demand-views", name))
        for name, service in c.services.items():
            for p in service.projections():
                up = ("views", p.view) if p.view in c.views else ("on-demand-views", p.view)
                self._edge(up, ("services", name))

    def get(self, kind: str, name: str) -> Entry | None:
        return self.entries.get((kind, name))

    def related(self, key: Key, direction: str) -> list[Entry]:
        edges = self.upstream if direction == "up" else self.downstream
        return [self.entries[k] for k in edges.get(key, [])]

    def reach(self, key: Key, *, entities: bool = False) -> set[Key]:
        """``key`` with everything upstream and downstream of it (its lineage neighbourhood)."""
        seen = {key}
        for edges in (self.upstream, self.downstream):
            todo = [key]
            while todo:
                for nxt in edges.get(todo.pop(), []):
                    if nxt not in seen and (entities or nxt[0] != "entities" or key[0] == "entities"):
                        seen.add(nxt)
                        todo.append(nxt)
        return seen

    def drawn(self, subject: Any, draw) -> str:
        """The lineage SVG of ``subject`` (None: the whole graph), drawn once per registry version."""
        with self._lock:
            svg = self._drawn.get(subject)
            if svg is None:
                svg = self._drawn[subject] = draw()
            return svg

    def search(self, q: str = "", kind: str = "", tag: str = "", owner: str = "", limit: int | None = None) -> list[Hit]:
        """Objects matching every word of ``q`` (in the name, a feature, a tag, the owner or the
        description), of ``kind``, with tag ``tag`` (``key`` or ``key=value``) and owner ``owner``; best
        first: name matches, then features, tags, owner and description."""
        terms = q.lower().split()
        tag = tag.strip().lower()
        owner = owner.strip().lower()
        hits = []
        for entry in (self.by_kind.get(kind, []) if kind else self.entries.values()):
            if owner and entry.owner.lower() != owner:
                continue
            if tag and not _has_tag(entry, tag):
                continue
            score, matched = 0, ""
            for term in terms:
                best, where = _score(entry._text, term)
                if not best:
                    break
                score += best
                matched = matched or where
            else:
                hits.append(Hit(entry, score, matched or "name"))
        hits.sort(key=lambda h: (-h.score, list(KINDS).index(h.entry.kind), h.entry.name))
        return hits if limit is None else hits[:limit]


def _has_tag(entry: Entry, tag: str) -> bool:
    key, sep, value = tag.partition("=")
    for k, v in entry.tags.items():
        if k.lower() == key and (not sep or v.lower() == value):
            return True
    return False


_WEIGHTS = (("name", 10), ("feature", 4), ("tag", 3), ("owner", 3), ("description", 1))


def _score(text: dict[str, str], term: str) -> tuple[int, str]:
    name = text["name"]
    if name == term:
        return 100, "name"
    if name.startswith(term):
        return 50, "name"
    for where, weight in _WEIGHTS:
        if term in text[where]:
            return weight * 2, where
    return 0, ""


class IndexCache:
    """The index of the registry's current version: one read of the version number per page, the whole
    snapshot only when it changed. A new version's index is built on a helper thread; a page waits for
    it up to ``WAIT_FOR_NEW`` seconds and is otherwise served from the previous version's index (a big
    registry takes a few hundred milliseconds to parse: no page pays that after an apply, only the
    very first one)."""

    WAIT_FOR_NEW = 0.1

    def __init__(self, store) -> None:
        self.store = store
        self._index: CatalogIndex | None = None
        self._lock = threading.Lock()
        self._building: concurrent.futures.Future | None = None
        self._builder = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-index")

    def current(self) -> CatalogIndex:
        with self.store.registry.read() as reader:
            version = reader.version()
        index = self._index
        if index is not None and index.version == version:
            return index
        with self._lock:
            building = self._building
            if building is None or building.done() and (self._index is None or self._index.version < version):
                building = self._building = self._builder.submit(self._build)
        if index is None:
            return building.result()
        try:
            return building.result(timeout=self.WAIT_FOR_NEW)
        except concurrent.futures.TimeoutError:
            return index

    def _build(self) -> CatalogIndex:
        with self.store.registry.read() as reader:
            version = reader.version()
            snapshot = reader.snapshot()
        index = CatalogIndex(version, snapshot)
        with self._lock:
            if self._index is None or self._index.version < version:
                self._index = index
            return self._index
