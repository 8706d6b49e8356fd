"""``FeatureStore``: the thin facade users import. Each method delegates to one service module."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

from featurestore import apply as apply_mod
from featurestore import materialize, push, quality_runs, repair, reproduce
from featurestore.catalog import Catalog
from featurestore.config import RepoConfig, backend_config, load_config, resolve_registry_url
from featurestore.definitions import Entity, FeatureService, FeatureView
from featurestore.errors import NotFoundError
from featurestore.online_read import DEFAULT_SHAPE_CACHE_BYTES, OnlineReader
from featurestore.repo import load_repo
from featurestore.retrieval import RetrievalJob


class FeatureStore:
    """A feature repo: its config, registry, stores and engine.

    >>> store = FeatureStore(repo_path="path/to/repo")       # doctest: +SKIP
    >>> store.apply()                                        # doctest: +SKIP

    ``online_cache_bytes`` bounds the memory of the online lookup plans cached per distinct request
    (``featurestore.online_read.ShapeCache``); the feature server sets it from ``--shape-cache-bytes``.
    """

    online_cache_bytes: int = DEFAULT_SHAPE_CACHE_BYTES

    def __init__(self, repo_path: str | Path = ".", config: RepoConfig | None = None):
        self.repo_path = Path(repo_path).resolve()
        self.config = config or load_config(self.repo_path)

    # -- backends (opened lazily) ----------------------------------------------------------------
    @cached_property
    def registry(self):
        from featurestore.registry import Registry  # SQLAlchemy, loaded when the registry is first used

        return Registry(resolve_registry_url(self.config.registry, self.repo_path), self.config.project)

    @cached_property
    def offline_store(self):
        cls, cfg = backend_config("offline_store", self.config.offline_store)
        return cls(cfg, self.repo_path, self.config.project)

    @cached_property
    def online_store(self):
        cls, cfg = backend_config("online_store", self.config.online_store)
        return cls(cfg, self.repo_path, self.config.project)

    @cached_property
    def engine(self):
        cls, cfg = backend_config("engine", self.config.engine)
        return cls(cfg, self.repo_path)

    def catalog(self) -> Catalog:
        """The registry's objects as typed definitions, parsed once per registry version."""
        with self.registry.read() as reader:
            version = reader.version()
            cached = self.__dict__.get("_catalog")
            if cached is not None and cached.version == version:
                return cached
            catalog = Catalog.parse(version, reader.snapshot())
        self._catalog = catalog
        return catalog

    def catalog_at(self, version: int) -> Catalog:
        """The catalog as it was at registry ``version`` (what an export made then saw)."""
        current = self.catalog()
        if version == current.version:
            return current
        if not 0 < version < current.version:
            raise NotFoundError(f"registry version {version} does not exist (the registry of project "
                                f"{self.config.project!r} is at version {current.version})")
        with self.registry.read() as reader:
            return Catalog.parse(version, reader.snapshot_at(version))

    def registry_snapshot(self) -> tuple[int, dict]:
        """(version, kind -> name -> spec), read consistently."""
        with self.registry.read() as reader:
            return reader.version(), reader.snapshot()

    def close(self) -> None:
        for name in ("registry", "online_store", "engine"):
            if name in self.__dict__:
                self.__dict__.pop(name).close()
        for client in self.__dict__.pop("_push_kafka", {}).values():  # producers of streaming pushes
            client.close()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- definitions -------------------------------------------------------------------------------
    def plan(self, objects: Iterable[object] | None = None):
        """What ``apply`` would change, without changing anything."""

        desired, deletes = self._desired(objects)
        plan = apply_mod.diff(self.registry.snapshot(), desired, deletes=deletes)
        plan.registry_version = self.registry.version()
        return plan

    def apply(self, objects: Iterable[object] | None = None, *, force: bool = False):
        """Register the repo's definitions (or just ``objects``) in one transaction.

        Without ``objects`` the registry is made to match the repo, deletes included; with ``objects``
        those are added or updated and nothing is deleted. Returns the applied plan.
        """

        desired, deletes = self._desired(objects)
        plan = apply_mod.apply_specs(self.registry, desired, deletes=deletes, force=force)
        self.__dict__.pop("online_reader", None)  # this store's lookups see the new definitions at once
        return plan

    def _desired(self, objects: Iterable[object] | None) -> tuple[dict, bool]:

        engine = self.config.engine.get("type", "local")
        if objects is None:
            return apply_mod.desired_state(load_repo(self.repo_path), self.repo_path, engine_type=engine), True
        contents = apply_mod.contents_of(objects)
        return apply_mod.desired_state(contents, self.repo_path, self.registry.snapshot(), engine), False

    def list_entities(self) -> list[Entity]:
        return list(self.catalog().entities.values())

    def list_feature_views(self) -> list[FeatureView]:
        return list(self.catalog().views.values())

    def list_feature_services(self) -> list[FeatureService]:
        return list(self.catalog().services.values())

    def get_feature_view(self, name: str) -> FeatureView:
        return self.catalog().view(name)

    # -- online ------------------------------------------------------------------------------------
    @cached_property
    def online_reader(self):
        return OnlineReader(self)

    def get_online_features(self, features: Sequence[str] | FeatureService | str, entity_rows: Any,
                            full_feature_names: bool = False):
        """Latest values for some entities: ``entity_rows`` is a list of ``{join_key: value}`` dicts
        (or a dict of lists). Returns an OnlineResponse (``to_dict()``, ``to_pandas()``)."""
        return self.online_reader.read(features, entity_rows, full_feature_names)

    def push(self, name: str, rows: Any, to: str = "online"):
        """Write rows for a push source (or a feature view fed by one) to the online store, the offline
        store or both (``to`` = "online" | "offline" | "online_and_offline"), through the monotonic write
        path. Values follow ``featurestore.values`` (integer times are epoch milliseconds)."""
        return push.push(self, name, rows, to)

    # -- offline -----------------------------------------------------------------------------------
    def get_historical_features(self, entity_df: Any, features: Sequence[str] | FeatureService | str,
                                full_feature_names: bool = False, *, timestamp_field: str | None = None):
        """A point-in-time-correct training set: one row per entity row, in input order.

        ``features`` is a list of ``"view:feature"`` references or a FeatureService (or its name).
        """
        return RetrievalJob(self, entity_df, features, full_feature_names, timestamp_field)

    def reproduce_export(self, manifest: str | Path, output: str | Path, *,
                         entities: str | Path | None = None) -> dict[str, Any]:
        """Write an earlier export again from its manifest: the same rows, byte for byte, whatever was
        materialized, pushed or compacted since (``featurestore.reproduce``). Returns the new manifest."""
        return reproduce.reproduce(self, manifest, output, entities)

    def materialize(self, start_date: datetime | None, end_date: datetime,
                    feature_views: Sequence[str] | None = None, *, online: bool = True,
                    progress: bool | None = None):
        """Copy each view's rows with start <= event time < end into the offline store (replacing that
        interval) and, with ``online``, the latest value per entity into the online store."""
        return materialize.materialize(self, start_date, end_date, feature_views, online=online,
                                       progress=progress)

    def materialize_incremental(self, end_date: datetime, feature_views: Sequence[str] | None = None, *,
                                online: bool = True, progress: bool | None = None):
        """Materialize each view from its last watermark (kept in the registry) up to ``end_date``."""
        return materialize.materialize_incremental(self, end_date, feature_views, online=online,
                                                   progress=progress)

    def repair_offline(self, view: str):
        """Make the view's offline tables readable again after damage (a commit log or data file that
        cannot be read), rematerializing from the source what the materialized rows lost; returns a
        RepairResult whose ``lines()`` say what was found, done and lost (``featurestore.repair``)."""
        return repair.repair_offline(self, view)

    def quality_runs(self, view: str, since: datetime | None = None) -> list[quality_runs.QualityRun]:
        """The view's quality records started at or after ``since`` (all when None), oldest first: one
        per materialization run or stream commit, with its checks' outcomes and its statistics
        (``featurestore.quality_runs``, ``featurestore.quality_stats``)."""
        self.get_feature_view(view)  # an unknown view is an error, not an empty answer
        return quality_runs.runs(self, view, since)
