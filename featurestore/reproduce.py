"""Exports made again from their manifests: the same rows, byte for byte.

An export's manifest (``<output>.manifest.json``) names the registry version it resolved its
features at and, per view, where its rows came from: the offline table's commit, the appended
rows' commit, or the batch source and its fingerprint. ``reproduce`` reads exactly those again, so
later materializations, pushes, stream appends and compactions change nothing. It fails with the
view and version named when a needed commit can no longer be read (``offline vacuum`` removed its
files) and when a source that keeps no versions has changed since.

The entity rows are the export's own entity columns (its output file), unless ``entities`` names
the original frame; an export the engine streamed from an entity file reads that file again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from featurestore.errors import ConflictError, InvalidInputError, NotFoundError
from featurestore.retrieval import RetrievalJob, ViewPin, entity_table

if TYPE_CHECKING:
    from featurestore.store import FeatureStore

_NEEDED = ("project", "registry_version", "features", "full_feature_names", "timestamp_column", "row_count",
           "entity_columns", "views")


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise NotFoundError(f"no export manifest at {path}") from None
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not an export manifest (not JSON: {exc})") from None
    missing = [k for k in _NEEDED if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise InvalidInputError(f"{path} is not an export manifest this version can reproduce "
                                f"(missing {', '.join(missing)})")
    return manifest


def _entity_rows(manifest: dict[str, Any], entities: str | os.PathLike | None) -> Any:
    """The entity frame, handed over as the export had it: a path for an export the engine streamed
    (it writes the same bytes again), else a table (``entities``, or the entity columns of the output)."""
    if manifest.get("written_by"):
        path = entities or manifest.get("entity_file")
        if not path or not Path(path).exists():
            raise NotFoundError(f"the entity file {path!r} of an export streamed by the engine is gone: pass the "
                                "entity rows it was made from")
        return str(path)
    if entities is not None:
        return entity_table(str(entities)) if isinstance(entities, (str, os.PathLike)) else entities
    output = manifest.get("output")
    if output and Path(output).is_file():
        return pq.read_table(output, columns=manifest["entity_columns"])
    recorded = manifest.get("entity_file")
    if recorded and Path(recorded).exists():
        return recorded
    raise NotFoundError(f"the export's output {output!r} and entity file {recorded!r} are both gone: "
                        "pass the entity rows it was made from")


def reproduce(store: "FeatureStore", manifest_path: str | os.PathLike, output: str | os.PathLike,
              entities: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write the export ``manifest_path`` describes again to ``output``; returns the new manifest."""
    manifest = load_manifest(manifest_path)
    if manifest["project"] != store.config.project:
        raise InvalidInputError(f"the manifest is of project {manifest['project']!r}, this repository's is "
                                f"{store.config.project!r}")
    catalog = store.catalog_at(int(manifest["registry_version"]))
    pins = {name: ViewPin.from_manifest(name, entry) for name, entry in manifest["views"].items()}
    features = manifest.get("feature_service") or manifest["features"]
    job = RetrievalJob(store, _entity_rows(manifest, entities), features, bool(manifest["full_feature_names"]),
                       manifest["timestamp_column"], catalog=catalog, pins=pins)
    if not manifest.get("written_by"):
        _check_rows(job.to_arrow().num_rows, manifest)
    made = job.to_parquet(output)
    try:
        _check_rows(made["row_count"], manifest)
    except ConflictError:
        for path in (Path(output), Path(f"{output}.manifest.json")):
            path.unlink(missing_ok=True)
        raise
    return made


def _check_rows(rows: int, manifest: dict[str, Any]) -> None:
    if rows != manifest["row_count"]:
        raise ConflictError(f"the entity rows given hold {rows} rows; the export had {manifest['row_count']}")
