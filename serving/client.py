"""A small Python client for the feature server, over one kept-alive HTTP connection (httpx).

>>> from serving.client import FeatureClient                                        # doctest: +SKIP
>>> with FeatureClient("http://127.0.0.1:6566", api_key="k") as client:             # doctest: +SKIP
...     resp = client.get_online_features(features=["driver_hourly_stats:conv_rate"],
...                                       entities={"driver_id": [1001, 1002]})
...     resp.to_dict()
{'driver_id': [1001, 1002], 'conv_rate': [0.52, 0.31]}

Errors come back as the product's exceptions: 404 ``NotFoundError`` (``FeatureViewNotFound``,
``FeatureNotFound`` when the server says so), 422 ``InvalidInputError``, 413 ``RequestTooLargeError``,
401 ``AuthenticationError``, 403 ``PermissionDeniedError``, 503 and connection failures
``BackendUnavailableError``; anything else ``ServerError``.
"""

from __future__ import annotations

import base64
import math
from datetime import date, datetime
from typing import Any, Mapping, Sequence

import httpx

from featurestore import errors as fserrors
from featurestore.errors import (
    BackendUnavailableError,
    FeatureStoreError,
    InvalidInputError,
    NotFoundError,
)


class AuthenticationError(FeatureStoreError):
    """401: the server wants an API key and got none or an unknown one."""


class PermissionDeniedError(FeatureStoreError):
    """403: the API key lacks the scope the route needs (``write`` for ``/push``)."""


class RequestTooLargeError(InvalidInputError):
    """413: the body or the number of entity rows is over the server's limit."""


