"""What the routers share, kept on ``app.state.serving``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving.metrics import ServingMetrics

if TYPE_CHECKING:
    from starlette.requests import Request

    from featurestore.store import FeatureStore


@dataclass
class ServingState:
    store: "FeatureStore"
    metrics: ServingMetrics
    max_entities: int
    max_body_bytes: int


def state_of(request: "Request") -> ServingState:
    return request.app.state.serving
