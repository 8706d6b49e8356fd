"""What every engine implements, and the plain data it is handed.

The core decides *what* to compute (which view, which rows, which bounds); an engine decides *how*.
Data locations are given as files, an Arrow table or an Arrow dataset, in the data's own column
names, so an engine never needs to know about sources, registries or stores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from featurestore.checks import CheckCounts
from featurestore.errors import DefinitionError
from featurestore.ports.online_store import WriteResult
from transforms import infer_type, output_name

if TYPE_CHECKING:
    import pyarrow.dataset as pds

# Capability names an engine may declare in ``capabilities``.
CAP_EXPORT_PARQUET = "export_parquet"  # ``export_parquet``: a whole export read, joined and written by the engine
CAP_CLUSTER_WRITES = "cluster_writes"  # ``materialize``: rows stay on the cluster, whose executors write the stores

# Canonical timestamp columns of a view's rows once they leave a source (offline store, online writes).
EVENT_TS = "event_timestamp"
CREATED_TS = "created_timestamp"
# The failed check's name on quarantined rows (``ViewData.quarantined``).
CHECK_COLUMN = "__fs_check"


@dataclass(frozen=True)
class ViewData:
    """Where one view's rows are, exactly one of: local Parquet/CSV ``files``, an in-memory Arrow
    ``table``, or an Arrow ``dataset`` (files an engine cannot open by path, such as objects on
    s3://, read through pyarrow's filesystem; scanned lazily, with projection and filters pushed down).
    ``storage_options`` (``${VAR}`` not yet expanded) are the object-store settings of the dataset, or
    of ``files`` given as URIs (an offline store on s3://), for an engine that opens them itself
    (``connectors.object_store`` reads them)."""

    timestamp_column: str
    created_column: str | None
    files: tuple[str, ...] = ()
    file_format: str = "parquet"
    table: pa.Table | None = None
    dataset: "pds.Dataset | None" = None
    storage_options: tuple[tuple[str, str], ...] = ()
    # The view's row pipeline, applied in this order: source columns renamed (field mapping), rows
    # kept where ``filter`` is True, ``transform`` outputs added (or replacing columns). ``schema``
    # holds the renamed source column types, for exact cast semantics.
    rename: tuple[tuple[str, str], ...] = ()
    filter: Any = None
    transform: tuple[Any, ...] = ()
    schema: tuple[tuple[str, Any], ...] = ()
    # Rows appended by stream jobs and pushes (Parquet files of ``columns``, ``event_timestamp`` and
    # ``created_timestamp``), added to the rows above after their pipeline; an appended row equal to a
    # row above (in ``columns`` and both times) is the same event and counts once (EXCEPT ALL).
    appended: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    appended_storage_options: tuple[tuple[str, str], ...] = ()  # for appended files on object storage
    # The view's drop checks (name, Bool expression over the rows after the transforms), the pipeline's
    # last step: rows failing one are left out (``transforms.checks``: false or null fails) before the
    # appended rows are added (those were checked where they came in). With ``quarantined`` only the
    # failing rows are kept, with the name of the first check they fail in column ``CHECK_COLUMN``.
    checks: tuple[tuple[str, Any], ...] = ()
    quarantined: bool = False

    @property
    def has_pipeline(self) -> bool:
        return bool(self.rename or self.filter is not None or self.transform or self.checks)

    def __post_init__(self) -> None:
        if bool(self.files) + (self.table is not None) + (self.dataset is not None) != 1:
            raise ValueError("ViewData takes files, a table or a dataset, exactly one")


@dataclass(frozen=True)
class ViewJoin:
    """One view's part of a point-in-time join.

    ``keys`` pairs each entity-frame key column with the data column it matches and the view's key
    type; ``features`` pairs each data column with the output column name.
    """

    name: str
    keys: tuple[tuple[str, str, pa.DataType], ...]
    features: tuple[tuple[str, str, pa.DataType], ...]
    ttl_seconds: float | None
    data: ViewData
    # For aggregation views: the aggregations (features are then (aggregation name, output, type)) and
    # the types of the event columns they read.
    aggregations: tuple[Any, ...] = ()
    event_columns: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ClusterMaterialization:
    """One view's materialization of [start, end) run by a cluster engine's executors: they write the
    offline store (``offline_store`` config section) and, when ``online_store`` is given, upsert the
    online store; ``aggregation`` (an aggregation view) says to write its state rows online."""

    view: str
    data: ViewData
    keys: tuple[tuple[str, pa.DataType], ...]
    features: tuple[tuple[str, str, pa.DataType], ...]
    start: datetime
    end: datetime
    ttl: timedelta | None
    repo_path: str
    project: str
    offline_store: dict[str, Any]
    online_store: dict[str, Any] | None
    aggregation: ViewJoin | None = None


class Engine(ABC):
    """An engine: a point-in-time join and a bounded read of a view's rows."""

    name: str = ""
    capabilities: frozenset[str] = frozenset()

    @abstractmethod
    def point_in_time_join(self, entity: pa.Table, timestamp_column: str,
                           joins: list[ViewJoin]) -> pa.Table:
        """Feature columns for every entity row, in entity order (the entity columns are not repeated)."""

    @abstractmethod
    def read_rows(self, data: ViewData, keys: list[tuple[str, pa.DataType]],
                  features: list[tuple[str, str, pa.DataType]], start: datetime | None,
                  end: datetime | None) -> pa.Table:
        """A view's rows with start <= event time < end: key columns, features (output names),
        ``event_timestamp`` and ``created_timestamp`` (UTC), in no particular order."""

    @abstractmethod
    def aggregation_state(self, join: ViewJoin, start: datetime, end: datetime) -> Any:
        """An aggregation view's online state rows as of ``end`` for the entities with events in
        [start, end) (layout: featurestore.online_aggregate), in the engine's own frame type.
        ``join`` describes the view as for an export (its keys, aggregations and event columns)."""

    @abstractmethod
    def time_bounds(self, data: ViewData, start: datetime | None, end: datetime | None
                    ) -> tuple[datetime | None, datetime | None]:
        """(min, max) event time of the rows with start <= event time < end; (None, None) if none."""

    @abstractmethod
    def check_counts(self, data: ViewData, checks: list[tuple[str, Any]], start: datetime | None,
                     end: datetime | None) -> CheckCounts:
        """Over ``data``'s rows with start <= event time < end, in one pass: how many there are, how many
        fail each ``(name, expression)`` row check (``transforms.checks.failed``) and the newest event
        time."""

    def materialize(self, job: ClusterMaterialization) -> tuple[int, WriteResult | None]:
        """(offline rows written, the online write's result or None) of ``job`` (``CAP_CLUSTER_WRITES``)."""
        raise NotImplementedError(f"{type(self).__name__} does not write from a cluster")

    def close(self) -> None:  # noqa: B027 - engines without resources need nothing here
        """Release connections and sessions."""


def row_schema(data: ViewData) -> dict[str, Any]:
    """The types of ``data``'s rows after its transforms (source types, then the transforms' outputs
    whose types are known), which the checks read."""
    schema = dict(data.schema)
    for expr in data.transform:
        try:
            schema[output_name(expr)] = infer_type(expr, dict(data.schema))
        except DefinitionError:
            schema.pop(output_name(expr), None)
    return schema


def conform_rows(table: pa.Table, keys: list[tuple[str, pa.DataType]],
                 features: list[tuple[str, str, pa.DataType]]) -> pa.Table:
    """``read_rows``' promise: columns cast to the view's declared Arrow types and UTC microsecond
    times, whatever spelling the engine's own types have."""
    targets = {k: t for k, t in keys} | {out: t for _, out, t in features}
    targets[EVENT_TS] = pa.timestamp("us", tz="UTC")
    targets[CREATED_TS] = pa.timestamp("us", tz="UTC")
    arrays = []
    for name in table.column_names:
        col = table.column(name)
        want = targets.get(name)
        if want is not None and col.type != want:
            col = col.cast(want, safe=False)
        arrays.append(col)
    return pa.Table.from_arrays(arrays, names=table.column_names)
