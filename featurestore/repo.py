"""Loading a feature repo: import its Python modules and collect the definitions they declare."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from featurestore.definitions import Entity, FeatureService, FeatureView
from featurestore.errors import DefinitionError
from featurestore.on_demand import OnDemandFeatureView
from featurestore.sources import DataSource
from featurestore.user_code import import_file

IGNORE_FILE = ".featurestoreignore"
_SKIP_DIRS = {"data", "__pycache__", "node_modules", "site-packages"}


@dataclass
class RepoContents:
    """Every definition found in a repo, by kind, in the order they were found."""

    entities: list[Entity] = field(default_factory=list)
    sources: list[DataSource] = field(default_factory=list)
    feature_views: list[FeatureView] = field(default_factory=list)
    feature_services: list[FeatureService] = field(default_factory=list)
    on_demand_views: list = field(default_factory=list)

    def add(self, obj: object, origin: str) -> None:
        bucket = self._bucket(obj)
        if bucket is None:
            return
        if any(existing is obj for existing in bucket):
            return  # the same object imported by two modules
        bucket.append(obj)  # type: ignore[arg-type]
        _ORIGINS[id(obj)] = origin

    def _bucket(self, obj: object) -> list | None:
        if isinstance(obj, Entity):
            return self.entities
        if isinstance(obj, DataSource):
            return self.sources
        if isinstance(obj, FeatureView):
            return self.feature_views
        if isinstance(obj, FeatureService):
            return self.feature_services
        if isinstance(obj, OnDemandFeatureView):
            return self.on_demand_views
        return None


_ORIGINS: dict[int, str] = {}


def origin_of(obj: object) -> str:
    """The module a definition was found in, for error messages."""
    return _ORIGINS.get(id(obj), "<unknown module>")


def _ignored(repo: Path) -> list[str]:
    path = repo / IGNORE_FILE
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def python_files(repo: Path) -> list[Path]:
    ignored = _ignored(repo)
    out = []
    for path in sorted(repo.rglob("*.py")):
        rel = path.relative_to(repo)
        parts = rel.parts
        if any(p.startswith(".") or p in _SKIP_DIRS or p.startswith("venv") for p in parts[:-1]):
            continue
        if parts[-1].startswith("_") or any(rel.match(pattern) for pattern in ignored):
            continue
        out.append(path)
    return out




def load_repo(repo: Path) -> RepoContents:
    """Import every module of the repo and collect the definitions at their top level."""
    repo = repo.resolve()
    contents = RepoContents()
    for path in python_files(repo):
        module_name = "_fsrepo_" + "_".join(path.relative_to(repo).with_suffix("").parts)
        try:
            module = import_file(path, module_name, repo)
        except DefinitionError:
            raise
        except Exception as exc:
            raise DefinitionError(f"{path.relative_to(repo)}: failed to import: "
                                  f"{type(exc).__name__}: {exc}", obj=str(path)) from exc
        for value in vars(module).values():
            contents.add(value, str(path.relative_to(repo)))
    return contents
