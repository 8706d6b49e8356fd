"""File sources: resolve a FileSource's path (file, directory or glob) and describe its files.

Reading is left to the engine (DuckDB and Spark scan Parquet/CSV files natively); this module only
answers which files there are, what schema they have and a fingerprint of their contents.
"""

from __future__ import annotations

import glob
import os
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from featurestore.errors import NotFoundError
from featurestore.fingerprints import fingerprint_paths
from featurestore.ports.engine import ViewData
from featurestore.ports.source_reader import SourceReader
from featurestore.sources import FileSource

_EXTENSIONS = {"parquet": (".parquet", ".pq", ".parq"), "csv": (".csv", ".csv.gz")}


def resolve_paths(source: FileSource, repo_path: Path) -> list[str]:
    """The data files behind a FileSource, sorted; raises NotFoundError naming the source if none."""
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
        raise NotFoundError(f"FileSource {source.name!r}: no {source.file_format} files at path "
                            f"{source.path!r} (resolved to {base})")
    return sorted(files)


def read_schema(source: FileSource, repo_path: Path) -> pa.Schema:
    """The schema of the source's first file (files of one source are expected to agree)."""
    first = resolve_paths(source, repo_path)[0]
    if source.file_format == "csv":
        reader = pacsv.open_csv(first)
        return reader.schema
    return pq.read_schema(first)


def fingerprint(source: FileSource, repo_path: Path) -> str:
    """Changes whenever a file is added, removed or rewritten (path, size, modification time)."""
    return fingerprint_paths(resolve_paths(source, repo_path))


class FileSourceReader(SourceReader):
    """FileSource rows: the files themselves, which the engines scan natively."""

    def schema(self, source: FileSource) -> pa.Schema:
        return read_schema(source, self.repo_path)

    def fingerprint(self, source: FileSource) -> str:
        return fingerprint(source, self.repo_path)

    def read(self, source: FileSource, columns: list[str] | None, start: datetime | None,
             end: datetime | None) -> ViewData:
        return ViewData(source.timestamp_field, source.created_timestamp_field,
                        files=tuple(resolve_paths(source, self.repo_path)), file_format=source.file_format)
