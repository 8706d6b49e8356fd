"""What repairs a damaged file an engine met: a data file of a view's offline table, or a file of
its FileSource. Engines name the file (``DamagedStateError.path``); they do not know whose it is."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterable, Iterator

from featurestore.definitions import FeatureView
from featurestore.errors import DamagedStateError
from featurestore.ports.offline_store import CAP_DELTA, repair_command
from featurestore.sources import FileSource

if TYPE_CHECKING:
    from featurestore.store import FeatureStore


def _owner_of(store: "FeatureStore", views: Iterable[FeatureView], path: str) -> tuple[str, str] | None:
    """(what the damaged file belongs to, what repairs it), for a file of an offline table or of a
    view's FileSource; None when it is neither."""
    offline = store.offline_store
    for view in views:
        if CAP_DELTA in offline.capabilities:
            for table, rows in ((offline, "materialized rows"), (offline.appends, "appended rows")):
                if path.startswith(table.table_uri(view.name) + "/"):
                    return f"a data file of the offline table of the {rows} of view {view.name!r}", \
                        f"`{repair_command(view.name)}`"
        source = view.batch_source
        if isinstance(source, FileSource):
            return (f"a file of FileSource {source.name!r} of view {view.name!r}",
                    "restore the file from a good copy, or remove it from the source's path; exports and "
                    "materializations read it every time")
    return None


@contextmanager
def damage_named(store: "FeatureStore", views: Iterable[FeatureView]) -> Iterator[None]:
    """Adds, to a DamagedStateError about a file that names no repair, what the file belongs to among
    ``views``' offline tables and sources, and what repairs it."""
    try:
        yield
    except DamagedStateError as exc:
        if exc.repair is not None or exc.path is None:
            raise
        owner = _owner_of(store, list(views), exc.path)
        if owner is None:
            raise
        raise exc.with_repair(owner[1], owner[0]) from exc
