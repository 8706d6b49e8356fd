"""The source reader contract: the rows of one kind of batch source, handed to an engine.

Readers live in ``connectors/`` (``file_source``, ``sql_source``, ``delta_source``) and are loaded by
the source's ``kind`` from the ``featurestore.source_readers`` entry-point group
(``plugins.source_reader``). Exports, materialization and validation call only the methods below; the
optional ones only when the reader declares their capability.

Versioned sources (``CAP_VERSIONS``) have numbered, immutable versions (a Delta table's commits):
``version(source)`` is the version a plain ``read`` sees now (the pinned one if the source pins it),
and ``read_version(source, version, ...)`` reads that version again later, whatever was committed
since, as long as the source still keeps it. A caller that records ``version`` can reproduce a read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from featurestore.ports.engine import ViewData

# Capability names a reader may declare in ``capabilities``.
CAP_PRUNE = "prune"  # ``read`` reads only the named columns and the rows inside the time bounds
CAP_VERSIONS = "versions"  # ``version(source)`` names what ``read`` sees; ``read_version`` reads it again


class SourceReader(ABC):
    """Reads sources of one kind; constructed as ``cls(repo_path)``."""

    capabilities: frozenset[str] = frozenset()

    def __init__(self, repo_path: Path):
        self.repo_path = repo_path

    @abstractmethod
    def schema(self, source: Any) -> pa.Schema:
        """The source's columns and Arrow types, in its own names (before its field mapping)."""

    @abstractmethod
    def fingerprint(self, source: Any) -> str:
        """Changes whenever the source's rows may have changed."""

    @abstractmethod
    def read(self, source: Any, columns: list[str] | None, start: datetime | None,
             end: datetime | None) -> ViewData:
        """The source's rows as engine input, in its own column names. A reader with ``CAP_PRUNE``
        reads only ``columns`` (None: all) and rows with start <= ts <= end; others may return more,
        which the engine bounds."""

    def version(self, source: Any) -> int:
        """The version a ``read`` of ``source`` sees now (``CAP_VERSIONS``)."""
        raise NotImplementedError(f"{type(self).__name__} does not version its sources")

    def read_version(self, source: Any, version: int, columns: list[str] | None, start: datetime | None,
                     end: datetime | None) -> ViewData:
        """``read`` as of ``version`` (``CAP_VERSIONS``); a version the source no longer has is a
        NotFoundError."""
        raise NotImplementedError(f"{type(self).__name__} does not version its sources")