class ServerError(FeatureStoreError):
    """500 or another unexpected status."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


_BY_STATUS: dict[int, type[FeatureStoreError]] = {
    401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError, 409: fserrors.ConflictError,
    413: RequestTooLargeError, 422: InvalidInputError, 503: BackendUnavailableError,
}


class OnlineFeatures(dict):
    """The REST response of ``/get-online-features`` (a dict) with helpers."""

    @property
    def feature_names(self) -> list[str]:
        return self["metadata"]["feature_names"]

    def to_dict(self) -> dict[str, list]:
        """Column name -> values (like ``OnlineResponse.to_dict()``)."""
        return {name: r["values"] for name, r in zip(self.feature_names, self["results"])}

    def statuses(self) -> dict[str, list[str]]:
        return {name: r["statuses"] for name, r in zip(self.feature_names, self["results"])}

    def event_timestamps(self) -> dict[str, list[str]]:
        return {name: r["event_timestamps"] for name, r in zip(self.feature_names, self["results"])}

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.to_dict(), columns=self.feature_names)


class FeatureClient:
    """Calls one feature server. Thread-safe (httpx.Client); close it or use it as a context manager."""

    def __init__(self, base_url: str = "http://127.0.0.1:6566", api_key: str | None = None,
                 timeout: float = 10.0, *, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["X-API-Key"] = api_key
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "FeatureClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------------------------
    def get_online_features(self, features: Sequence[str] | str | None = None, *,
                            entities: Mapping[str, Sequence[Any]] | None = None,
                            entity_rows: Sequence[Mapping[str, Any]] | None = None,
                            feature_service: str | None = None,
                            full_feature_names: bool = False) -> OnlineFeatures:
        """Latest values: ``features`` (``"view:feature"`` refs; a plain string is a feature service name)
        or ``feature_service``; ``entities`` column-major ``{"driver_id": [...]}`` or ``entity_rows``
        ``[{"driver_id": 1001}, ...]``."""
        if isinstance(features, str):
            features, feature_service = None, features
        if (entities is None) == (entity_rows is None):
            raise InvalidInputError("give exactly one of entities= or entity_rows=")
        if entity_rows is not None:
            entities = _rows_to_columns(entity_rows)
        payload: dict[str, Any] = {"entities": {k: list(v) for k, v in entities.items()},
                                   "full_feature_names": full_feature_names}
        if feature_service is not None:
            payload["feature_service"] = feature_service
        if features is not None:
            payload["features"] = list(features)
        return OnlineFeatures(self._request("POST", "/get-online-features", payload))

    def push(self, push_source_name: str, df: Any, to: str = "online") -> dict[str, Any]:
        """Write rows (a pandas DataFrame, a dict of lists or a list of dicts) for a push source."""
        return self._request("POST", "/push", {"push_source_name": push_source_name,
                                               "df": _columns_json(df), "to": to})

    def health(self) -> dict[str, Any]:
        """The server's ``/health`` body: ``status`` is ``ok`` or ``unavailable`` (never raises on 503)."""
        try:
            response = self._http.get("/health")
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(f"feature server at {self._http.base_url}: {exc}") from None
        if response.status_code in (200, 503):
            return response.json()
        raise _error_from(response)

    def registry(self, kind: str | None = None, name: str | None = None) -> dict[str, Any]:
        """``/registry`` (summary), ``/registry/<kind>`` or ``/registry/<kind>/<name>``; kind is
        ``entities``, ``feature-views``, ``feature-services`` or ``data-sources``."""
        path = "/registry" + (f"/{kind}" if kind else "") + (f"/{name}" if name else "")
        return self._request("GET", path)

    def metrics(self) -> str:
        return self._http.get("/metrics").text

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=payload)
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(f"feature server at {self._http.base_url}: "
                                          f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 200:
            return response.json()
        raise _error_from(response)


def _error_from(response: httpx.Response) -> FeatureStoreError:
    try:
        err = response.json()["error"]
        type_, message = str(err.get("type", "")), str(err.get("message", ""))
    except Exception:  # noqa: BLE001 - not our error body (a proxy, a crash)
        type_, message = "", response.text[:500] or response.reason_phrase
    status = response.status_code
    base = _BY_STATUS.get(status)
    if base is None:
        return ServerError(f"HTTP {status} {type_}: {message}".replace("  ", " "), status)
    named = getattr(fserrors, type_, None)  # e.g. FeatureViewNotFound: the server's own class
    if isinstance(named, type) and issubclass(named, base) and named is not fserrors.MissingDependencyError:
        try:
            return named(message)
        except TypeError:
            pass
    return base(message)


def _rows_to_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    columns: dict[str, list] = {}
    for i, row in enumerate(rows):
        if i and set(row) != set(columns):
            raise InvalidInputError(f"entity_rows[{i}] has keys {sorted(row)}, expected {sorted(columns)}")
        for k, v in row.items():
            columns.setdefault(k, []).append(v)
    return columns


def _json_value(v: Any) -> Any:
    if isinstance(v, datetime):  # pandas Timestamps too
        return v.isoformat() if v.tzinfo else v.isoformat() + "Z"
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):  # JSON carries bytes as base64 text (featurestore.values)
        return base64.b64encode(v).decode("ascii")
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):  # numpy scalars and arrays
        return _json_value(v.tolist())
    return v


def _finite(name: str, values: list) -> list:
    """``values``, refusing NaN and infinities as the server does (JSON cannot carry them anyway)."""
    for v in values:
        for x in v if isinstance(v, list) else (v,):
            if isinstance(x, float) and not math.isfinite(x):
                raise InvalidInputError(f"push: column {name!r} has {x}: NaN and infinities are not accepted "
                                        f"(send None for a missing value)")
    return values


def _columns_json(df: Any) -> dict[str, list]:
    if isinstance(df, Mapping):
        return {str(k): _finite(str(k), [_json_value(v) for v in values]) for k, values in df.items()}
    if isinstance(df, list):
        return {k: _finite(k, [_json_value(v) for v in vals]) for k, vals in _rows_to_columns(df).items()}
    if hasattr(df, "to_dict") and hasattr(df, "columns"):  # pandas.DataFrame
        import pandas as pd

        out = {}
        for name in df.columns:
            col = df[name]
            values = list(col) if pd.api.types.is_datetime64_any_dtype(col) else col.tolist()
            # A DataFrame's NaN/NaT is a missing value (null); elsewhere NaN is refused (_finite).
            out[str(name)] = [None if v is pd.NaT or (isinstance(v, float) and v != v) else _json_value(v)
                              for v in values]
        return out
    raise InvalidInputError(f"push takes a pandas DataFrame, a dict of lists or a list of dicts, "
                            f"got {type(df).__name__}")
