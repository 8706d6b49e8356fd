"""Our product: a feature repo written to a scratch folder, ``apply`` (untimed), then the timed
``get_historical_features(...).to_arrow()`` straight from the FileSources (nothing materialized).

``--profile FILE`` runs the export under pyinstrument (if installed) and writes a text profile.
"""

from __future__ import annotations

import shutil

from common import DAILY_VIEW, HOURLY_VIEW, feature_refs, run, spec

_DTYPES = {"float": "Float32", "double": "Float64", "int64": "Int64"}

_YAML = """\
project: bench
registry: sqlite:///registry.db
offline_store: {type: parquet, path: offline}
online_store: {type: sqlite, path: online.db}
"""


def _fields(features) -> str:
    return ", ".join(f"Field(name={n!r}, dtype={_DTYPES[str(t)]})" for n, t in features)


def features_py(data) -> str:
    return f"""\
from datetime import timedelta

from featurestore import Entity, FeatureView, Field, FileSource
from featurestore.types import Float32, Float64, Int64

driver = Entity(name="driver", join_keys=["driver_id"])

hourly_source = FileSource(name="driver_hourly", path={str(data / 'driver_hourly.parquet')!r},
                           timestamp_field="event_timestamp", created_timestamp_field="created")
daily_source = FileSource(name="driver_daily", path={str(data / 'driver_daily.parquet')!r},
                          timestamp_field="event_timestamp", created_timestamp_field="created")

driver_hourly_stats = FeatureView(name={HOURLY_VIEW!r}, entities=[driver],
                                  ttl=timedelta(days={spec.HOURLY_TTL_DAYS}),
                                  schema=[{_fields(spec.HOURLY_FEATURES)}], source=hourly_source)
driver_daily_stats = FeatureView(name={DAILY_VIEW!r}, entities=[driver],
                                 ttl=timedelta(days={spec.DAILY_TTL_DAYS}),
                                 schema=[{_fields(spec.DAILY_FEATURES)}], source=daily_source)
"""


def _repo(args):
    return (args.work / "ours_repo").resolve()


def setup(args) -> None:
    from featurestore import FeatureStore

    repo = _repo(args)
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    (repo / "featurestore.yaml").write_text(_YAML)
    (repo / "features.py").write_text(features_py(args.data.resolve()))
    FeatureStore(repo_path=repo).apply()


def export(args, df):
    from featurestore import FeatureStore

    store = FeatureStore(repo_path=_repo(args))
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    table = store.get_historical_features(entity_df=df, features=feature_refs(),
                                          full_feature_names=False).to_arrow()
    if args.profile:
        profiler.stop()
        args.profile.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    return table


def _extra(ap) -> None:
    from pathlib import Path

    ap.add_argument("--profile", type=Path, default=None)


if __name__ == "__main__":
    run(export, setup, _extra)
