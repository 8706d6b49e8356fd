"""Which files a Parquet path means: a file is itself; a folder is every file under it, recursively,
leaving out names (of files or folders) that start with ``.`` or ``_`` (``_SUCCESS``, ``.crc``,
``_delta_log``), in name order.

This is pyarrow's dataset discovery rule, written out so that reading an entity folder's file list
does not import ``pyarrow.dataset`` (which loads pandas: about 50 MB in every export process)."""

from __future__ import annotations

import os

from featurestore.errors import NotFoundError


def parquet_files(path: str | os.PathLike) -> list[str]:
    """The files ``path`` stands for, sorted; a folder with none is a ``NotFoundError``."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return [path]
    found = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        found += [os.path.join(folder, f) for f in files if not f.startswith((".", "_"))]
    if not found:
        raise NotFoundError(f"no Parquet files in the entity folder {path}")
    return sorted(found)
