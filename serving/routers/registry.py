"""Read-only registry: ``GET /registry`` (summary), ``/registry/entities``, ``/registry/feature-views``,
``/registry/on-demand-feature-views``, ``/registry/feature-services``, ``/registry/data-sources`` and
``/<kind>/{name}``, as stored specs, with any secret written out in a source (stored before apply
refused them) shown as ``***`` (``featurestore.secrets``)."""

from __future__ import annotations

from fastapi import APIRouter, Request  # noqa: TID253

from featurestore.errors import NotFoundError
from featurestore.secrets import redact
from serving.errors import error_responses
from serving.models import (
    DataSourceList,
    DataSourceSpec,
    EntityList,
    EntitySpec,
    FeatureServiceList,
    FeatureServiceSpec,
    FeatureViewList,
    FeatureViewSpec,
    OnDemandFeatureViewList,
    OnDemandFeatureViewSpec,
    RegistrySummary,
)
from serving.responses import JSONBytesResponse
from serving.state import state_of

router = APIRouter(prefix="/registry", tags=["registry"])

_KINDS = {  # path segment -> (registry kind, list key, noun)
    "entities": ("entity", "entities", "entity"),
    "feature-views": ("feature_view", "feature_views", "feature view"),
    "on-demand-feature-views": ("on_demand_feature_view", "on_demand_feature_views", "on-demand feature view"),
    "feature-services": ("feature_service", "feature_services", "feature service"),
    "data-sources": ("data_source", "data_sources", "data source"),
}


def _list(request: Request, segment: str) -> JSONBytesResponse:
    kind, key, _ = _KINDS[segment]
    specs = state_of(request).store.registry.list(kind)
    return JSONBytesResponse({key: [redact(specs[name]) for name in sorted(specs)]})


def _get(request: Request, segment: str, name: str) -> JSONBytesResponse:
    kind, _, noun = _KINDS[segment]
    spec = state_of(request).store.registry.get(kind, name)
    if spec is None:
        raise NotFoundError(f"{noun} {name!r} is not in the registry")
    return JSONBytesResponse(redact(spec))


@router.get("", response_model=RegistrySummary, responses=error_responses(401, 403, 503))
def summary(request: Request) -> JSONBytesResponse:
    store = state_of(request).store
    version, snapshot = store.registry_snapshot()
    return JSONBytesResponse({"project": store.config.project, "version": version,
                              **{key: sorted(snapshot.get(kind, {})) for kind, key, _ in _KINDS.values()}})


@router.get("/entities", response_model=EntityList, responses=error_responses(401, 403, 503))
def list_entities(request: Request) -> JSONBytesResponse:
    return _list(request, "entities")


@router.get("/entities/{name}", response_model=EntitySpec, responses=error_responses(401, 403, 404, 503))
def get_entity(name: str, request: Request) -> JSONBytesResponse:
    return _get(request, "entities", name)


@router.get("/feature-views", response_model=FeatureViewList, responses=error_responses(401, 403, 503))
def list_feature_views(request: Request) -> JSONBytesResponse:
    return _list(request, "feature-views")


@router.get("/feature-views/{name}", response_model=FeatureViewSpec,
            responses=error_responses(401, 403, 404, 503))
def get_feature_view(name: str, request: Request) -> JSONBytesResponse:
    return _get(request, "feature-views", name)


@router.get("/on-demand-feature-views", response_model=OnDemandFeatureViewList,
            responses=error_responses(401, 403, 503))
def list_on_demand_feature_views(request: Request) -> JSONBytesResponse:
    return _list(request, "on-demand-feature-views")


@router.get("/on-demand-feature-views/{name}", response_model=OnDemandFeatureViewSpec,
            responses=error_responses(401, 403, 404, 503))
def get_on_demand_feature_view(name: str, request: Request) -> JSONBytesResponse:
    return _get(request, "on-demand-feature-views", name)


@router.get("/feature-services", response_model=FeatureServiceList, responses=error_responses(401, 403, 503))
def list_feature_services(request: Request) -> JSONBytesResponse:
    return _list(request, "feature-services")


@router.get("/feature-services/{name}", response_model=FeatureServiceSpec,
            responses=error_responses(401, 403, 404, 503))
def get_feature_service(name: str, request: Request) -> JSONBytesResponse:
    return _get(request, "feature-services", name)


@router.get("/data-sources", response_model=DataSourceList, responses=error_responses(401, 403, 503))
def list_data_sources(request: Request) -> JSONBytesResponse:
    return _list(request, "data-sources")


@router.get("/data-sources/{name}", response_model=DataSourceSpec, responses=error_responses(401, 403, 404, 503))
def get_data_source(name: str, request: Request) -> JSONBytesResponse:
    return _get(request, "data-sources", name)
