"""Request and response models of the REST API (Feast-compatible where Feast has the route).

Requests are validated strictly (``extra="forbid"``: a misspelt key is a 422 naming it). Responses are
rendered by orjson straight from the store's results; these models document them in OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

Int64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
Status = Literal["PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE", "INVALID"]
Scalar = Union[Int64, StrictFloat, StrictStr, StrictBool, None]
PushValue = Union[Scalar, list[Scalar]]
# Join key values (integers or strings; the store checks them against the key's type: an integer key
# takes JSON integers only) and, like Feast, the request fields of on-demand feature views, which may be
# any scalar or a list. Accepted values: featurestore.values and featurestore.timestamps.
EntityValue = PushValue


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GetOnlineFeaturesRequest(_Strict):
    """Give exactly one of ``features`` (``"view:feature"`` references) or ``feature_service``."""

    features: Optional[list[StrictStr]] = Field(
        default=None, min_length=1, examples=[["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate"]])
    feature_service: Optional[StrictStr] = Field(default=None, min_length=1, examples=["model_v1"])
    entities: dict[StrictStr, list[EntityValue]] = Field(
        description="Join key (and on-demand request field) -> values, one per entity row (column-major, "
                    "like Feast). An integer join key takes JSON integers only (not text, true or 1.0); "
                    "times are ISO 8601 text or integers of epoch milliseconds",
        examples=[{"driver_id": [1001, 1002]}])
    full_feature_names: StrictBool = Field(default=False, description="Name features view__feature")

    @model_validator(mode="after")
    def _one_of(self) -> "GetOnlineFeaturesRequest":
        if (self.features is None) == (self.feature_service is None):
            raise ValueError("give exactly one of 'features' or 'feature_service'")
        return self


class OnlineFeaturesMetadata(BaseModel):
    feature_names: list[str]


class FeatureVector(BaseModel):
    values: list[Any]
    statuses: list[Status]
    event_timestamps: list[str] = Field(description="ISO 8601 UTC; 1970-01-01T00:00:00Z when there is none")


class OnlineFeaturesResponse(BaseModel):
    """Column-major: one entry of ``results`` per name in ``metadata.feature_names`` (entity keys first)."""

    metadata: OnlineFeaturesMetadata
    results: list[FeatureVector]


class PushRequest(_Strict):
    push_source_name: StrictStr = Field(min_length=1, examples=["driver_stats_push"])
    df: dict[StrictStr, list[PushValue]] = Field(
        description="Column -> values (join keys, the timestamp field, features). Times are ISO 8601 text "
                    "(no zone = UTC) or integers of epoch milliseconds, in 1678-01-01 <= t < 2262-01-01; "
                    "integers are never true/1.0/text; floats are finite (null for missing); bytes are base64",
        examples=[{"driver_id": [1001], "event_timestamp": ["2024-01-01T00:00:00Z"], "conv_rate": [0.5]}])
    to: Literal["online", "offline", "online_and_offline"] = "online"
    allow_registry_cache: StrictBool = Field(default=True, description="Accepted for Feast compatibility")
    transform_on_write: StrictBool = Field(default=True, description="Accepted for Feast compatibility")


class PushResponse(BaseModel):
    push_source_name: str
    to: str
    views: list[str]
    rows: int
    online_written: int = Field(description="Rows stored online (newer than what was there)")
    online_skipped: int = Field(description="Rows not stored online because a newer value exists")


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    online_store: str
    registry_version: Optional[int] = None
    error: Optional[dict[str, Any]] = None


class _Spec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class EntitySpec(_Spec):
    join_keys: list[str]
    description: str = ""
    tags: dict[str, str] = {}


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    dtype: str


class FeatureViewSpec(_Spec):
    entities: list[str]
    entity_columns: list[ColumnSpec]
    schema_: list[ColumnSpec] = Field(alias="schema")
    ttl_seconds: Optional[float] = None
    source: dict[str, Any]


class OnDemandFeatureViewSpec(_Spec):
    sources: list[str]
    schema_: list[ColumnSpec] = Field(alias="schema")


class FeatureServiceSpec(_Spec):
    features: list[dict[str, Any]]


class DataSourceSpec(_Spec):
    kind: str


class EntityList(BaseModel):
    entities: list[EntitySpec]


class FeatureViewList(BaseModel):
    feature_views: list[FeatureViewSpec]


class OnDemandFeatureViewList(BaseModel):
    on_demand_feature_views: list[OnDemandFeatureViewSpec]


class FeatureServiceList(BaseModel):
    feature_services: list[FeatureServiceSpec]


class DataSourceList(BaseModel):
    data_sources: list[DataSourceSpec]


class RegistrySummary(BaseModel):
    project: str
    version: int
    entities: list[str]
    feature_views: list[str]
    on_demand_feature_views: list[str]
    feature_services: list[str]
    data_sources: list[str]
