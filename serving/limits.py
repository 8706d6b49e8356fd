"""What one server will take from a client, in one place: request sizes, the lookup plan cache's bytes,
connections and read timeouts, with their defaults, ``featurestore serve`` flags and environment
variables.

=======================  =========================================  ==========  ====================================
setting                  bounds                                     default     flag / environment variable
=======================  =========================================  ==========  ====================================
``max_body_bytes``       a request body (413 beyond)                1,000,000   ``--max-body-bytes`` FEATURESTORE_MAX_BODY_BYTES
``max_entities``         entity rows of a lookup, rows of a push    10,000      ``--max-entities`` FEATURESTORE_MAX_ENTITIES
``max_features``         references in a lookup's ``features``      1,000       ``--max-features`` FEATURESTORE_MAX_FEATURES
                         (413 beyond; a reference listed twice is
                         a 422)
``shape_cache_bytes``    lookup plans cached per distinct request   16 MiB      ``--shape-cache-bytes`` FEATURESTORE_SHAPE_CACHE_BYTES
                         (least recently used dropped first)
``max_header_bytes``     a request's line and headers (431 beyond)  65,536      ``--max-header-bytes`` FEATURESTORE_MAX_HEADER_BYTES
``header_timeout``       seconds from a connection being ready for  10          ``--header-timeout`` FEATURESTORE_HEADER_TIMEOUT
                         a request to its headers' end (408)
``body_timeout``         seconds from the headers' end to the       30          ``--body-timeout`` FEATURESTORE_BODY_TIMEOUT
                         body's end (408)
``max_connections``      open connections and requests of a         1,000       ``--max-connections`` FEATURESTORE_MAX_CONNECTIONS
                         worker (503 beyond; uvicorn's
                         ``limit_concurrency``)
=======================  =========================================  ==========  ====================================

The timeouts suit a server without a proxy in front: 10 s for headers is ample for any real client
(they send them in one segment) and 30 s carries a 1 MB body at 33 KB/s; idle keep-alive connections are
closed after uvicorn's 5 s.

Memory: on top of a worker's idle footprint, a hostile client's requests make it hold at most
``memory_bound_bytes(limits, connections)``: the plan cache (``shape_cache_bytes``); the online store's
row layouts (``connectors.online_codec.RowDecoder`` keeps those of its last 257 distinct feature lists,
up to ``max_features`` features of about 400 bytes each); per open connection one body and one header
block; the objects of the requests being parsed (a few times a body); and 64 MiB of allocator slack.
With the defaults and 16 connections that is about 250 MB; ``max_connections`` times
``max_body_bytes`` is the term to lower for a worker with little memory. ``tests/test_serving_limits.py``
holds a real server to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from featurestore.errors import ConfigError
from featurestore.online_read import DEFAULT_SHAPE_CACHE_BYTES

ENV_PREFIX = "FEATURESTORE_"


@dataclass(frozen=True)
class ServingLimits:
    max_body_bytes: int = 1_000_000
    max_entities: int = 10_000
    max_features: int = 1_000
    shape_cache_bytes: int = DEFAULT_SHAPE_CACHE_BYTES
    max_header_bytes: int = 65_536
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"serving limit {f.name} must be a positive number, got {value!r}")

    @staticmethod
    def env_var(name: str) -> str:
        return ENV_PREFIX + name.upper()

    @classmethod
    def from_env(cls, environ: "os._Environ[str] | dict[str, str] | None" = None) -> "ServingLimits":
        """The defaults, overridden by the ``FEATURESTORE_<SETTING>`` variables that are set."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            text = environ.get(cls.env_var(f.name), "").strip()
            if not text:
                continue
            kind = float if f.type == "float" else int
            try:
                values[f.name] = kind(text.replace("_", ""))
            except ValueError:
                raise ConfigError(f"{cls.env_var(f.name)}={text!r}: expected a positive "
                                  f"{'number' if kind is float else 'integer'}") from None
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The settings as ``FEATURESTORE_<SETTING>`` variables (how ``featurestore serve`` hands them
        to its workers)."""
        return {self.env_var(f.name): str(getattr(self, f.name)) for f in fields(self)}


ROW_LAYOUT_REQUESTS = 257  # feature lists whose row layouts online_codec.RowDecoder keeps
ROW_LAYOUT_BYTES_PER_FEATURE = 512


def memory_bound_bytes(limits: ServingLimits, connections: int) -> int:
    """The most memory a worker holds beyond its idle footprint for ``connections`` open connections
    (see the module docstring)."""
    return (limits.shape_cache_bytes
            + ROW_LAYOUT_REQUESTS * limits.max_features * ROW_LAYOUT_BYTES_PER_FEATURE
            + connections * (limits.max_body_bytes + limits.max_header_bytes)
            + 16 * limits.max_body_bytes
            + 64 * 2**20)
