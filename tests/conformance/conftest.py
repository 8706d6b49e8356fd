"""Engines under test for the shared conformance suite.

``engine`` is parametrised over ``duckdb`` and ``spark`` (the latter marked ``slow``). Each adapter
runs a view or an aggregation on Arrow tables and hands back Python rows; the engines run with a
non-UTC session time zone on purpose (results must not depend on it). One SparkSession serves the
whole test session (local[2], 2 shuffle partitions).
"""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

SESSION_TZ = "America/New_York"


def _rows_to_table(rows: list[dict], arrow_schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=arrow_schema)


def _check_data(rows, arrow_schema, drops, schema, quarantined=False):
    from featurestore.ports.engine import ViewData

    return ViewData("ts", None, table=_rows_to_table(rows, arrow_schema), schema=tuple(schema.items()),
                    checks=tuple(drops), quarantined=quarantined)


def run_checks(engine, rows, arrow_schema, checks, drops, schema):
    """``(counts, kept ids, [(id, first failed drop check)])`` from the product engine's own check
    pass (``check_counts``) and reads through its drop checks (``read_rows``)."""
    from featurestore.ports.engine import CHECK_COLUMN

    ids = [("id", pa.int64())]
    counts = engine.check_counts(_check_data(rows, arrow_schema, (), schema), checks, None, None)
    kept = engine.read_rows(_check_data(rows, arrow_schema, drops, schema), ids, [], None, None)
    dropped = engine.read_rows(_check_data(rows, arrow_schema, drops, schema, True), ids,
                               [(CHECK_COLUMN, "check", pa.string())], None, None)
    return counts, kept.column("id").to_pylist(), list(zip(dropped.column("id").to_pylist(),
                                                           dropped.column("check").to_pylist()))


class DuckDBEngine:
    name = "duckdb"
    examples = 60

    def __init__(self):
        import duckdb

        from featurestore.engines.local import LocalEngine

        self.con = duckdb.connect()
        self.con.execute(f"SET TimeZone='{SESSION_TZ}'")
        self.product = LocalEngine()

    def checks(self, rows, arrow_schema, checks, drops, schema):
        return run_checks(self.product, rows, arrow_schema, checks, drops, schema)

    def view(self, rows, arrow_schema, transform, filter, passthrough, schema):
        from transforms.compile_duckdb import compile_view

        self.con.register("__src", _rows_to_table(rows, arrow_schema))
        try:
            sql, params = compile_view("SELECT * FROM __src", transform, filter, passthrough, schema=schema)
            return self.con.sql(sql, params=params).to_arrow_table().to_pylist()
        finally:
            self.con.unregister("__src")

    def aggregate(self, events, ev_schema, points, pt_schema, keys, ts_col, aggregations, created_col, schema):
        from transforms.compile_duckdb import aggregate_at_points_sql

        self.con.register("__ev", _rows_to_table(events, ev_schema))
        self.con.register("__pt", _rows_to_table(points, pt_schema))
        try:
            sql = aggregate_at_points_sql(
                "SELECT * FROM __ev", "SELECT * FROM __pt", keys, ts_col, aggregations, created_col,
                schema=schema,
            )
            rows = self.con.sql(sql).to_arrow_table().to_pylist()
        finally:
            self.con.unregister("__ev")
            self.con.unregister("__pt")
        return rows


class SparkEngine:
    name = "spark"
    examples = 15

    def __init__(self, spark):
        from featurestore.engines.spark import SparkEngine

        self.spark = spark
        self.product = SparkEngine()  # the process's one engine session (UTC)

    def checks(self, rows, arrow_schema, checks, drops, schema):
        return run_checks(self.product, rows, arrow_schema, checks, drops, schema)

    def _df(self, rows, arrow_schema):
        return self.spark.createDataFrame(_rows_to_table(rows, arrow_schema))

    def view(self, rows, arrow_schema, transform, filter, passthrough, schema):
        from transforms.compile_spark import apply_view

        df = apply_view(self._df(rows, arrow_schema), transform, filter, passthrough)
        return df.toArrow().to_pylist()

    def aggregate(self, events, ev_schema, points, pt_schema, keys, ts_col, aggregations, created_col, schema):
        from transforms.compile_spark import aggregate_at_points

        df = aggregate_at_points(
            self._df(events, ev_schema), self._df(points, pt_schema), keys, ts_col, aggregations, created_col
        )
        return df.toArrow().to_pylist()


@pytest.fixture(scope="session")
def spark_session():
    pytest.importorskip("pyspark")
    from featurestore.engines.spark import SparkEngineConfig
    from featurestore.engines.spark import spark_session as engine_session

    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    # The process's one SparkContext is the engine's (other tests need its delta-spark jars); this
    # suite's own session on it has its own SQL settings, the time zone among them.
    spark = engine_session(SparkEngineConfig(master="local[2]", app_name="featurestore-conformance", conf={
        "spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
        "spark.driver.memory": "1g"})).newSession()
    spark.conf.set("spark.sql.session.timeZone", SESSION_TZ)
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    spark.sparkContext.setLogLevel("ERROR")
    yield spark


@pytest.fixture(scope="session", params=["duckdb", pytest.param("spark", marks=pytest.mark.slow)])
def engine(request):
    if request.param == "duckdb":
        return DuckDBEngine()
    return SparkEngine(request.getfixturevalue("spark_session"))
