"""Shared plumbing for the per-system runners.

Each runner is one child process: it loads the entity frame (untimed), times the export from "entity
frame in memory" to "full result in memory", records its own peak RSS right after the export, then
(untimed) writes the result to Parquet so the parent can check it against the DuckDB floor. Only
stdlib, pyarrow and pandas are used here, so it runs in the project's venv and in Feast's.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parents[1]
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import generate as spec  # noqa: E402  (feature names, dtypes and TTLs shared by every system)

HOURLY_VIEW = "driver_hourly_stats"
DAILY_VIEW = "driver_daily_stats"


def feature_refs() -> list[str]:
    return ([f"{HOURLY_VIEW}:{n}" for n, _ in spec.HOURLY_FEATURES]
            + [f"{DAILY_VIEW}:{n}" for n, _ in spec.DAILY_FEATURES])


def feature_names() -> list[str]:
    return [n for n, _ in spec.HOURLY_FEATURES] + [n for n, _ in spec.DAILY_FEATURES]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for mod in ("pyarrow", "pandas", "numpy", "duckdb", "feast", "ibis", "featurestore"):
        if mod in sys.modules:
            out[mod] = str(getattr(sys.modules[mod], "__version__", "?"))
    return out


def parse_args(extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="folder with the generated Parquet files")
    ap.add_argument("--entities", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="where to write the result (Parquet)")
    ap.add_argument("--metrics", type=Path, required=True, help="where to write the metrics (JSON)")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder for a feature repo")
    if extra:
        extra(ap)
    return ap.parse_args()


def load_entities(path: Path):
    import pyarrow.parquet as pq
    return pq.read_table(path).to_pandas()


def run(export: Callable[[argparse.Namespace, object], object],
        setup: Callable[[argparse.Namespace], None] | None = None,
        extra: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """``setup(args)`` runs untimed (e.g. apply); ``export(args, entity_df)`` returns an Arrow table or a
    pandas frame and is timed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    args = parse_args(extra)
    metrics: dict = {"ok": False}
    try:
        t0 = time.perf_counter()
        if setup:
            setup(args)
        metrics["setup_seconds"] = time.perf_counter() - t0
        df = load_entities(args.entities)
        metrics["rows_in"] = len(df)
        metrics["rss_before_export_mb"] = peak_rss_mb()
        # if the parent has to kill us mid-export, this tells it when the export started
        args.metrics.write_text(json.dumps(dict(metrics, export_started_unix=time.time())) + "\n")
        t0 = time.perf_counter()
        result = export(args, df)
        metrics["seconds"] = time.perf_counter() - t0
        metrics["rss_after_export_mb"] = peak_rss_mb()
        metrics["rows_out"] = len(result) if not isinstance(result, pa.Table) else result.num_rows
        metrics["result_type"] = type(result).__name__
        metrics["ok"] = True
        metrics["versions"] = _versions()
        del df
        table = result if isinstance(result, pa.Table) else pa.Table.from_pandas(result, preserve_index=False)
        del result
        pq.write_table(table, args.out)
    except BaseException as exc:  # report, don't hide: the parent prints this text verbatim
        metrics["error"] = f"{type(exc).__name__}: {exc}"
        metrics["traceback"] = traceback.format_exc()
    finally:
        args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    sys.exit(0 if metrics["ok"] else 1)
