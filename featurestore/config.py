"""``featurestore.yaml``: the repo's configuration, as pydantic models.

Each backend section is tagged by ``type`` and validated by that backend's own model (found through
the plugin registry), so a typo in a key is an error naming the key, never a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from featurestore import plugins
from featurestore.errors import ConfigError

CONFIG_FILE = "featurestore.yaml"


class QualityConfig(BaseModel):
    """``quality:`` in featurestore.yaml."""

    model_config = ConfigDict(extra="forbid")

    # Statistics of each materialization run and stream commit (featurestore.quality_stats), recorded
    # with the run's checks; false records the runs without them.
    statistics: bool = True


class RepoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str
    registry: str = "sqlite:///data/registry.db"
    offline_store: dict[str, Any] = Field(default_factory=lambda: {"type": "parquet"})
    online_store: dict[str, Any] = Field(default_factory=lambda: {"type": "sqlite"})
    engine: dict[str, Any] = Field(default_factory=lambda: {"type": "local"})
    stream_engine: dict[str, Any] = Field(default_factory=lambda: {"type": "flink"})
    quality: QualityConfig = Field(default_factory=QualityConfig)

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "_-" for c in value):
            raise ValueError("project must be letters, digits, '_' or '-'")
        return value

    @field_validator("offline_store", "online_store", "engine", "stream_engine", mode="before")
    @classmethod
    def _tag(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"type": value}
        return value


def _format_validation(prefix: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"{prefix}{'.' + loc if loc else ''}: {err['msg']}")
    return "; ".join(lines)


def backend_config(kind: str, section: dict[str, Any]) -> tuple[type, BaseModel]:
    """Resolve a tagged section (``{type: redis, ...}``) to its backend class and validated config."""
    if "type" not in section:
        raise ConfigError(f"{kind}: missing 'type'")
    cls = plugins.load(kind, section["type"])
    model = plugins.config_class(cls)
    try:
        return cls, model.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(_format_validation(kind, exc)) from None


def resolve_registry_url(url: str, repo_path: Path) -> str:
    """Relative SQLite paths resolve against the repo directory, not the working directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rest = url[len(prefix):]
        if rest and rest != ":memory:" and not rest.startswith(":"):
            path = (repo_path / rest).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            return prefix + str(path)
    return url


def load_config(repo_path: Path) -> RepoConfig:
    path = repo_path / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"no {CONFIG_FILE} in {repo_path} (run 'featurestore init NAME' to make a repo)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return RepoConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + _format_validation("", exc).lstrip(".")) from None
