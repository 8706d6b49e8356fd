"""Our product on one engine (``--engine local|spark``), one task per process (``--task``):

- ``export``: a fresh repo, ``apply`` (untimed), then the timed
  ``get_historical_features(<all users at the end time>, <the six aggregates>).to_arrow()``, read
  straight from the source files (nothing materialized).
- ``materialize``: a fresh repo, ``apply`` (untimed), then the timed
  ``materialize(start, end, online=False)`` (the engine filters and transforms the events and writes
  the view's rows to the offline Parquet store), then, timed separately, the same export again, which
  now reads the offline store (``export_from_offline``).

The Spark session is started before the clock (``session_seconds`` in the metrics). The feature repo
is a scratch folder under ``--work``: featurestore.yaml (engine by ``--engine``; SQLite registry,
Parquet offline store, SQLite online store) and features.py below.
"""

from __future__ import annotations

import shutil
import time

import pyarrow.parquet as pq
from agg_common import FEATURES, MAT_END, MAT_START, TTL, VIEW, WINDOWS, entity_table, run

ENGINES = {
    "local": "{type: local}",
    # driver memory must be set before the JVM starts, which happens at the first Spark call
    "spark": '{type: spark, master: "local[2]", conf: {spark.driver.memory: "4g"}}',
}


def features_py(files_glob: str) -> str:
    windows = {"1h": "timedelta(hours=1)", "1d": "timedelta(days=1)", "7d": "timedelta(days=7)"}
    assert list(windows) == list(WINDOWS)
    aggs = ",\n                  ".join(
        f'Aggregation(column="amount", function="{fn}", window={windows[w]})'
        for fn in ("sum", "count") for w in WINDOWS)
    return f"""\
from datetime import timedelta

from featurestore import Entity, FeatureView, FileSource
from transforms import Aggregation, col

user = Entity(name="user", join_keys=["user_id"])
transactions = FileSource(name="transactions", path={files_glob!r}, timestamp_field="ts",
                          created_timestamp_field="created")
user_txn = FeatureView(
    name={VIEW!r}, entities=[user], source=transactions, ttl=timedelta(seconds={int(TTL.total_seconds())}),
    filter=col("status") == "settled",
    aggregations=[{aggs}])
"""


def setup(args):
    from featurestore import FeatureStore

    repo = (args.work / f"repo_{args.engine}_{args.task}").resolve()
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    (repo / "featurestore.yaml").write_text(
        "project: bench_agg\nregistry: sqlite:///registry.db\n"
        "offline_store: {type: parquet, path: offline}\nonline_store: {type: sqlite, path: online.db}\n"
        f"engine: {ENGINES[args.engine]}\n")
    (repo / "features.py").write_text(features_py(str(args.data.resolve() / "part-*.parquet")))
    store = FeatureStore(repo_path=repo)
    store.apply()
    names = [f.name for f in store.get_feature_view(VIEW).features]
    if names != FEATURES:
        raise AssertionError(f"view features {names} != expected {FEATURES}")
    return store


def body(args, rec) -> None:
    t0 = time.perf_counter()
    store = setup(args)
    rec.metrics["setup_seconds"] = time.perf_counter() - t0
    if args.engine == "spark":
        t0 = time.perf_counter()
        store.engine.spark.range(1).count()
        rec.metrics["session_seconds"] = time.perf_counter() - t0
    entity = entity_table(args.users)
    refs = [f"{VIEW}:{f}" for f in FEATURES]
    rec.metrics["rows_in"] = entity.num_rows

    def export():
        job = store.get_historical_features(entity, refs)
        table = job.to_arrow()
        rec.metrics.setdefault("read_from", {})[rec.metrics["running"]["task"]] = \
            job.manifest["views"][VIEW]["read_from"]
        return table

    if args.task == "export":
        result = rec.timed("export", export, profile=True)
    else:
        res = rec.timed("materialize", lambda: store.materialize(MAT_START, MAT_END, online=False,
                                                                 progress=False), profile=True)
        rec.metrics["materialized_rows"] = res.rows
        result = rec.timed("export_from_offline", export, profile=True)
    rec.metrics["rows_out"] = result.num_rows
    if args.out:
        pq.write_table(result.select(["user_id", *FEATURES]), args.out)


def _extra(ap) -> None:
    ap.add_argument("--engine", choices=sorted(ENGINES), default="local")
    ap.add_argument("--task", choices=["export", "materialize"], required=True)


if __name__ == "__main__":
    run(body, _extra)
