"""Feast 0.67 (run with the python of ``benchmarks/.venv-feast``): a feature repo in a scratch folder
on the same Parquet files with the same TTLs, ``apply`` through the Python API (untimed), then the
timed ``get_historical_features(...).to_df()``. ``--store file`` is Feast's default file offline store,
``--store duckdb`` its DuckDB (ibis) offline store.
"""

from __future__ import annotations

import shutil

from common import DAILY_VIEW, HOURLY_VIEW, feature_refs, run, spec

_YAML = """\
project: bench
registry: data/registry.db
provider: local
offline_store:
    type: {store}
online_store:
    type: sqlite
    path: data/online.db
entity_key_serialization_version: 3
"""


def _repo(args):
    return (args.work / f"feast_{args.store}_repo").resolve()


def _objects(data):
    from datetime import timedelta

    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float32, Float64, Int64

    dtypes = {"float": Float32, "double": Float64, "int64": Int64}
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    views = []
    for name, fname, feats, ttl in [(HOURLY_VIEW, "driver_hourly.parquet", spec.HOURLY_FEATURES,
                                     spec.HOURLY_TTL_DAYS),
                                    (DAILY_VIEW, "driver_daily.parquet", spec.DAILY_FEATURES,
                                     spec.DAILY_TTL_DAYS)]:
        source = FileSource(name=f"{name}_source", path=str(data / fname), timestamp_field="event_timestamp",
                            created_timestamp_column="created")
        views.append(FeatureView(name=name, entities=[driver], ttl=timedelta(days=ttl), source=source,
                                 schema=[Field(name=n, dtype=dtypes[str(t)]) for n, t in feats]))
    return [driver, *views]


def setup(args) -> None:
    from feast import FeatureStore

    repo = _repo(args)
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(_YAML.format(store=args.store))
    FeatureStore(repo_path=str(repo)).apply(_objects(args.data.resolve()))


def export(args, df):
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(_repo(args)))
    return store.get_historical_features(entity_df=df, features=feature_refs(),
                                         full_feature_names=False).to_df()


def _extra(ap) -> None:
    ap.add_argument("--store", choices=["file", "duckdb"], required=True)


if __name__ == "__main__":
    run(export, setup, _extra)
