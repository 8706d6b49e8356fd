"""Optional API keys with scopes ``read`` (lookups, registry) and ``write`` (``/push``).

A key is sent as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. When keys are configured a
request without a valid key gets 401 and a key without the route's scope 403; ``/health`` and
``/metrics`` stay open. Configure with ``create_app(api_keys={"k1": {"read"}, "k2": {"read", "write"}})``
or, for ``featurestore serve``, ``FEATURESTORE_API_KEYS="k1:read,k2:read+write"``.

Without keys, reads are open but writes are not open to the network: ``/push`` is answered only for
clients on this machine (``is_local_client``: a loopback address, a unix socket, an in-process client)
and refused with 403 for any other, unless the operator opts in with
``create_app(allow_remote_writes=True)`` or ``featurestore serve --allow-remote-writes``. Behind a
reverse proxy on the same machine, clients are judged by the ``X-Forwarded-For`` address uvicorn
trusts from it (``--forwarded-allow-ips``); a proxy that does not send it makes every client look
local, so configure keys there.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated, Any, Callable, Optional

from fastapi import Request, Security  # noqa: TID253
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer  # noqa: TID253
from starlette.exceptions import HTTPException as StarletteHTTPException

from featurestore.errors import ConfigError

SCOPES = frozenset({"read", "write"})
ENV_VAR = "FEATURESTORE_API_KEYS"
REMOTE_WRITES_ENV = "FEATURESTORE_ALLOW_REMOTE_WRITES"

# Documented in OpenAPI as two security schemes; neither fails by itself (the check below decides).
_header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader")
_bearer_scheme = HTTPBearer(auto_error=False, scheme_name="BearerKey")
HeaderKey = Annotated[Optional[str], Security(_header_scheme)]
BearerKey = Annotated[Optional[HTTPAuthorizationCredentials], Security(_bearer_scheme)]


def parse_api_keys(spec: str | None) -> dict[str, set[str]] | None:
    """``"k1:read,k2:read+write"`` -> ``{"k1": {"read"}, "k2": {"read", "write"}}``; empty -> None."""
    if spec is None or not spec.strip():
        return None
    keys: dict[str, set[str]] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, scopes = item.rpartition(":")
        if not sep or not key:
            raise ConfigError(f"{ENV_VAR}: {item!r} is not of the form key:scope[+scope]")
        keys[key] = {s.strip() for s in scopes.split("+") if s.strip()}
    return _validated(keys)


def _validated(keys: dict[str, set[str]]) -> dict[str, set[str]]:
    for key, scopes in keys.items():
        unknown = set(scopes) - SCOPES
        if unknown or not scopes:
            raise ConfigError(f"API key {key[:4]}...: scopes must be some of {sorted(SCOPES)}, got "
                              f"{sorted(scopes)}")
    return keys


class ApiKeyAuth:
    def __init__(self, keys: dict[str, set[str]]) -> None:
        self._keys = [(k.encode(), frozenset(s)) for k, s in _validated(dict(keys)).items()]

    def scopes_of(self, key: str | None) -> frozenset[str] | None:
        if not key:
            return None
        given = key.encode()
        found = None
        for candidate, scopes in self._keys:  # compare against every key: no early exit
            if hmac.compare_digest(candidate, given):
                found = scopes
        return found

    def require(self, scope: str) -> Callable[..., Any]:
        """A FastAPI dependency that admits keys holding ``scope`` (documented as security schemes)."""

        async def check(api_key: HeaderKey = None, bearer: BearerKey = None) -> None:
            key = api_key or (bearer.credentials if bearer is not None else None)
            scopes = self.scopes_of(key)
            if scopes is None:
                raise StarletteHTTPException(
                    401, "missing or invalid API key (send X-API-Key or Authorization: Bearer)",
                    headers={"WWW-Authenticate": "Bearer"})
            if scope not in scopes:
                raise StarletteHTTPException(403, f"this API key lacks the {scope!r} scope")

        return check


def is_local_client(host: str | None) -> bool:
    """Whether a peer is on this machine: a loopback IP address (IPv4, IPv6, or IPv4 mapped into IPv6),
    or no network address at all (a unix socket; an in-process ASGI client such as Starlette's
    TestClient, whose host is a name, never an address a network peer can have)."""
    if not host:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


async def local_writes_only(request: Request) -> None:
    """Without API keys: writes from other machines are refused (403)."""
    host = request.client.host if request.client is not None else None
    if not is_local_client(host):
        raise StarletteHTTPException(
            403, f"writes from {host} are refused: this server has no API keys, so /push is answered only "
                 f"for clients on its own machine; configure {ENV_VAR} with a key holding the 'write' scope, "
                 f"or start it with --allow-remote-writes to accept anonymous writes from anywhere")
