"""Exports straight to a Parquet file at 10M and 100M entity rows: ours vs the hand-written DuckDB floor.

    .venv/bin/python benchmarks/bench_export_scale.py --millions 10
    .venv/bin/python benchmarks/bench_export_scale.py --millions 10,100 --skip-check

The entity rows are the export benchmark's 1M frame repeated, each copy's times shifted by one more
second, written as one Parquet file per copy in a folder. Ours is ``get_historical_features(<folder>,
...).to_parquet(out)`` (the engine streams the export), in a process that opens an applied repo (the
``apply`` runs before, in a process of its own, as a user applies once and exports later); the floor is the export benchmark's DuckDB
query with the entity folder read in place and ``COPY``-ed to a file in input order. Each runs in its
own child process; the parent times it and takes its peak RSS from ``os.wait4``. At 10M the two
outputs are compared row for row (``--skip-check`` leaves that out); the figures go to
``benchmarks/results/export_scale-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "runners"))

import generate  # noqa: E402

RESULTS = HERE / "results"
TARGET_TIME, TARGET_MEMORY = 1.5, 1.0  # ours / floor at 10M rows (issue 12, acceptance 7)


def entity_folder(data: Path, millions: int) -> Path:
    """``millions`` copies of the 1M entity frame, the k-th shifted by k seconds, one file each."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = data / f"entities_scale_{millions}m"
    done = folder / "_complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base = pq.read_table(generate.paths(data)["entities_1m"])
    ts = base.column("event_timestamp")
    for k in range(millions):
        shifted = pc.add(ts, pa.scalar(k * 1_000_000, pa.duration("us")))
        pq.write_table(base.set_column(1, "event_timestamp", shifted), folder / f"part-{k:05d}.parquet")
    done.write_text("")
    return folder


def _ours_setup(args) -> int:
    """The feature repo and its ``apply``, in a process of its own (as a user applies once, then exports)."""
    from common import feature_refs  # noqa: F401 - the runners' path works
    from run_ours import features_py

    from featurestore import FeatureStore

    repo = args.work / "ours_repo"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    (repo / "featurestore.yaml").write_text("project: bench\nregistry: sqlite:///registry.db\n"
                                            "offline_store: {type: parquet, path: offline}\n"
                                            "online_store: {type: sqlite, path: online.db}\n")
    (repo / "features.py").write_text(features_py(args.data.resolve()))
    FeatureStore(repo_path=repo).apply()
    print(json.dumps({"seconds": 0.0, "rows": 0}))
    return 0


def _ours(args) -> int:
    from common import feature_refs

    from featurestore import FeatureStore

    store = FeatureStore(repo_path=args.work / "ours_repo")
    t0 = time.perf_counter()
    rows = store.get_historical_features(str(args.entities), feature_refs()).to_parquet(args.out)["row_count"]
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": rows}))
    return 0


def _floor(args) -> int:
    import duckdb
    from run_duckdb import build_sql

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    files = sorted(str(p) for p in args.entities.glob("*.parquet"))
    con.execute("CREATE VIEW entity_df AS " + " UNION ALL ".join(
        f"SELECT driver_id, event_timestamp, {i << 40} + file_row_number AS rn "
        f"FROM read_parquet('{f}', file_row_number = true)" for i, f in enumerate(files)))
    sql = build_sql(str(args.data / "driver_hourly.parquet"), str(args.data / "driver_daily.parquet"))
    t0 = time.perf_counter()
    con.execute(f"COPY ({sql}) TO '{args.out}' (FORMAT parquet)")
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{args.out}')").fetchone()[0]
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": rows}))
    return 0


def _run_child(system: str, entities: Path, out: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", system, "--entities", str(entities), "--out", str(out),
           "--data", str(args.data), "--work", str(args.work)]
    t0 = time.perf_counter()
    with open(args.work / f"{system}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        return {"ok": False, "error": f"exit status {status}, see {args.work / f'{system}.log'}"}
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"ok": True, "seconds": round(result["seconds"], 2), "rows": result["rows"],
            "wall_seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def _same_rows(a: Path, b: Path) -> bool:
    import duckdb

    con = duckdb.connect()
    for x, y in ((a, b), (b, a)):
        extra = con.execute(f"SELECT count(*) FROM (SELECT * FROM read_parquet('{x}') "
                            f"EXCEPT ALL SELECT * FROM read_parquet('{y}'))").fetchone()[0]
        if extra:
            return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--millions", default="10", help="comma-separated entity row counts, in millions")
    ap.add_argument("--data", type=Path, default=generate.DEFAULT_DIR)
    ap.add_argument("--work", type=Path, default=HERE / ".work" / "export_scale")
    ap.add_argument("--skip-check", action="store_true", help="do not compare the outputs row for row")
    ap.add_argument("--child", choices=["ours-setup", "ours", "floor"], help=argparse.SUPPRESS)
    ap.add_argument("--entities", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return {"ours-setup": _ours_setup, "ours": _ours, "floor": _floor}[args.child](args)
    generate.generate(args.data)
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict = {"when": datetime.now(timezone.utc).isoformat(), "machine": platform.node(),
                    "cpus": os.cpu_count(), "sizes": {}}
    for millions in [int(m) for m in args.millions.split(",")]:
        entities = entity_folder(args.data, millions)
        runs = {}
        setup = _run_child("ours-setup", entities, args.work / "unused.parquet", args)
        if not setup["ok"]:
            raise SystemExit(f"ours: apply failed: {setup['error']}")
        for system in ("floor", "ours"):
            out = args.work / f"{system}_{millions}m.parquet"
            runs[system] = _run_child(system, entities, out, args)
            print(f"{millions}M {system}: {runs[system]}", flush=True)
        floor, ours = runs["floor"], runs["ours"]
        if floor["ok"] and ours["ok"]:
            runs["time_ratio"] = round(ours["seconds"] / floor["seconds"], 2)
            runs["memory_ratio"] = round(ours["peak_rss_mb"] / floor["peak_rss_mb"], 2)
            if not args.skip_check and millions <= 10:
                runs["same_rows"] = _same_rows(args.work / f"ours_{millions}m.parquet",
                                               args.work / f"floor_{millions}m.parquet")
            print(f"{millions}M ours/floor: time {runs['time_ratio']}x (target <= {TARGET_TIME}), memory "
                  f"{runs['memory_ratio']}x (target <= {TARGET_MEMORY}), same rows: {runs.get('same_rows')}",
                  flush=True)
        for system in ("floor", "ours"):
            for leftover in args.work.glob(f"{system}_{millions}m.parquet*"):
                leftover.unlink()
        report["sizes"][f"{millions}m"] = runs
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"export_scale-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
