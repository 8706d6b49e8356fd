"""What the routers share, kept on ``app.state.serving``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, TypeVar

from starlette.concurrency import run_in_threadpool

from featurestore.errors import BackendUnavailableError
from serving.metrics import ServingMetrics

if TYPE_CHECKING:
    from starlette.requests import Request

    from featurestore.store import FeatureStore


T = TypeVar("T")


class StoreCalls:
    """Runs a blocking store call from an async endpoint: inline while the backend answers (no thread
    hop: the fast path), in the thread pool from a ``BackendUnavailableError`` until a call succeeds
    again (each waiting request then costs one socket timeout in parallel, and the event loop keeps
    serving ``/health`` and ``/metrics``)."""

    def __init__(self) -> None:
        self.degraded = False

    async def run(self, fn: Callable[..., T], *args) -> T:
        if not self.degraded:
            try:
                return fn(*args)
            except BackendUnavailableError:
                self.degraded = True
                raise
        result = await run_in_threadpool(fn, *args)
        self.degraded = False
        return result


@dataclass
class ServingState:
    store: "FeatureStore"
    metrics: ServingMetrics
    max_entities: int
    max_body_bytes: int
    max_features: int
    store_calls: StoreCalls = field(default_factory=StoreCalls)


def state_of(request: "Request") -> ServingState:
    return request.app.state.serving
