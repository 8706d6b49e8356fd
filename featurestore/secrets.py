"""Secrets in source definitions: only as ``${VAR}`` placeholders.

A SqlSource's ``url`` and a source's ``storage_options`` may name environment variables as
``${VAR}``; the connectors replace them when the source is read, so the definition, the registry and
``GET /registry`` hold the placeholder, never the secret. ``literal_secrets`` finds the secrets written
out instead (apply refuses them); ``redact`` hides them in specs a registry already holds.

>>> literal_secrets({"kind": "sql", "name": "s", "url": "postgresql://app:hunter2@db/features"})
[('url', 'the password of the url')]
>>> literal_secrets({"kind": "sql", "name": "s", "url": "postgresql://app:${DB_PASSWORD}@db/features"})
[]
>>> redact({"kind": "sql", "name": "s", "url": "postgresql://app:hunter2@db/features"})["url"]
'postgresql://app:***@db/features'
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit

REDACTED = "***"
_PLACEHOLDER = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
# Storage option names and URL query parameters that hold secrets (any case).
_SECRET_OPTION = re.compile(r"secret|password|passwd|token|credential|account_key|private_key|sas_key", re.I)
_SECRET_PARAM = re.compile(r"^(password|passwd|pwd|sslpassword|secret|token|access_token)$", re.I)
# Secrets inside a query value (an ODBC connection string: ``odbc_connect=...;PWD=...``).
_INNER_SECRET = re.compile(r"(?i)\b(password|passwd|pwd)=([^;&]*)")


def is_placeholder(value: str) -> bool:
    """Whether ``value`` is made of ``${VAR}`` placeholders only (nothing written out)."""
    return bool(value) and not _PLACEHOLDER.sub("", value)


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:
        return None


def url_secrets(url: str) -> list[str]:
    """What in ``url`` is a secret written out: its password, secret query parameters."""
    parts = _split(url)
    if parts is None:
        return []
    found = []
    if parts.password and not is_placeholder(parts.password):
        found.append("the password of the url")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAM.match(name) and value and not is_placeholder(value):
            found.append(f"the url's query parameter {name!r}")
        elif any(v and not is_placeholder(v) for _, v in _INNER_SECRET.findall(value)):
            found.append(f"a password inside the url's query parameter {name!r}")
    return found


def _redact_url(url: str) -> str:
    """``url`` with its written-out secrets replaced (the rest of the text as it was)."""
    parts = _split(url)
    if parts is None or not url_secrets(url):
        return url
    if parts.password and not is_placeholder(parts.password):
        user, _, host = parts.netloc.rpartition("@")
        url = url.replace(f"//{parts.netloc}", f"//{user.partition(':')[0]}:{REDACTED}@{host}", 1)
    if parts.query:
        query = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if _SECRET_PARAM.match(name) and value and not is_placeholder(value):
                value = REDACTED
            value = _INNER_SECRET.sub(lambda m: m.group(0) if is_placeholder(m.group(2))
                                      else f"{m.group(1)}={REDACTED}", value)
            query.append((name, value))
        head = url.partition("?")[0]
        url = f"{head}?{urlencode(query, safe='*${}', quote_via=quote)}" + (f"#{parts.fragment}" if parts.fragment else "")
    return url


def _secret_options(options: Any) -> list[str]:
    if not isinstance(options, dict):
        return []
    return [name for name, value in options.items()
            if _SECRET_OPTION.search(str(name)) and isinstance(value, str) and value and not is_placeholder(value)]


def literal_secrets(source_spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, what) for every secret written out in a source's spec, its batch source's included."""
    found: list[tuple[str, str]] = []
    if source_spec.get("kind") == "sql" and isinstance(source_spec.get("url"), str):
        found += [("url", what) for what in url_secrets(source_spec["url"])]
    found += [("storage_options", f"storage option {name!r}")
              for name in _secret_options(source_spec.get("storage_options"))]
    if isinstance(source_spec.get("batch_source"), dict):
        found += [(f"batch_source.{f}", what) for f, what in literal_secrets(source_spec["batch_source"])]
    return found


def redact(spec: Any) -> Any:
    """``spec`` (any registry spec: a view holds its source's) with written-out secrets replaced by
    ``***``; a spec without any comes back equal."""
    if isinstance(spec, list):
        return [redact(v) for v in spec]
    if not isinstance(spec, dict):
        return spec
    out = {k: redact(v) for k, v in spec.items()}
    if out.get("kind") == "sql" and isinstance(out.get("url"), str):
        out["url"] = _redact_url(out["url"])
    options = out.get("storage_options")
    for name in _secret_options(options):
        options[name] = REDACTED
    return out
