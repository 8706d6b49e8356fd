"""The offline store on S3 against the same store on local disk, side by side in one run.

    . /tmp/env.sh   # or export FS_TEST_S3_ENDPOINT / _ACCESS_KEY / _SECRET_KEY / _REGION yourself
    .venv/bin/python benchmarks/bench_offline_s3.py [--repeat 3]

One feature repo per store over the export benchmark's data (1M hourly rows, 50k daily rows). Timed:
``materialize`` of the whole range into the offline store (online off), then a 1M-row export read from
the materialized tables, in memory (``to_arrow``) and streamed to a file (entity Parquet path). Each
phase reports the median of ``--repeat`` runs and the ratio S3 / local. The S3 server is whatever the
variables name (in CI and ``make test``: the server ``.ci/services.sh`` starts, on loopback, so the
ratio shows the cost of the object-store protocol, not of a network).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "runners"))

import generate  # noqa: E402
from common import feature_refs  # noqa: E402
from run_ours import features_py  # noqa: E402

RESULTS = HERE / "results"
OPTIONS = {"AWS_ENDPOINT_URL": "${FS_TEST_S3_ENDPOINT}", "AWS_ACCESS_KEY_ID": "${FS_TEST_S3_ACCESS_KEY}",
           "AWS_SECRET_ACCESS_KEY": "${FS_TEST_S3_SECRET_KEY}", "AWS_REGION": "${FS_TEST_S3_REGION}",
           "AWS_ALLOW_HTTP": "true"}


def _bucket() -> str:
    from urllib.parse import urlsplit

    import pyarrow.fs as pafs

    url = urlsplit(os.environ["FS_TEST_S3_ENDPOINT"])
    fs = pafs.S3FileSystem(endpoint_override=url.netloc, scheme=url.scheme,
                           access_key=os.environ["FS_TEST_S3_ACCESS_KEY"],
                           secret_key=os.environ["FS_TEST_S3_SECRET_KEY"],
                           region=os.environ["FS_TEST_S3_REGION"], allow_bucket_creation=True)
    name = f"bench-{uuid.uuid4().hex[:12]}"
    fs.create_dir(name)
    return name


def _repo(root: Path, data: Path, offline: dict) -> Path:
    root.mkdir(parents=True)
    (root / "featurestore.yaml").write_text("project: bench\nregistry: sqlite:///registry.db\n"
                                            f"offline_store: {json.dumps(offline)}\n"
                                            "online_store: {type: sqlite, path: online.db}\n")
    (root / "features.py").write_text(features_py(data.resolve()))
    return root


def _phases(repo: Path, entities: Path) -> dict[str, float]:
    import pyarrow.parquet as pq

    from featurestore import FeatureStore

    store = FeatureStore(repo_path=repo)
    store.apply()
    start, end = datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc) + timedelta(days=1)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    store.materialize(start, end, online=False)
    out["materialize"] = time.perf_counter() - t0
    frame = pq.read_table(entities)
    t0 = time.perf_counter()
    job = store.get_historical_features(frame, feature_refs())
    job.to_arrow()
    out["export_in_memory"] = time.perf_counter() - t0
    assert all(v["read_from"] == "offline_store" for v in job.manifest["views"].values()), job.manifest
    t0 = time.perf_counter()
    store.get_historical_features(str(entities), feature_refs()).to_parquet(repo / "out.parquet")
    out["export_to_file"] = time.perf_counter() - t0
    store.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=generate.DEFAULT_DIR)
    args = ap.parse_args()
    missing = [v for v in ("FS_TEST_S3_ENDPOINT", "FS_TEST_S3_ACCESS_KEY", "FS_TEST_S3_SECRET_KEY",
                           "FS_TEST_S3_REGION") if not os.environ.get(v)]
    if missing:
        sys.exit(f"set {', '.join(missing)} (`. /tmp/env.sh` after `.ci/services.sh start s3`)")
    files = generate.generate(args.data)
    runs: dict[str, list[dict[str, float]]] = {"local": [], "s3": []}
    for i in range(args.repeat):
        for where in ("local", "s3"):
            scratch = Path(tempfile.mkdtemp(prefix=f"bench-offline-{where}-"))
            offline = ({"type": "parquet", "path": "offline"} if where == "local" else
                       {"type": "parquet", "path": f"s3://{_bucket()}/offline", "storage_options": OPTIONS})
            try:
                runs[where].append(_phases(_repo(scratch / "repo", args.data, offline), files["entities_1m"]))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            print(f"run {i + 1} {where}: " + ", ".join(f"{k} {v:.2f}s" for k, v in runs[where][-1].items()),
                  flush=True)
    summary = {}
    for phase in runs["local"][0]:
        local = statistics.median(r[phase] for r in runs["local"])
        remote = statistics.median(r[phase] for r in runs["s3"])
        summary[phase] = {"local_s": round(local, 2), "s3_s": round(remote, 2), "s3_over_local": round(remote / local, 2)}
        print(f"{phase:18s} local {local:6.2f}s   s3 {remote:6.2f}s   s3/local {remote / local:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"offline_s3-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"server": os.environ.get("FS_TEST_S3_SERVER"), "summary": summary,
                                "runs": runs}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
