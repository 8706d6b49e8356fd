"""File sources: resolve a FileSource's path (file, directory or glob; local or s3://) and describe
its files.

Reading is left to the engine: local files are scanned natively (DuckDB, Spark); files on object
storage are handed over as a pyarrow dataset over their filesystem (``connectors.object_store``).
This module only answers which files there are, what schema they have and a fingerprint of them.
"""

from __future__ import annotations

import glob
import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from connectors.object_store import expand, is_remote, list_files
from featurestore.errors import DamagedStateError, NotFoundError
from featurestore.fingerprints import fingerprint_paths
from featurestore.ports.engine import ViewData
from featurestore.ports.source_reader import SourceReader
from featurestore.sources import FileSource

if TYPE_CHECKING:
    import pyarrow.dataset as pds

_EXTENSIONS = {"parquet": (".parquet", ".pq", ".parq"), "csv": (".csv", ".csv.gz")}


def _owner(source: FileSource) -> str:
    return f"FileSource {source.name!r}"


def resolve_paths(source: FileSource, repo_path: Path) -> list[str]:
    """The local data files behind a FileSource, sorted; raises NotFoundError naming the source if none."""
    raw = os.path.expanduser(source.path)
    base = raw if os.path.isabs(raw) else str(repo_path / raw)
    if glob.has_magic(base):
        files = [p for p in glob.glob(base, recursive=True) if os.path.isfile(p)]
    elif os.path.isdir(base):
        exts = _EXTENSIONS[source.file_format or "parquet"]
        files = [str(p) for p in Path(base).rglob("*") if p.is_file() and p.name.lower().endswith(exts)
                 and not any(part.startswith((".", "_")) for part in p.relative_to(base).parts)]
    elif os.path.isfile(base):
        files = [base]
    else:
        files = []
    if not files:
        raise NotFoundError(f"{_owner(source)}: no {source.file_format} files at path "
                            f"{source.path!r} (resolved to {base})")
    return sorted(files)


def remote_files(source: FileSource) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """The objects behind an s3:// FileSource; raises NotFoundError naming the source if none."""
    fs, infos = list_files(source.path, expand(source.storage_options, _owner(source)),
                           _EXTENSIONS[source.file_format or "parquet"], _owner(source))
    if not infos:
        raise NotFoundError(f"{_owner(source)}: no {source.file_format} files at {source.path!r}")
    return fs, infos


def _format(source: FileSource) -> "pds.FileFormat":
    import pyarrow.dataset as pds  # only for object storage (it loads pandas)

    return pds.CsvFileFormat() if source.file_format == "csv" else pds.ParquetFileFormat()


def read_schema(source: FileSource, repo_path: Path) -> pa.Schema:
    """The schema of the source's first file (files of one source are expected to agree); a file
    that cannot be read is a DamagedStateError naming it."""
    first = None
    try:
        if is_remote(source.path):
            fs, infos = remote_files(source)
            first = infos[0].path
            return _format(source).inspect(first, filesystem=fs)
        first = resolve_paths(source, repo_path)[0]
        if source.file_format == "csv":
            return pacsv.open_csv(first).schema
        return pq.read_schema(first)
    except (OSError, pa.ArrowInvalid) as exc:
        if first is None or (is_remote(source.path) and not isinstance(exc, pa.ArrowInvalid)):
            raise  # not the file's content: a store that cannot be reached
        raise DamagedStateError(f"{_owner(source)}: the file {first} cannot be read: {exc}", path=first,
                                repair="restore the file from a good copy, or remove it from the source's "
                                       "path") from None


def fingerprint(source: FileSource, repo_path: Path) -> str:
    """Changes whenever a file is added, removed or rewritten (path, size, modification time)."""
    if not is_remote(source.path):
        return fingerprint_paths(resolve_paths(source, repo_path))
    digest = hashlib.sha256()
    for info in remote_files(source)[1]:
        digest.update(f"{info.path}\0{info.size}\0{info.mtime_ns}\n".encode())
    return "files:" + digest.hexdigest()[:32]


class FileSourceReader(SourceReader):
    """FileSource rows: local files, which the engines scan natively, or a dataset over object storage."""

    def schema(self, source: FileSource) -> pa.Schema:
        return read_schema(source, self.repo_path)

    def fingerprint(self, source: FileSource) -> str:
        return fingerprint(source, self.repo_path)

    def read(self, source: FileSource, columns: list[str] | None, start: datetime | None,
             end: datetime | None) -> ViewData:
        if is_remote(source.path):
            fs, infos = remote_files(source)
            fmt = _format(source)
            schema = fmt.inspect(infos[0].path, filesystem=fs)
            import pyarrow.dataset as pds

            dataset = pds.dataset([i.path for i in infos], schema=schema, format=fmt, filesystem=fs)
            return ViewData(source.timestamp_field, source.created_timestamp_field, dataset=dataset,
                            file_format=source.file_format,
                            storage_options=tuple(sorted((source.storage_options or {}).items())))
        return ViewData(source.timestamp_field, source.created_timestamp_field,
                        files=tuple(resolve_paths(source, self.repo_path)), file_format=source.file_format)
