"""Our product, one child process (project venv): write a feature repo whose online store is Redis,
``apply`` (untimed), then the timed ``FeatureStore.materialize(start, end)``.

Materialize writes both stores: the offline Parquet store and the online Redis store (the timed figure
covers both; Feast's ``materialize`` writes only its online store). ``--profile FILE`` runs the
materialization under pyinstrument and writes a text profile.
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

_DTYPES = {"float": "Float32", "double": "Float64", "int64": "Int64"}


def features_py(views: dict[str, Path]) -> str:
    lines = ["from datetime import timedelta",
             "from featurestore import Entity, FeatureView, Field, FileSource",
             "from featurestore.types import Float32, Float64, Int64",
             'driver = Entity(name="driver", join_keys=["driver_id"])']
    for name, path in views.items():
        fields = ", ".join(f"Field(name={n!r}, dtype={_DTYPES[str(t)]})" for n, t in VIEW_FEATURES[name])
        lines.append(
            f"{name} = FeatureView(name={name!r}, entities=[driver], ttl=timedelta(days={VIEW_TTL_DAYS[name]}),\n"
            f"    source=FileSource(name={name + '_source'!r}, path={str(path)!r},\n"
            f"                      timestamp_field='event_timestamp', created_timestamp_field='created'),\n"
            f"    schema=[{fields}])")
    return "\n".join(lines) + "\n"


def write_repo(repo: Path, views: dict[str, Path], project: str, redis_url: str, prefix: str,
               cluster: bool = False) -> Path:
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    extra = ", cluster: true" if cluster else ""
    (repo / "featurestore.yaml").write_text(
        f"project: {project}\nregistry: sqlite:///registry.db\n"
        "offline_store: {type: parquet, path: offline}\n"
        f"online_store: {{type: redis, url: '{redis_url}', key_prefix: {prefix}{extra}}}\n")
    (repo / "features.py").write_text(features_py(views))
    return repo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap)
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--prefix", default="bench")
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--cluster", action="store_true", help="the URL names a node of a Redis Cluster")
    args = ap.parse_args()
    metrics: dict = {"ok": False, "system": "ours"}
    try:
        from featurestore import FeatureStore

        repo = write_repo(args.repo.resolve(), parse_views(args.view), args.project, args.redis_url, args.prefix,
                          args.cluster)
        timed("apply_seconds", lambda: FeatureStore(repo_path=repo).apply(), metrics)
        store = FeatureStore(repo_path=repo)
        start, end = iso(args.start), iso(args.end)
        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001)
            profiler.start()
        result = timed("seconds", lambda: store.materialize(start, end, progress=False), metrics)
        if profiler:
            profiler.stop()
            args.profile.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        metrics.update(
            rows_read=result.rows,
            online_written=sum(v.online_written for v in result.views),
            online_skipped=sum(v.online_skipped for v in result.views),
            peak_rss_mb=peak_rss_mb(), ok=True)
    except BaseException as exc:  # the parent prints this verbatim
        metrics["error"] = f"{type(exc).__name__}: {exc}"
        metrics["traceback"] = traceback.format_exc()
    finally:
        write_json(args.metrics, metrics)
    return 0 if metrics["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
