"""Shared plumbing for the aggregation benchmark's runners (one child process per system and task).

A runner parses the common arguments, does its untimed setup, times one task with ``timed``, records
its own peak RSS right after, and writes a metrics JSON the parent reads (also when it fails: the
error text and traceback go into the JSON). Results that the parent checks go to ``--out`` (Parquet),
written after the clock.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from common import _versions, peak_rss_mb  # noqa: F401  (the export benchmark's RSS plumbing)

BENCH_DIR = Path(__file__).resolve().parents[1]
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import generate_txns as spec  # noqa: E402

VIEW = "user_txn"
TTL = timedelta(days=30)
WINDOWS = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "7d": timedelta(days=7)}
FUNCTIONS = ("sum", "count")
FEATURES = [f"amount_{fn}_{w}" for fn in FUNCTIONS for w in WINDOWS]
# The export's point: the end of the data (events at exactly END count, events at END - w do not).
POINT = spec.END
# Materialization interval: all events, and a bit past the last one so the offline store covers POINT.
MAT_START = spec.START
MAT_END = spec.END + timedelta(hours=1)


def parse_args(extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="folder with the generated Parquet files")
    ap.add_argument("--users", type=int, required=True, help="entity frame: user ids 1..users")
    ap.add_argument("--metrics", type=Path, required=True, help="where to write the metrics (JSON)")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder")
    ap.add_argument("--out", type=Path, default=None, help="where to write the per-user result (Parquet)")
    ap.add_argument("--profile", type=Path, default=None, help="pyinstrument text profile of the timed part")
    if extra:
        extra(ap)
    return ap.parse_args()


def entity_table(users: int):
    """One row per user at POINT, user ids ascending (the 'all users now' frame)."""
    import numpy as np
    import pyarrow as pa

    ids = np.arange(1, users + 1, dtype=np.int64)
    times = pa.array(np.full(users, int(POINT.timestamp() * 1_000_000), dtype=np.int64)).cast(
        pa.timestamp("us", tz="UTC"))
    return pa.table({"user_id": pa.array(ids), "event_timestamp": times})


def descendants_peak_rss_mb() -> float:
    """Sum of the peak RSS (VmHWM) of this process's live descendants (Linux /proc), 0 if none."""
    import os

    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    me, found = os.getpid(), set()
    frontier = [me]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found.add(child)
                frontier.append(child)
    total = 0.0
    for pid in found:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) / 1024.0
        except OSError:
            continue
    return total


class Recorder:
    """Collects metrics; ``timed(name, fn)`` runs fn under the clock (and pyinstrument if asked)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.metrics: dict = {"ok": False, "timings": {}}

    def save(self) -> None:
        self.args.metrics.write_text(json.dumps(self.metrics, indent=2, default=str) + "\n")

    def timed(self, name: str, fn: Callable[[], object], profile: bool = False) -> object:
        profiler = None
        if profile and self.args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001)
            patch_duckdb_profiling(self.args.profile.with_name(self.args.profile.stem + f"-{name}-duckdb"))
        # if the parent kills us mid-task, this tells it what was running since when
        self.metrics["running"] = {"task": name, "started_unix": time.time()}
        self.save()
        if profiler:
            profiler.start()
        t0 = time.perf_counter()
        try:
            out = fn()
        finally:
            seconds = time.perf_counter() - t0
            if profiler:
                profiler.stop()
                path = self.args.profile.with_name(self.args.profile.stem + f"-{name}" + self.args.profile.suffix)
                path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
                self.metrics.setdefault("profiles", {})[name] = {
                    "text": str(path), "python": python_summary(profiler.last_session),
                    "duckdb": duckdb_summary(path.with_name(self.args.profile.stem + f"-{name}-duckdb"))}
        self.metrics["timings"][name] = {"seconds": seconds, "rss_after_mb": peak_rss_mb()}
        kids = descendants_peak_rss_mb()
        if kids:  # e.g. Spark's JVM, which the process's own rusage does not count
            self.metrics["timings"][name]["descendants_peak_rss_mb"] = kids
        self.metrics.pop("running", None)
        self.save()
        return out


# -- profiling (only with --profile; never while timing a figure) ----------------------------------
def patch_duckdb_profiling(folder: Path) -> None:
    """Make every DuckDB connection the local engine opens write a JSON query profile into ``folder``
    (one file per connection; the last query of a connection wins). The product is not edited: the
    engine's ``_connect`` is wrapped in this process only."""
    from featurestore.engines import local

    folder.mkdir(parents=True, exist_ok=True)
    original = local.LocalEngine._connect
    counter = iter(range(10**6))

    def _connect(self):
        con = original(self)
        con.execute("SET enable_profiling = 'json'")
        con.execute(f"SET profiling_output = '{folder / f'conn-{next(counter):04d}.json'}'")
        return con

    local.LocalEngine._connect = _connect


