"""Delta Lake in Spark: the session settings that load delta-spark, and an interval replace through it.

The jars are Maven profile ``spark-delta`` of ``.ci/jvm/pom.xml`` (delta-spark and delta-storage,
fetched from Maven Central into ``.ci/cache/jars/spark-delta``); ``FS_DELTA_SPARK_JARS`` names them
instead (paths separated by commas or ``os.pathsep``), e.g. outside a checkout. delta-spark is built
for one Spark minor line, which is why pyproject pins pyspark.

``replace_interval`` writes a DataFrame's rows over ``[start, end)`` of a Delta table in ONE commit
(``replaceWhere`` on the event-time column): the executors write the files, Delta commits them. The
commit claims the offline store's replace transaction (``REPLACE_TXN`` at the version read + 1)
through delta-spark's ``txnAppId``/``txnVersion`` options, so a replace by Spark and one by the
store's own writer (delta-rs) never both commit against the same snapshot. delta-spark skips a write
whose claim is not above the recorded one (idempotent writes), which happens when another replace
committed in between: the commit is then looked for by a token in its ``userMetadata``, and the
write is done again on the newer table.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from featurestore.errors import ConflictError, InvalidInputError
from featurestore.jvm_jars import profile_jars
from featurestore.ports.offline_store import REPLACE_TXN

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

PROFILE = "spark-delta"
JARS_ENV = "FS_DELTA_SPARK_JARS"
ATTEMPTS = 4  # writes of one replace before a ConflictError (each one recomputes the DataFrame)
_TOKEN = "featurestore.replace:"
_CONCURRENT = ("io.delta.exceptions.Concurrent", "DELTA_CONCURRENT", "ConcurrentModificationException")


def session_conf(user_conf: dict[str, str]) -> dict[str, str]:
    """Spark settings that load delta-spark (the jars joined to any ``spark.jars`` of ``user_conf``)."""
    jars = [str(p) for p in profile_jars(PROFILE, JARS_ENV)]
    if not any(p.rsplit("/", 1)[-1].startswith("delta-spark_") for p in jars):
        raise InvalidInputError(f"no delta-spark_<scala>-<version>.jar among {jars} (profile {PROFILE})")
    extra = [j for j in user_conf.get("spark.jars", "").split(",") if j]
    return {"spark.jars": ",".join(jars + extra),
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}


def _literal(value: datetime) -> str:
    utc = value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return f"TIMESTAMP '{utc.replace(tzinfo=None).isoformat(sep=' ', timespec='microseconds')}+00:00'"


def _interval_predicate(ts_col: str, start: datetime, end: datetime) -> str:
    column = f"`{ts_col.replace('`', '``')}`"
    return f"{column} >= {_literal(start)} AND {column} < {_literal(end)}"


def _quoted(uri: str) -> str:
    return "delta.`" + uri.replace("`", "``") + "`"


def _table_version(spark, uri: str) -> int | None:
    if not spark._jvm.io.delta.tables.DeltaTable.isDeltaTable(spark._jsparkSession, uri):
        return None
    return int(spark.sql(f"DESCRIBE HISTORY {_quoted(uri)} LIMIT 1").collect()[0]["version"])


def _our_commit(spark, uri: str, since: int | None, token: str) -> dict | None:
    """The commit after version ``since`` whose userMetadata is ``token``, if any."""
    from pyspark.sql import functions as F

    history = spark.sql(f"DESCRIBE HISTORY {_quoted(uri)} LIMIT 100")
    if since is not None:
        history = history.where(F.col("version") > since)
    rows = history.where(F.col("userMetadata") == token).select("version", "operationMetrics").collect()
    return None if not rows else {"version": rows[0][0], "metrics": dict(rows[0][1] or {})}


def _outside_message(view: str, ts_col: str, start: datetime, end: datetime) -> str:
    return (f"view {view!r}: timestamp column {ts_col!r} has rows outside the interval "
            f"[{start.isoformat()}, {end.isoformat()}) or null")


def _check_inside(df: "DataFrame", predicate: str, ts_col: str, start: datetime, end: datetime,
                  view: str) -> None:
    """Delta checks ``replaceWhere`` on the rows it writes, but not when the write creates the table."""
    from pyspark.sql import functions as F

    if df.where(~F.coalesce(F.expr(predicate), F.lit(False))).limit(1).count():
        raise InvalidInputError(_outside_message(view, ts_col, start, end))


def replace_interval(df: "DataFrame", uri: str, ts_col: str, start: datetime, end: datetime,
                     view: str) -> int:
    """Replace the table's rows with ``start <= ts_col < end`` by ``df``'s rows in one Delta commit;
    returns the number of rows written. A row of ``df`` outside the interval (or with a null time) is
    an InvalidInputError and nothing is committed; a replace that keeps losing to concurrent commits
    is a ConflictError (retry it)."""
    spark = df.sparkSession
    predicate = _interval_predicate(ts_col, start, end)
    for _ in range(ATTEMPTS):
        since = _table_version(spark, uri)
        if since is None:
            _check_inside(df, predicate, ts_col, start, end, view)
        token = f"{_TOKEN}{uuid.uuid4()}"
        writer = (df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
                  .option("txnAppId", REPLACE_TXN).option("txnVersion", str(0 if since is None else since + 1))
                  .option("userMetadata", token))
        try:
            writer.save(uri)
        except Exception as exc:
            text = str(exc)
            if "DELTA_REPLACE_WHERE_MISMATCH" in text:
                raise InvalidInputError(f"{_outside_message(view, ts_col, start, end)}: "
                                        f"{text.splitlines()[0]}") from None
            if any(mark in text for mark in _CONCURRENT):
                continue  # another commit won: replace again on the newer table
            if "DELTA_FAILED_TO_MERGE_FIELDS" in text or "DELTA_SCHEMA_MISMATCH" in text \
                    or "DELTA_METADATA_MISMATCH" in text:
                raise InvalidInputError(f"view {view!r}: the rows do not match the stored schema: "
                                        f"{text.splitlines()[0]}") from None
            raise
        commit = _our_commit(spark, uri, since, token)
        if commit is not None:
            metrics = commit["metrics"]
            return int(metrics.get("numOutputRows", 0)) - int(metrics.get("numCopiedRows", 0))
        # delta-spark skipped the write: a concurrent replace claimed a version at or above ours.
    raise ConflictError(f"view {view!r}: {ATTEMPTS} concurrent commits won over this Spark replace of "
                        f"[{start.isoformat()}, {end.isoformat()}); run it again")
