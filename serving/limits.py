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
closed after uvicorn's 5 s. Memory: on top of a worker's idle footprint, a hostile read-only client can
make it hold at most ``shape_cache_bytes`` of plans plus, per open connection, one body of at most
``max_body_bytes`` and ``max_header_bytes`` of headers, plus the transient objects of the request being
parsed (a few times its body). ``MEMORY_BOUND_BYTES`` states it for the defaults and
``tests/test_serving_limits.py`` holds a real server to it.
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


# The extra memory a worker may reach under a hostile read-only client, with the default limits and up
# to 16 concurrent connections (see the module docstring): the plan cache, each connection's body and
# headers, and 64 MiB for the request being parsed, allocator slack and the online store's own caches.
MEMORY_BOUND_BYTES = (DEFAULT_SHAPE_CACHE_BYTES + 16 * (ServingLimits.max_body_bytes + ServingLimits.max_header_bytes)
                      + 64 * 2**20)
