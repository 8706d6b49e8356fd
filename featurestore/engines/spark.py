"""The Spark engine: the same joins and reads as the local engine, computed by a Spark cluster.

The point-in-time join is a sort-based as-of join that needs no driver-side data: entity rows and
feature rows are unioned, partitioned by the join keys and ordered by (time, feature-before-entity,
created time); the last non-null feature row at or before each entity row is its match. The TTL then
nulls stale matches, exactly as the local engine does.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.dataset as pds
from pydantic import BaseModel, ConfigDict, Field

from connectors.object_store import expand, hadoop_settings
from featurestore import timestamps
from featurestore.checks import CheckCounts
from featurestore.engines.spark_delta import session_conf
from featurestore.engines.spark_writes import frame_schema, write_offline, write_online
from featurestore.errors import BackendUnavailableError, InvalidInputError, MissingDependencyError
from featurestore.online_aggregate import EV_CR, EV_TS, ev_column
from featurestore.ports.engine import (
    CAP_CLUSTER_WRITES,
    CAP_EXPORT_PARQUET,
    CHECK_COLUMN,
    CREATED_TS,
    EVENT_TS,
    ClusterMaterialization,
    Engine,
    ViewData,
    ViewJoin,
    conform_rows,
    row_schema,
)
from featurestore.ports.online_store import WriteResult
from transforms import output_name
from transforms.aggregation import Aggregation
from transforms.checks import failed, first_failed
from transforms.compile_spark import aggregate_at_points, apply_view, to_column

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_ROW = "__fs_row"


class SparkEngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["spark"] = "spark"
    master: str = "local[2]"
    app_name: str = "featurestore"
    conf: dict[str, str] = Field(default_factory=dict)
    # delta-spark in the session: reads and writes of the offline store's Delta tables need it.
    delta: bool = True


_SESSION: "SparkSession | None" = None


def spark_session(config: SparkEngineConfig) -> "SparkSession":
    """One session per process (Spark allows one active context)."""
    global _SESSION
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise MissingDependencyError("pyspark", "spark") from exc
    if _SESSION is not None and not _SESSION.sparkContext._jsc.sc().isStopped():
        return _SESSION
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(config.master).appName(config.app_name)
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               # Python workers run this interpreter (the one with the product installed), not
               # whatever python3 is first on PATH; a cluster sets spark.pyspark.python in conf.
               .config("spark.pyspark.python", sys.executable)
               # Parquet times as INT64 microseconds (Spark's default INT96 reads back as nanoseconds,
               # which cannot hold years before 1677 or after 2262).
               .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS"))
    conf = dict(config.conf)
    if config.delta:
        if config.master.startswith("local"):
            # Delta replays its log in this many tasks; its default (50) is meant for a cluster.
            builder = builder.config("spark.databricks.delta.snapshotPartitions", "2")
        conf.update(session_conf(conf))
        _refuse_context_without_delta()
    for key, value in conf.items():
        builder = builder.config(key, value)
    _SESSION = builder.getOrCreate()
    return _SESSION


def _refuse_context_without_delta() -> None:
    """A SparkContext already running in this process keeps its classpath: jars cannot be added to it."""
    from pyspark import SparkContext

    running = SparkContext._active_spark_context
    if running is not None and "delta-spark_" not in running.getConf().get("spark.jars", ""):
        raise BackendUnavailableError(
            "a SparkContext without delta-spark is already running in this process (started outside "
            "featurestore): stop it, start it with the settings of "
            "featurestore.engines.spark_delta.session_conf(), or use SparkEngineConfig(delta=False)")


def spark_type(t: pa.DataType):
    from pyspark.sql import types as T

    if pa.types.is_timestamp(t):
        return T.TimestampType()
    mapping = {"int32": T.IntegerType(), "int64": T.LongType(), "float": T.FloatType(),
               "double": T.DoubleType(), "string": T.StringType(), "large_string": T.StringType(),
               "bool": T.BooleanType(), "binary": T.BinaryType()}
    return mapping.get(str(t))


class SparkEngine(Engine):
    name = "spark"
    capabilities = frozenset({CAP_EXPORT_PARQUET, CAP_CLUSTER_WRITES})

    def __init__(self, config: SparkEngineConfig | None = None, repo_path: Any = None):
        self.config = config or SparkEngineConfig()

    @property
    def spark(self) -> "SparkSession":
        return spark_session(self.config)

    def frame(self, data: ViewData) -> "DataFrame":
        """A Spark DataFrame over a view's data through its pipeline (files are read by the executors)."""
        files = self._dataset_files(data) if data.dataset is not None else list(data.files)
        if data.table is not None:
            frame = self.spark.createDataFrame(data.table)
        elif data.file_format == "csv":
            frame = self.spark.read.option("header", "true").option("inferSchema", "true").csv(files)
        else:
            frame = self.spark.read.option("mergeSchema", "true").parquet(*files)
        if data.rename:
            frame = frame.withColumnsRenamed(dict(data.rename))
        if data.filter is not None or data.transform:
            produced = {output_name(e) for e in data.transform}
            keep = [c for c in frame.columns if c not in produced]
            frame = apply_view(frame, list(data.transform), data.filter, keep)
        if data.checks:
            frame = _checked(frame, data)
        frame = _epoch_ms_times(frame, data)
        if data.appended and not data.quarantined:
            frame = self._with_appended(data, frame)
        return frame

    def check_counts(self, data: ViewData, checks: list[tuple[str, Any]], start: datetime | None,
                     end: datetime | None) -> CheckCounts:
        from pyspark.sql import functions as F

        frame = self._filtered(data, start, end)
        schema = row_schema(data) or None
        counts = [F.count(F.when(to_column(failed(expr), schema), 1)) for _, expr in checks]
        row = frame.agg(F.count(F.lit(1)), F.max(F.col(data.timestamp_column).cast("timestamp")), *counts).collect()[0]
        return CheckCounts(rows=row[0], latest=_utc(row[1]),
                           failed={name: n for (name, _), n in zip(checks, row[2:])})

    def _dataset_files(self, data: ViewData) -> list[str]:
        """Paths Spark reads for a dataset's files: local paths as they are, objects on S3 as s3a://
        URIs (with the endpoint and keys set for their buckets, which needs hadoop-aws)."""
        dataset = data.dataset
        whole = pds.scalar(True)
        if any(not f.partition_expression.equals(whole) for f in dataset.get_fragments()):
            raise InvalidInputError("the Spark engine reads sources by their Parquet files and cannot fill in "
                                    "a partitioned Delta table's partition columns; use the local engine")
        if dataset.filesystem.type_name == "local":
            return list(dataset.files)
        if dataset.filesystem.type_name != "s3":
            raise InvalidInputError(f"the Spark engine cannot read files on {dataset.filesystem.type_name!r}")
        try:
            self.spark._jvm.java.lang.Class.forName("org.apache.hadoop.fs.s3a.S3AFileSystem")
        except Exception:
            raise BackendUnavailableError(
                "the Spark engine needs hadoop-aws (org.apache.hadoop.fs.s3a.S3AFileSystem) and its AWS SDK on "
                "its classpath to read s3:// sources (spark.jars / spark.jars.packages in the engine's conf); "
                "the local engine reads them without") from None
        settings = hadoop_settings(expand(dict(data.storage_options), "Spark engine: storage options"))
        hadoop = self.spark._jsc.hadoopConfiguration()
        for bucket in sorted({path.split("/", 1)[0] for path in dataset.files}):
            for key, value in settings.items():
                hadoop.set(key.replace("fs.s3a.", f"fs.s3a.bucket.{bucket}.", 1), value)
        return [f"s3a://{path}" for path in dataset.files]

    def _with_appended(self, data: ViewData, frame: "DataFrame") -> "DataFrame":
        """``frame`` plus the view's appended rows that are not already among its rows (see ViewData)."""
        from pyspark.sql import functions as F

        times = [(data.timestamp_column, EVENT_TS)]
        if data.created_column:
            times.append((data.created_column, CREATED_TS))
        ours = frame.select(*[F.col(c) for c in data.columns],
                            *[F.col(c).cast("timestamp").alias(c) for c, _ in times])
        appended = self.spark.read.option("mergeSchema", "true").parquet(*data.appended)
        theirs = appended.select(*[F.col(c).cast(ours.schema[c].dataType) for c in data.columns],
                                 *[F.col(a).cast("timestamp").alias(c) for c, a in times])
        return ours.unionByName(theirs.exceptAll(ours))

    @staticmethod
    def _cast(column, t: pa.DataType):
        target = spark_type(t)
        return column.cast(target) if target is not None else column

    def point_in_time_join(self, entity: pa.Table, timestamp_column: str,
                           joins: list[ViewJoin]) -> pa.Table:
        left = entity.append_column(_ROW, pa.array(range(entity.num_rows), pa.int64()))
        result = self.join_frame(self.spark.createDataFrame(left), timestamp_column, joins)
        table = result.orderBy(_ROW).toArrow()
        arrays, names = [], []
        for i, join in enumerate(joins):
            for j, (_, out, ftype) in enumerate(join.features):
                col = table.column(f"__o{i}_{j}")
                arrays.append(col.cast(ftype, safe=False) if col.type != ftype else col)
                names.append(out)
        return pa.Table.from_arrays(arrays, names=names)

    def export_parquet(self, entity_path: str, timestamp_column: str, joins: list[ViewJoin],
                       output: str) -> int:
        """A whole export done by the cluster: the executors read the entity rows (a Parquet file or
        directory), join and write ``output`` as a Parquet directory in input order. Returns the row
        count; no data passes through the driver."""
        from pyspark.sql import functions as F

        entity = self.spark.read.parquet(entity_path)
        entity = entity.withColumn(_ROW, F.monotonically_increasing_id())  # increases in file order
        features = self.join_frame(entity, timestamp_column, joins)
        renamed = [F.col(f"__o{i}_{j}").cast(spark_type(t)).alias(out) if spark_type(t) is not None
                   else F.col(f"__o{i}_{j}").alias(out)
                   for i, join in enumerate(joins) for j, (_, out, t) in enumerate(join.features)]
        result = entity.join(features.select(_ROW, *renamed), on=_ROW, how="left").orderBy(_ROW)
        result.drop(_ROW).write.mode("overwrite").parquet(output)
        return self.spark.read.parquet(output).count()

    def join_frame(self, entity: "DataFrame", timestamp_column: str, joins: list[ViewJoin]) -> "DataFrame":
        """``entity`` (with a unique ``__fs_row``) to one row per entity row of feature columns
        ``__o{view}_{feature}``, computed by the executors."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        ent = entity.withColumn("__fs_t", F.col(timestamp_column).cast("timestamp"))
        result = ent.select(_ROW)
        for i, join in enumerate(joins):
            data = join.data
            if join.aggregations:
                result = result.join(self._aggregation_join(i, join, ent), on=_ROW, how="left")
                continue
            feats = self.frame(data)
            key_exprs = [self._cast(F.col(dcol), t).alias(f"__k{j}") for j, (_, dcol, t) in enumerate(join.keys)]
            created = (F.coalesce(F.col(data.created_column).cast("timestamp"), F.lit(datetime(1, 1, 1)))
                       if data.created_column else F.lit(datetime(1, 1, 1)).cast("timestamp"))
            payload = F.struct(F.col(data.timestamp_column).cast("timestamp").alias("ts"),
                               *[F.col(dcol).alias(f"f{j}") for j, (dcol, _, _) in enumerate(join.features)])
            right = feats.select(*key_exprs, F.col(data.timestamp_column).cast("timestamp").alias("__fs_t"),
                                 F.lit(0).alias("__side"), created.alias("__cr"), payload.alias("__p"),
                                 F.lit(None).cast("long").alias(_ROW))
            lkeys = [self._cast(F.col(ecol), t).alias(f"__k{j}") for j, (ecol, _, t) in enumerate(join.keys)]
            lft = ent.select(*lkeys, "__fs_t", F.lit(1).alias("__side"),
                             F.lit(None).cast("timestamp").alias("__cr"),
                             F.lit(None).cast(right.schema["__p"].dataType).alias("__p"), _ROW)
            keys = [f"__k{j}" for j in range(len(join.keys))]
            window = (Window.partitionBy(*keys).orderBy("__fs_t", "__side", "__cr")
                      .rowsBetween(Window.unboundedPreceding, Window.currentRow))
            matched = (right.unionByName(lft)
                       .withColumn("__m", F.last("__p", ignorenulls=True).over(window))
                       .where(F.col("__side") == 1))
            # A null key never matches (SQL equality), though the window groups nulls together.
            for k in keys:
                matched = matched.withColumn("__m", F.when(F.col(k).isNotNull(), F.col("__m")))
            fresh = F.col("__m.ts").isNotNull()
            if join.ttl_seconds is not None:
                micros = int(join.ttl_seconds * 1_000_000)
                fresh = fresh & (F.col("__m.ts") >= F.col("__fs_t") - F.expr(f"INTERVAL {micros} MICROSECONDS"))
            outs = [self._cast(F.when(fresh, F.col(f"__m.f{j}")), t).alias(f"__o{i}_{j}")
                    for j, (_, _, t) in enumerate(join.features)]
            result = result.join(matched.select(_ROW, *outs), on=_ROW, how="left")
        return result

    def _aggregation_join(self, i: int, join: ViewJoin, ent: "DataFrame") -> "DataFrame":
        """Windowed aggregations at every entity row, (t - window, t]; nulls without a fresh event
        (the local engine's definition, computed by the executors)."""
        from pyspark.sql import functions as F

        data = join.data
        keys = [f"__k{j}" for j in range(len(join.keys))]
        events = self.frame(data).select(
            *[self._cast(F.col(dcol), t).alias(f"__k{j}") for j, (_, dcol, t) in enumerate(join.keys)],
            F.col(data.timestamp_column).cast("timestamp").alias("__ts"),
            *([F.col(data.created_column).cast("timestamp").alias("__cr")] if data.created_column else []),
            *[F.col(name) for name, _ in join.event_columns])
        points = ent.select(
            *[self._cast(F.col(ecol), t).alias(f"__k{j}") for j, (ecol, _, t) in enumerate(join.keys)],
            F.col("__fs_t").alias("__ts"), F.col(_ROW).alias("__point_id"))
        latest = Aggregation(column="__ts", function="max", window=None, name="__fs_latest")
        if _few_points_per_key(points, keys):
            aggs = _grouped_aggregates(events, points, keys, join.aggregations, bool(data.created_column))
        else:
            aggs = aggregate_at_points(events, points, keys, "__ts", list(join.aggregations) + [latest],
                                       "__cr" if data.created_column else None, point_id="__point_id")
        aggs = aggs.join(points.select("__point_id", F.col("__ts").alias("__t")), on="__point_id")
        fresh = F.col("__fs_latest").isNotNull()
        if join.ttl_seconds is not None:
            micros = int(join.ttl_seconds * 1_000_000)
            fresh = fresh & (F.col("__fs_latest") >= F.col("__t") - F.expr(f"INTERVAL {micros} MICROSECONDS"))
        outs = [self._cast(F.when(fresh, F.col(f"`{name}`")), t).alias(f"__o{i}_{j}")
                for j, (name, _, t) in enumerate(join.features)]
        return aggs.select(F.col("__point_id").alias(_ROW), *outs)

    def _filtered(self, data: ViewData, start: datetime | None, end: datetime | None) -> "DataFrame":
        from pyspark.sql import functions as F

        frame = self.frame(data)
        ts = F.col(data.timestamp_column).cast("timestamp")
        if start is not None:
            frame = frame.where(ts >= F.lit(start))
        if end is not None:
            frame = frame.where(ts < F.lit(end))
        return frame

    def time_bounds(self, data: ViewData, start: datetime | None, end: datetime | None
                    ) -> tuple[datetime | None, datetime | None]:
        from pyspark.sql import functions as F

        frame = self._filtered(data, start, end)  # starts the session before any Column is built
        ts = F.col(data.timestamp_column).cast("timestamp")
        row = frame.agg(F.min(ts), F.max(ts)).collect()[0]
        return _utc(row[0]), _utc(row[1])

    def read_frame(self, data: ViewData, keys: list[tuple[str, pa.DataType]],
                   features: list[tuple[str, str, pa.DataType]], start: datetime | None,
                   end: datetime | None) -> "DataFrame":
        """The rows of ``read_rows`` as a Spark DataFrame, for writes done by the executors."""
        from pyspark.sql import functions as F

        frame = self._filtered(data, start, end)
        cols = [self._cast(F.col(k), t).alias(k) for k, t in keys]
        cols += [self._cast(F.col(src), t).alias(out) for src, out, t in features]
        cols.append(F.col(data.timestamp_column).cast("timestamp").alias(EVENT_TS))
        created = F.col(data.created_column).cast("timestamp") if data.created_column else F.lit(None).cast("timestamp")
        cols.append(created.alias(CREATED_TS))
        return frame.select(*cols)

    def aggregation_state(self, join: ViewJoin, start: datetime, end: datetime) -> "DataFrame":
        """The online state rows of an aggregation view as of ``end`` (see featurestore.online_aggregate),
        for every entity with an event in [start, end), computed by the executors."""
        from pyspark.sql import functions as F

        aggs, data = join.aggregations, join.data
        keys = [k for _, k, _ in join.keys]
        key_types = {k: t for _, k, t in join.keys}
        events_cols = [c for c, _ in join.event_columns]
        frame = self.frame(data)
        ts = F.col(data.timestamp_column).cast("timestamp")
        created = F.col(data.created_column).cast("timestamp") if data.created_column else F.lit(None).cast("timestamp")
        events = frame.where(ts < F.lit(end)).select(
            *[self._cast(F.col(k), key_types[k]).alias(k) for k in keys], ts.alias("__ts"), created.alias("__cr"),
            *[F.col(c) for c in events_cols])
        touched = events.where(F.col("__ts") >= F.lit(start)).select(*keys).distinct()
        state = touched
        windowed = [a for a in aggs if a.window is not None]
        if windowed:
            since = end - timedelta(microseconds=max(a.window_micros for a in windowed))
            columns = list(dict.fromkeys(a.column for a in windowed))
            ordered = F.array_sort(F.collect_list(F.struct(
                F.col("__ts").alias("t"), F.coalesce(F.col("__cr"), F.lit(datetime(1, 1, 1))).alias("c"),
                F.col("__cr").alias("cr"), *[F.col(c).alias(f"v{i}") for i, c in enumerate(columns)])))
            recent = (events.join(touched, on=keys, how="left_semi").where(F.col("__ts") > F.lit(since))
                      .groupBy(*keys).agg(ordered.alias("__ev")))
            recent = recent.select(*keys, F.col("__ev.t").alias(EV_TS), F.col("__ev.cr").alias(EV_CR),
                                   *[F.col(f"__ev.v{i}").alias(ev_column(c)) for i, c in enumerate(columns)])
            state = state.join(recent, on=keys, how="left")
        points = touched.withColumn("__ts", F.lit(end - timedelta(microseconds=1)).cast("timestamp")) \
            .withColumn("__point_id", F.monotonically_increasing_id())
        lifetime = [a for a in aggs if a.window is None]
        latest = Aggregation(column="__ts", function="max", window=None, name="__fs_latest")
        life = aggregate_at_points(events, points, keys, "__ts", lifetime + [latest], "__cr", point_id="__point_id")
        life = points.join(life, on="__point_id").drop("__point_id", "__ts")
        state = state.join(life, on=keys, how="inner")
        return state.withColumnRenamed("__fs_latest", EVENT_TS).withColumn(
            CREATED_TS, F.lit(end).cast("timestamp"))

    def materialize(self, job: ClusterMaterialization) -> tuple[int, WriteResult | None]:
        """The whole interval in one job: executors write the offline rows (one Delta commit through
        delta-spark) and upsert the online store; only counts come back to the driver."""
        keys, features = list(job.keys), list(job.features)
        frame = self.read_frame(job.data, keys, features, job.start, job.end)
        rows = write_offline(frame, job.offline_store, job.repo_path, job.project, job.view, job.start,
                             job.end, EVENT_TS, schema=frame_schema(keys, features))
        if job.online_store is None:
            return rows, None
        if job.aggregation is not None:
            frame = self.aggregation_state(job.aggregation, job.start, job.end)
        return rows, write_online(frame, job.online_store, job.repo_path, job.project, job.view,
                                  [k for k, _ in keys], job.ttl)

    def read_rows(self, data: ViewData, keys: list[tuple[str, pa.DataType]],
                  features: list[tuple[str, str, pa.DataType]], start: datetime | None,
                  end: datetime | None) -> pa.Table:
        return conform_rows(self.read_frame(data, keys, features, start, end).toArrow(), keys, features)


def _few_points_per_key(points: "DataFrame", keys: list[str], limit: float = 4.0) -> bool:
    """Whether entity rows repeat a key at most ``limit`` times on average (one small job)."""
    from pyspark.sql import functions as F

    rows, distinct = points.agg(F.count(F.lit(1)), F.countDistinct(*keys)).collect()[0]
    return bool(distinct) and rows <= limit * distinct


def _grouped_aggregates(events: "DataFrame", points: "DataFrame", keys: list[str], aggregations,
                        has_created: bool) -> "DataFrame":
    """Each point joined to its key's events up to its time, grouped: the (t - window, t] values
    of the window plan, cheaper when points rarely repeat a key (the local engine's grouped plan)."""
    from pyspark.sql import functions as F

    joined = points.alias("p").join(
        events.alias("v"), on=[F.col(f"p.{k}") == F.col(f"v.{k}") for k in keys]
        + [F.col("v.__ts") <= F.col("p.__ts")], how="left")
    floor = F.lit(datetime(1, 1, 1)).cast("timestamp")
    created = F.coalesce(F.col("v.__cr"), floor) if has_created else floor
    functions = {"sum": F.sum, "count": F.count, "mean": F.avg, "min": F.min, "max": F.max,
                 "stddev": F.stddev_samp}
    columns = []
    for agg in aggregations:
        inside = F.col("v.__ts").isNotNull()
        if agg.window is not None:
            inside = inside & (F.col("v.__ts") > F.col("p.__ts") - F.expr(f"INTERVAL {agg.window_micros} MICROSECONDS"))
        value = F.col(f"v.`{agg.column}`")
        if agg.function == "last":
            expr = F.max_by(F.struct(value.alias("v")), F.when(inside, F.struct(F.col("v.__ts"), created)))["v"]
        else:
            expr = functions[agg.function](F.when(inside, value))
        columns.append(expr.alias(agg.name))
    columns.append(F.max("v.__ts").alias("__fs_latest"))
    return joined.groupBy(F.col("p.__point_id").alias("__point_id")).agg(*columns)


def _checked(frame: "DataFrame", data: ViewData) -> "DataFrame":
    """``frame``'s rows that pass the drop checks, or with ``quarantined`` the others, with the first
    failed check's name (``ViewData.checks``)."""
    from pyspark.sql import functions as F

    first = to_column(first_failed(data.checks), row_schema(data) or None)
    if data.quarantined:
        return frame.withColumn(CHECK_COLUMN, first).where(F.col(CHECK_COLUMN).isNotNull())
    return frame.where(first.isNull())


def _utc(value: datetime | None) -> datetime | None:
    from datetime import timezone

    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _epoch_ms_times(frame: "DataFrame", data: ViewData) -> "DataFrame":
    """``frame`` with its integer time columns read as epoch milliseconds in the accepted range
    (``featurestore.timestamps``); a value outside it fails the job with an error naming the column."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegralType

    types = {f.name: f.dataType for f in frame.schema.fields}
    lo, end = timestamps.INPUT_MIN_US // 1000, timestamps.INPUT_END_US // 1000
    for c in (data.timestamp_column, data.created_column):
        if c is None or not isinstance(types.get(c), IntegralType):
            continue
        value = F.col(c).cast("long")
        message = F.concat(F.lit(f"column {c!r} has "), value.cast("string"), F.lit(
            f" (epoch milliseconds), outside the accepted time range {timestamps.INPUT_RANGE}"))
        frame = frame.withColumn(c, F.when(value.isNull(), F.lit(None).cast("timestamp"))
                                 .when((value >= lo) & (value < end), F.timestamp_millis(value))
                                 .otherwise(F.raise_error(message).cast("timestamp")))
    return frame
