"""Where bytes live: a local path or an ``s3://bucket/key`` URI, opened as a pyarrow filesystem.

``storage_options`` use delta-rs's names (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ...; any case) so one dict serves delta-rs, pyarrow and
Spark's S3A. ``${VAR}`` in a value is replaced from the environment only here, when the bytes are
opened: definitions and the registry keep the placeholder, never the secret.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pyarrow import fs as pafs

from featurestore.errors import BackendUnavailableError, InvalidInputError, NotFoundError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_GLOB = re.compile(r"[*?\[]")


def is_remote(uri: str) -> bool:
    return "://" in uri


def expand(options: dict[str, str] | None, owner: str) -> dict[str, str]:
    """``options`` with every ``${VAR}`` replaced from the environment; ``owner`` names who asked
    (``"FileSource 'clicks'"``) in the error for an unset variable."""

    def var(match: re.Match) -> str:
        if match.group(1) not in os.environ:
            raise InvalidInputError(f"{owner}: environment variable {match.group(1)} is not set")
        return os.environ[match.group(1)]

    out = {k: _VAR.sub(var, str(v)) for k, v in (options or {}).items()}
    # An http:// endpoint is plain HTTP on purpose (a local MinIO): delta-rs refuses it unless told.
    endpoint = _lookup(out, "aws_endpoint_url", "endpoint_url", "aws_endpoint")
    if endpoint and endpoint.startswith("http://") and _lookup(out, "aws_allow_http", "allow_http") is None:
        out["AWS_ALLOW_HTTP"] = "true"
    return out


def _lookup(options: dict[str, str], *names: str) -> str | None:
    lower = {k.lower(): v for k, v in options.items()}
    return next((lower[n] for n in names if lower.get(n)), None)


def filesystem(uri: str, options: dict[str, str]) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it for ``uri``; ``options`` are already expanded."""
    if not is_remote(uri):
        return pafs.LocalFileSystem(), uri
    scheme, _, rest = uri.partition("://")
    if scheme not in ("s3", "s3a"):
        raise InvalidInputError(f"unsupported storage scheme {scheme!r} in {uri!r} (local paths and s3:// are)")
    kwargs: dict[str, Any] = {}
    endpoint = _lookup(options, "aws_endpoint_url", "endpoint_url", "aws_endpoint")
    if endpoint:
        proto, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or endpoint, scheme=proto if host else "https")
    for arg, names in (("access_key", ("aws_access_key_id",)), ("secret_key", ("aws_secret_access_key",)),
                       ("session_token", ("aws_session_token",)), ("region", ("aws_region", "region"))):
        value = _lookup(options, *names)
        if value:
            kwargs[arg] = value
    return pafs.S3FileSystem(**kwargs), rest


def hadoop_settings(options: dict[str, str]) -> dict[str, str]:
    """Hadoop S3A settings (``fs.s3a.*``) for the same endpoint and credentials as ``options``."""
    out = {"fs.s3a.path.style.access": "true"}
    endpoint = _lookup(options, "aws_endpoint_url", "endpoint_url", "aws_endpoint")
    if endpoint:
        out["fs.s3a.endpoint"] = endpoint
        out["fs.s3a.connection.ssl.enabled"] = str(not endpoint.startswith("http://")).lower()
    for key, names in (("fs.s3a.access.key", ("aws_access_key_id",)),
                       ("fs.s3a.secret.key", ("aws_secret_access_key",)),
                       ("fs.s3a.session.token", ("aws_session_token",)),
                       ("fs.s3a.endpoint.region", ("aws_region", "region"))):
        value = _lookup(options, *names)
        if value:
            out[key] = value
    return out


def list_files(uri: str, options: dict[str, str], suffixes: tuple[str, ...], owner: str
               ) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """The files at ``uri`` on object storage: one object, every object under a prefix (ending in
    ``suffixes``, skipping names starting with ``.`` or ``_``), or the objects a glob matches (``*``
    stays within one path segment, ``**`` crosses them). Sorted by path inside the returned filesystem;
    none found is an empty list, a missing bucket a NotFoundError naming ``owner``."""
    fs, path = filesystem(uri, options)
    glob = _GLOB.search(path)
    base = path[:glob.start()].rpartition("/")[0] if glob else path.rstrip("/")
    bucket = path.split("/", 1)[0]
    try:
        if not glob and not path.endswith("/"):
            single = fs.get_file_info(path)
            if single.type == pafs.FileType.File:
                return fs, [single]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        if not infos and fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise NotFoundError(f"{owner}: bucket {bucket!r} does not exist ({uri})")
    except OSError as exc:
        if "NO_SUCH_BUCKET" in str(exc) or "NoSuchBucket" in str(exc):
            raise NotFoundError(f"{owner}: bucket {bucket!r} does not exist ({uri})") from None
        raise BackendUnavailableError(f"{owner}: cannot list {uri}: {exc}") from exc
    files = [i for i in infos if i.type == pafs.FileType.File]
    if glob:
        pattern = re.compile(_glob_regex(path))
        files = [i for i in files if pattern.fullmatch(i.path)]
    else:
        files = [i for i in files if i.path.lower().endswith(suffixes)
                 and not any(p.startswith((".", "_")) for p in i.path[len(base) + 1:].split("/"))]
    return fs, sorted(files, key=lambda i: i.path)


def _glob_regex(pattern: str) -> str:
    """A regular expression for a glob over ``/``-separated keys."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 2 if pattern[i + 1:i + 2] == "]" else i + 1)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