def duckdb_summary(folder: Path, top: int = 8) -> list[dict]:
    """Per query (slowest first): wall time, the SQL's start, and operator CPU shares (summed over
    threads) by operator name."""
    out = []
    for f in sorted(folder.glob("conn-*.json")):
        try:
            d = json.loads(f.read_text())
        except ValueError:
            continue
        ops: dict[str, float] = {}
        stack = list(d.get("operator", []))
        while stack:
            node = stack.pop()
            name = node.get("name", "?")
            ops[name] = ops.get(name, 0.0) + float(node.get("timing", 0.0))
            stack.extend(node.get("children", []))
        total = sum(ops.values()) or 1.0
        q = d.get("query", {})
        out.append({"file": f.name, "seconds": q.get("total_time"), "cpu_seconds": q.get("cpu_time"),
                    "sql_head": " ".join(str(q.get("sql", "")).split())[:300],
                    "operators": [{"name": k, "cpu_seconds": round(v, 4), "share": round(v / total, 3)}
                                  for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:top]]})
    out.sort(key=lambda q: -(q["seconds"] or 0))
    return out


def python_summary(session, top: int = 15) -> dict:
    """Wall-time shares by function from a pyinstrument session: self time (where the thread was,
    e.g. inside a C call into DuckDB) and, for the product's own functions, inclusive time."""
    root = session.root_frame()
    total = root.time if root is not None else 0.0
    self_t: dict[str, float] = {}
    incl: dict[str, float] = {}

    def walk(frame, stack):
        key = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        self_t[key] = self_t.get(key, 0.0) + frame.total_self_time
        if key not in stack:  # recursion counted once
            incl[key] = incl.get(key, 0.0) + frame.time
        for child in frame.children:
            if not child.is_synthetic:  # "[self]" frames: already in total_self_time
                walk(child, stack | {key})

    if root is not None:
        walk(root, frozenset())
    ours = {k: v for k, v in incl.items() if any(p in k for p in ("featurestore", "transforms", "connectors"))}

    def rows(d):
        return [{"function": k, "seconds": round(v, 3), "share": round(v / total, 3) if total else None}
                for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"total_seconds": total, "self_time": rows(self_t), "product_inclusive": rows(ours)}


def run(body: Callable[[argparse.Namespace, Recorder], None],
        extra: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    args = parse_args(extra)
    rec = Recorder(args)
    rec.metrics["started"] = datetime.now().astimezone().isoformat()
    try:
        body(args, rec)
        rec.metrics["ok"] = True
    except BaseException as exc:  # report, don't hide: the parent prints this text
        rec.metrics["error"] = f"{type(exc).__name__}: {exc}"
        rec.metrics["traceback"] = traceback.format_exc()
    finally:
        rec.metrics["peak_rss_mb"] = peak_rss_mb()
        rec.metrics["versions"] = _versions()
        rec.save()
    sys.exit(0 if rec.metrics["ok"] else 1)
