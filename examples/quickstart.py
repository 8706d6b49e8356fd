"""End to end on the embedded defaults (no server): init a repo, apply, export a training set,
materialize the latest values into the online store and look some up.

    python examples/quickstart.py [REPO_DIR]      # default: ./demo (recreated on every run)
"""

from __future__ import annotations

import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq

from featurestore import FeatureStore
from featurestore.scaffold import init_repo


def main(repo_dir: str = "demo") -> None:
    repo = Path(repo_dir)
    if repo.exists():
        shutil.rmtree(repo)
    init_repo(repo, project="demo")
    print(f"1. created feature repo {repo}/ (featurestore.yaml, features.py, data/)")

    store = FeatureStore(repo_path=repo)
    plan = store.apply()
    print(f"2. applied definitions, registry version {plan.registry_version}:\n{plan}")

    entity_df = pq.read_table(repo / "data" / "entities.parquet").to_pandas()
    job = store.get_historical_features(
        entity_df=entity_df,
        features=["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate",
                  "driver_hourly_stats:avg_daily_trips"],
    )
    manifest = job.to_parquet(repo / "data" / "training.parquet")
    training = job.to_pandas()
    print(f"3. exported a point-in-time-correct training set: {manifest['row_count']} rows "
          f"-> {repo}/data/training.parquet (+ .manifest.json)")
    print(training.head(10).to_string(index=False))

    now = datetime.now(timezone.utc)
    result = store.materialize(now - timedelta(days=7), now, progress=False)
    print(f"4. materialized {result.rows} rows into the offline and online stores")
    online = store.get_online_features(features=["driver_hourly_stats:conv_rate",
                                                 "driver_hourly_stats:avg_daily_trips"],
                                       entity_rows=[{"driver_id": 1001}, {"driver_id": 1002}])
    print(f"5. online lookup: {online.to_dict()}")
    print(f"   serve it over REST: featurestore --repo {repo} serve --port 6566, then\n"
          "   curl -s -X POST localhost:6566/get-online-features -H 'Content-Type: application/json' "
          "-d '{\"features\": [\"driver_hourly_stats:conv_rate\"], \"entities\": {\"driver_id\": [1001]}}'")


if __name__ == "__main__":
    main(*sys.argv[1:2])
