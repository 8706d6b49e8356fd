"""``POST /push``: rows for a push source (Feast's request shape) to the online store, the offline store
or both, through the store's validated, event-time monotonic write path (``store.push``)."""

from __future__ import annotations

import pyarrow as pa
from fastapi import APIRouter, Request  # noqa: TID253

from featurestore.errors import InvalidInputError
from featurestore.values import check_one_kind
from serving.errors import RequestTooLarge, error_responses
from serving.models import PushRequest, PushResponse
from serving.responses import JSONBytesResponse
from serving.state import state_of

router = APIRouter(tags=["push"])

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError,
                 ValueError)


def as_arrow(df: dict[str, list]) -> pa.Table:
    """The JSON columns as an Arrow table; a column whose values do not form one type is a 422 naming
    it (``store.push`` would otherwise meet the Arrow error unwrapped)."""
    lengths = {len(v) for v in df.values()}
    if len(lengths) > 1:
        raise InvalidInputError(f"df: columns have different lengths {sorted(lengths)}")
    arrays = {}
    for name, values in df.items():
        check_one_kind(f"push: column {'df.' + name!r}", values)
        try:
            arrays[name] = pa.array(values)
        except _ARROW_ERRORS as exc:
            raise InvalidInputError(f"df.{name}: the values do not form one column of a single type "
                                    f"({type(exc).__name__}: {exc})") from None
    return pa.table(arrays) if arrays else pa.table({})


@router.post("/push", response_model=PushResponse, responses=error_responses(400, 401, 403, 404, 422, 503),
             summary="Write rows of a push source to the online and/or offline store")
def push(body: PushRequest, request: Request) -> JSONBytesResponse:
    state = state_of(request)
    rows = max(map(len, body.df.values()), default=0)
    if rows > state.max_entities:
        raise RequestTooLarge(f"df: {rows} rows, at most {state.max_entities} per request")
    table = as_arrow(body.df)
    try:
        result = state.store.push(body.push_source_name, table, to=body.to)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        # Data the core could not convert: the client's input, not a server fault.
        raise InvalidInputError(f"df: {exc}") from None
    state.metrics.pushed(body.push_source_name, result.rows)
    return JSONBytesResponse({"push_source_name": body.push_source_name, "to": body.to, "views": result.views,
                              "rows": result.rows, "online_written": result.online_written,
                              "online_skipped": result.online_skipped})
