"""The fraud-detection repo end to end: generate transactions, apply, materialize, export a training
set and score one authorisation online. Runs on the engine named in featurestore.yaml.

    python examples/fraud_detection/run.py
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore import FeatureStore

HERE = Path(__file__).resolve().parent
TS = pa.timestamp("us", tz="UTC")


def generate(now: datetime, users: int = 500, events: int = 20_000, seed: int = 42) -> None:
    rng = np.random.default_rng(seed)
    now_us = int(now.timestamp() * 1_000_000)
    ts = now_us - rng.integers(60, 14 * 86400, events) * 1_000_000
    table = pa.table({
        "user_id": pa.array(rng.integers(1, users + 1, events), pa.int64()),
        "ts": pa.array(ts, TS),
        "created": pa.array(ts, TS),
        "amount": pa.array(np.round(rng.lognormal(3.5, 1.0, events), 2)),
        "country": pa.array(rng.choice(["US", "US", "US", "FR", "DE", "BR"], events)),
        "status": pa.array(rng.choice(["settled"] * 9 + ["declined"], events)),
    })
    (HERE / "data").mkdir(exist_ok=True)
    pq.write_table(table, HERE / "data" / "transactions.parquet")


def main() -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    generate(now)
    store = FeatureStore(repo_path=HERE)
    print(store.apply())
    print(f"engine: {store.config.engine['type']}")
    store.materialize(now - timedelta(days=30), now)
    labels = pa.table({"user_id": pa.array([1, 2, 3, 4], pa.int64()),
                       "event_timestamp": pa.array([now - timedelta(days=d) for d in (0, 1, 2, 3)], TS),
                       "amount_now": pa.array([12.5, 900.0, 40.0, 33.3]),
                       "is_fraud": pa.array([False, True, False, False])})
    training = store.get_historical_features(labels, "fraud_model_v1").to_pandas()
    print(training.to_string(index=False))
    online = store.get_online_features("fraud_model_v1", {"user_id": [2], "amount_now": [900.0]})
    print({k: v[0] for k, v in online.to_dict().items()})


if __name__ == "__main__":
    main()
