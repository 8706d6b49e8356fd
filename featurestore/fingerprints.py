"""Fingerprints of data files: what an export's manifest records so a rerun can tell changed input."""

from __future__ import annotations

import hashlib
import os


def fingerprint_paths(paths: list[str]) -> str:
    """A digest of files' paths, sizes and modification times (not their contents: cheap)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return "files:" + digest.hexdigest()[:32]
