"""How the Delta offline store reports damage: which view's table, which file, and the command that
repairs it (``featurestore offline repair VIEW``, see ``connectors.delta_repair``)."""

from __future__ import annotations

from dataclasses import dataclass

from pyarrow import fs as pafs

from connectors import delta_log
from connectors.object_store import is_remote
from featurestore.errors import BackendUnavailableError, DamagedStateError
from featurestore.ports.offline_store import repair_command


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class DamageReport:
    """The errors of one store of tables (``root``): the materialized rows', or the appended rows'."""

    root: str
    appends: bool

    def table(self, view: str, uri: str) -> str:
        rows = "appended rows (streams and pushes)" if self.appends else "materialized rows"
        return f"view {view!r}: the offline table of its {rows} at {uri}"

    def hint(self, view: str) -> str:
        if self.appends:
            return (f"`{repair_command(view)}` (restores the last readable state of the appended rows; rows "
                    f"in commits or files that cannot be read are lost: the command lists them)")
        return (f"`{repair_command(view)}` (restores the last readable state and rematerializes the view's "
                f"materialized intervals from its source)")

    def display(self, path: str) -> str:
        """A path inside the store's filesystem as the user wrote the store's location."""
        scheme = self.root.partition("://")[0] if is_remote(self.root) else ""
        return f"{scheme}://{path}" if scheme and "://" not in path else path

    def unreadable(self, view: str, uri: str, fs: pafs.FileSystem, base: str, exc: Exception) -> Exception:
        """The error for a table delta-rs cannot open: the damaged file and the command that repairs
        it, or, when no damaged file is found, the store's own error (unreachable, refused)."""
        try:
            damage = delta_log.find_damage(fs, delta_log.list_log(fs, base))
        except OSError:
            damage = None
        if damage is None:
            return BackendUnavailableError(f"{self.table(view, uri)} cannot be read: {_first_line(exc)}")
        path = self.display(damage.path)
        return DamagedStateError(f"{self.table(view, uri)} cannot be read: {path} {damage.reason}", path=path,
                                 repair=self.hint(view))

    def damaged_file(self, view: str, uri: str, name: str, reason: str) -> DamagedStateError:
        """The error for a data file of the view's table that is missing or cannot be read."""
        path = f"{uri}/{name}"
        return DamagedStateError(f"{self.table(view, uri)} cannot be read: its data file {path} {reason}",
                                 path=path, repair=self.hint(view))

    def file_error(self, view: str, uri: str, fs: pafs.FileSystem, base: str, names: list[str],
                   exc: Exception) -> Exception:
        """An error reading the view's data files ``names``: the damaged file when one is missing or
        the error names it, else ``exc`` itself."""
        infos = fs.get_file_info([f"{base}/{name}" for name in names])
        missing = [n for n, info in zip(names, infos) if info.type == pafs.FileType.NotFound]
        if missing:
            return self.damaged_file(view, uri, missing[0], "is missing")
        named = next((n for n in names if n in str(exc)), None)
        return exc if named is None else self.damaged_file(view, uri, named, f"cannot be read ({_first_line(exc)})")
