"""Feast 0.67 (run with ``benchmarks/.venv-feast``'s python), one child process: a feature repo on the
same Parquet files with the same TTLs and a Redis online store, ``apply`` (untimed), then the timed
``FeatureStore.materialize(start, end)`` (what ``feast materialize START END`` calls, without the CLI's
start-up). The default file offline store reads the source.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import traceback
from pathlib import Path

from online_common import (
    VIEW_FEATURES,
    VIEW_TTL_DAYS,
    add_common_args,
    iso,
    parse_views,
    peak_rss_mb,
    timed,
    write_json,
)

YAML = """\
project: {project}
registry: data/registry.db
provider: local
offline_store:
    type: file
online_store:
    type: redis
    redis_type: {redis_type}
    connection_string: "{redis}"
entity_key_serialization_version: 3
"""


def objects(views: dict[str, Path]) -> list:
    from datetime import timedelta

    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Float64, Int64

    dtypes = {"float": Float32, "double": Float64, "int64": Int64}
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    out: list = [driver]
    for name, path in views.items():
        source = FileSource(name=f"{name}_source", path=str(path), timestamp_field="event_timestamp",
                            created_timestamp_column="created")
        out.append(FeatureView(name=name, entities=[driver], ttl=timedelta(days=VIEW_TTL_DAYS[name]),
                               source=source, online=True,
                               schema=[Field(name=n, dtype=dtypes[str(t)]) for n, t in VIEW_FEATURES[name]]))
    return out


def write_repo(repo: Path, project: str, redis: str, redis_type: str = "redis") -> Path:
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(YAML.format(project=project, redis=redis, redis_type=redis_type))
    return repo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap)
    ap.add_argument("--redis", required=True, help="Feast connection string, e.g. 127.0.0.1:56400,db=1")
    ap.add_argument("--redis-type", default="redis", choices=["redis", "redis_cluster"],
                    help="Feast's redis_type (redis_cluster: --redis names a cluster node, no db)")
    args = ap.parse_args()
    metrics: dict = {"ok": False, "system": "feast"}
    try:
        from feast import FeatureStore

        repo = write_repo(args.repo.resolve(), args.project, args.redis, args.redis_type)
        views = parse_views(args.view)
        timed("apply_seconds", lambda: FeatureStore(repo_path=str(repo)).apply(objects(views)), metrics)
        store = FeatureStore(repo_path=str(repo))
        start, end = iso(args.start), iso(args.end)
        timed("seconds", lambda: store.materialize(start_date=start, end_date=end), metrics)
        metrics.update(peak_rss_mb=peak_rss_mb(), ok=True)
    except BaseException as exc:
        metrics["error"] = f"{type(exc).__name__}: {exc}"
        metrics["traceback"] = traceback.format_exc()
    finally:
        write_json(args.metrics, metrics)
    return 0 if metrics["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
