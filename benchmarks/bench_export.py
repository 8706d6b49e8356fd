"""Point-in-time training export: our product vs Feast 0.67 vs a hand-written DuckDB query.

Run with the project's venv, from anywhere:

    .venv/bin/python benchmarks/bench_export.py --rows both
    .venv/bin/python benchmarks/bench_export.py --rows 1m --skip-feast-file

Each system runs in its own child process, one at a time. The parent measures each child's peak RSS
(``os.wait4``), the child times the export itself and records its own peak RSS right after the export.
Every result is checked against the DuckDB floor; a summary table, the ratios with their targets and
a JSON file in ``benchmarks/results/`` come out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402

RUNNERS = HERE / "runners"
RESULTS = HERE / "results"
SYSTEMS = ["duckdb", "ours", "feast-file", "feast-duckdb"]
FLOOR = "duckdb"
SIZES = {"100k": 100_000, "1m": 1_000_000}

# Targets of issue 2, acceptance 5 (judged at 1M entity rows).
TARGET_VS_FEAST_FILE = 50.0
TARGET_VS_FEAST_DUCKDB = 5.0
TARGET_VS_FLOOR = 1.5
TARGET_RSS_MB = 2048.0


def runner_command(system: str, feast_python: Path | None) -> list[str]:
    if system == "duckdb":
        return [sys.executable, str(RUNNERS / "run_duckdb.py")]
    if system == "ours":
        return [sys.executable, str(RUNNERS / "run_ours.py")]
    if system.startswith("feast-"):
        assert feast_python is not None
        return [str(feast_python), str(RUNNERS / "run_feast.py"), "--store", system.split("-", 1)[1]]
    raise ValueError(system)


def _mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    return float("inf")


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def run_child(cmd: list[str], log: Path, timeout: float | None, rss_limit_mb: float,
              min_available_mb: float) -> dict:
    """Run one child under a guard; return its exit code, wall time, peak RSS and why it was killed.

    The guard kills the child (its whole process group) on the time-out, when its RSS passes
    ``rss_limit_mb``, or when the machine's available memory drops below ``min_available_mb``: a
    runaway run is stopped before the kernel's OOM killer picks a victim on a shared machine.
    """
    t0 = time.perf_counter()
    killed: dict = {}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=RUNNERS,
                                start_new_session=True)
        done = threading.Event()

        def _guard() -> None:
            while not done.wait(0.2):
                reason = None
                if timeout and time.perf_counter() - t0 > timeout:
                    reason = f"time-out after {timeout:g} s"
                elif (rss := _rss_mb(proc.pid)) > rss_limit_mb:
                    reason = f"RSS guard: {rss:,.0f} MB > {rss_limit_mb:,.0f} MB"
                elif (avail := _mem_available_mb()) < min_available_mb:
                    reason = f"memory guard: machine has {avail:,.0f} MB available < {min_available_mb:,.0f} MB"
                if reason:
                    killed.update(reason=reason, at_unix=time.time())
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    return

        guard = threading.Thread(target=_guard, daemon=True)
        guard.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not a running max
        finally:
            done.set()
            guard.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"exit_code": proc.returncode, "process_seconds": time.perf_counter() - t0,
            "process_peak_rss_mb": usage.ru_maxrss / 1024.0, "killed": killed or None,
            "ended_unix": time.time()}


def run_system(system: str, label: str, files: dict[str, Path], run_dir: Path, feast_python: Path | None,
               guard: dict, profile: Path | None) -> dict:
    out = run_dir / f"{system}.parquet"
    metrics_path = run_dir / f"{system}.json"
    for p in (out, metrics_path):
        p.unlink(missing_ok=True)
    work = run_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    cmd = runner_command(system, feast_python) + [
        "--data", str(files["hourly"].parent), "--entities", str(files[f"entities_{label}"]),
        "--out", str(out), "--metrics", str(metrics_path), "--work", str(work)]
    if profile and system == "ours":
        cmd += ["--profile", str(profile)]
    print(f"  {system:13s} ...", end="", flush=True)
    child = run_child(cmd, run_dir / f"{system}.log", guard["timeout"], guard["rss_limit_mb"],
                      guard["min_available_mb"])
    rec: dict = {"system": system, **{k: child[k] for k in ("exit_code", "process_seconds",
                                                             "process_peak_rss_mb", "killed")}}
    if metrics_path.exists():
        rec.update(json.loads(metrics_path.read_text()))
    if not rec.get("ok"):
        rec["ok"] = False
        if child["killed"]:
            rec["error"] = f"killed by the benchmark ({child['killed']['reason']})"
        elif child["exit_code"] < 0 and not rec.get("error"):
            rec["error"] = (f"killed by signal {-child['exit_code']} (SIGKILL from outside: most likely the "
                            f"kernel's OOM killer)" if child["exit_code"] == -9 else f"signal {-child['exit_code']}")
        elif not rec.get("error"):
            rec["error"] = f"runner wrote no metrics (exit {child['exit_code']})"
        if "export_started_unix" in rec and "seconds" not in rec:
            end = (child["killed"] or {}).get("at_unix", child["ended_unix"])
            rec["seconds_before_kill"] = end - rec["export_started_unix"]
            rec["error"] += (f" {rec['seconds_before_kill']:.0f} s into the export, peak RSS "
                             f"{child['process_peak_rss_mb']:,.0f} MB, no result")
        rec["log_tail"] = (run_dir / f"{system}.log").read_text(errors="replace")[-3000:]
    rec["result_path"] = str(out) if out.exists() else None
    if rec.get("ok"):
        print(f" {rec['seconds']:8.2f} s  {rec['rows_out']:>9,d} rows  peak {rec['rss_after_export_mb']:8.0f} MB")
    else:
        print(f" FAILED: {rec.get('error')}")
    return rec


def _combine(tries: list[dict]) -> dict:
    """One record from repeated runs: median export seconds, highest peak RSS, the last run's result."""
    rec = dict(tries[-1])
    if len(tries) > 1 and all(t.get("ok") for t in tries):
        secs = sorted(t["seconds"] for t in tries)
        rec["seconds_all"] = [t["seconds"] for t in tries]
        rec["seconds"] = secs[len(secs) // 2] if len(secs) % 2 else (secs[len(secs) // 2 - 1] + secs[len(secs) // 2]) / 2
        rec["rss_after_export_mb"] = max(t["rss_after_export_mb"] for t in tries)
        rec["process_peak_rss_mb"] = max(t["process_peak_rss_mb"] for t in tries)
    return rec


# ---------------------------------------------------------------------------------------------------
# checks against the floor

def _feature_list() -> list[str]:
    return [n for n, _ in generate.HOURLY_FEATURES] + [n for n, _ in generate.DAILY_FEATURES]


def check_against_floor(floor_path: str, other_path: str) -> dict:
    """Compare a system's result with the floor's.

    ``in_order_mismatches``: rows i where the key, time or any feature differs from the floor's row i
    (the contract for ours: same rows, same order). ``missing``/``extra``: the floor's rows not returned
    with identical values / returned rows that match no floor row, compared as multisets (order-free,
    for systems that reorder). ``dropped_keys``: floor rows whose (driver_id, event_timestamp) does not
    appear in the result at all.
    """
    import duckdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    feats = _feature_list()
    floor = pq.read_table(floor_path)
    other = pq.read_table(other_path)
    missing_cols = [c for c in ["driver_id", "event_timestamp", *feats] if c not in other.column_names]
    if missing_cols:
        return {"error": f"result lacks columns {missing_cols}", "values_match": False}
    for name, tab in (("floor_t", floor), ("other_t", other)):
        con.register(name + "_raw", tab.append_column("__i", pa.array(np.arange(tab.num_rows, dtype=np.int64))))
        cols = ", ".join([f"CAST({c} AS DOUBLE) AS {c}" for c in feats])
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT __i, CAST(driver_id AS BIGINT) AS driver_id, "
                    f"CAST(event_timestamp AS TIMESTAMPTZ) AS event_timestamp, {cols} FROM {name}_raw")
    all_cols = ["driver_id", "event_timestamp", *feats]
    differs = " OR ".join(f"f.{c} IS DISTINCT FROM o.{c}" for c in all_cols)
    res: dict = {"rows_floor": floor.num_rows, "rows_other": other.num_rows}
    res["in_order_mismatches"] = con.execute(
        f"SELECT count(*) FROM floor_t f FULL JOIN other_t o ON f.__i = o.__i WHERE {differs}").fetchone()[0]
    col_list = ", ".join(all_cols)
    same = " AND ".join(f"f.{c} IS NOT DISTINCT FROM o.{c}" for c in all_cols)
    matched = con.execute(f"""
        WITH f AS (SELECT {col_list}, count(*) AS n FROM floor_t GROUP BY ALL),
             o AS (SELECT {col_list}, count(*) AS n FROM other_t GROUP BY ALL)
        SELECT coalesce(sum(least(f.n, o.n)), 0) FROM f JOIN o ON {same}""").fetchone()[0]
    res["missing"] = floor.num_rows - int(matched)
    res["extra"] = other.num_rows - int(matched)
    res["dropped_keys"] = con.execute("""
        SELECT count(*) FROM floor_t f WHERE NOT EXISTS (
            SELECT 1 FROM other_t o WHERE o.driver_id = f.driver_id AND o.event_timestamp = f.event_timestamp)
    """).fetchone()[0]
    res["values_match"] = res["missing"] == 0 and res["extra"] == 0
    res["identical_in_order"] = res["in_order_mismatches"] == 0
    if res["in_order_mismatches"]:
        per_col = con.execute("SELECT " + ", ".join(
            f"count(*) FILTER (WHERE f.{c} IS DISTINCT FROM o.{c}) AS {c}" for c in all_cols)
            + " FROM floor_t f FULL JOIN other_t o ON f.__i = o.__i").fetchone()
        res["in_order_mismatches_by_column"] = {c: int(v) for c, v in zip(all_cols, per_col) if v}
    return res


# ---------------------------------------------------------------------------------------------------
# report

def _fmt(v, spec: str, empty: str = "-") -> str:
    return empty if v is None else format(v, spec)


def ratios(recs: dict[str, dict]) -> list[dict]:
    def secs(s: str) -> float | None:
        r = recs.get(s)
        return r["seconds"] if r and r.get("ok") else None

    def lower_bound(s: str) -> float | None:
        """For a run killed mid-export: the export had taken at least this long."""
        r = recs.get(s)
        return r.get("seconds_before_kill") if r and not r.get("ok") else None

    ours, floor = secs("ours"), secs(FLOOR)
    rows = []
    for system, target in (("feast-file", TARGET_VS_FEAST_FILE), ("feast-duckdb", TARGET_VS_FEAST_DUCKDB)):
        theirs, bound = secs(system), lower_bound(system)
        row = {"name": f"ours vs {system} (speed-up)", "target": f">= {target:g}x", "value": None, "pass": None}
        if theirs and ours:
            row.update(value=theirs / ours, **{"pass": theirs / ours >= target})
        elif bound and ours:
            # the other system never finished: only a lower bound on the speed-up is known
            row.update(value=bound / ours, lower_bound=True, **{"pass": True if bound / ours >= target else None})
        rows.append(row)
    rows.append({"name": "ours / duckdb floor (slow-down)", "value": ours / floor if floor and ours else None,
                 "target": f"<= {TARGET_VS_FLOOR:g}x", "pass": (ours / floor <= TARGET_VS_FLOOR)
                 if floor and ours else None})
    o = recs.get("ours")
    rss = o.get("rss_after_export_mb") if o and o.get("ok") else None
    rows.append({"name": "ours peak RSS (MB)", "value": rss, "target": f"< {TARGET_RSS_MB:g}",
                 "pass": rss < TARGET_RSS_MB if rss is not None else None})
    n_in = o.get("rows_in") if o else None
    n_out = o.get("rows_out") if o and o.get("ok") else None
    check = o.get("check", {}) if o else {}
    rows.append({"name": "ours rows back (identical to floor, in order)", "value": n_out,
                 "target": f"all {n_in:,d}" if n_in else "all",
                 "pass": (n_out == n_in and check.get("identical_in_order", False)) if n_out is not None else None})
    return rows


def print_report(label: str, recs: dict[str, dict]) -> None:
    print(f"\n== point-in-time export, {label} entity rows ==")
    head = (f"{'system':13s} {'rows in':>10s} {'rows out':>10s} {'seconds':>9s} {'peak RSS MB':>12s} "
            f"{'proc RSS MB':>12s}  check vs floor")
    print(head)
    print("-" * len(head) + "-" * 20)
    for system, r in recs.items():
        if not r.get("ok"):
            print(f"{system:13s} FAILED: {r.get('error')}")
            continue
        c = r.get("check")
        if system == FLOOR:
            verdict = "(reference)"
        elif not c:
            verdict = "not checked"
        elif "error" in c:
            verdict = c["error"]
        elif c["identical_in_order"]:
            verdict = "identical, in input order"
        elif c["values_match"]:
            verdict = f"same rows and values, different order ({c['in_order_mismatches']:,d} positions differ)"
        else:
            collapsed = c["missing"] - c["dropped_keys"] - c["extra"]
            verdict = (f"{c['missing']:,d} floor rows not returned as-is: {c['dropped_keys']:,d} dropped, "
                       f"{max(collapsed, 0):,d} duplicates collapsed, {c['extra']:,d} with other values"
                       + ("" if c["in_order_mismatches"] == 0 or system != "ours"
                          else f"; {c['in_order_mismatches']:,d} rows differ in order"))
        print(f"{system:13s} {r['rows_in']:>10,d} {r['rows_out']:>10,d} {r['seconds']:>9.2f} "
              f"{r['rss_after_export_mb']:>12.0f} {r['process_peak_rss_mb']:>12.0f}  {verdict}")
    print()
    for row in ratios(recs):
        v = row["value"]
        shown = "-" if v is None else (f"{v:,.0f}" if row["name"].startswith("ours peak") or "rows" in row["name"]
                                       else (">= " if row.get("lower_bound") else "") + f"{v:.2f}x")
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[row["pass"]]
        print(f"  {row['name']:46s} {shown:>12s}   target {row['target']:>12s}   {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description="Point-in-time export benchmark (issue 2, acceptance 5)")
    ap.add_argument("--rows", choices=["100k", "1m", "both"], default="both")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help=f"comma-separated subset of {','.join(SYSTEMS)} (the DuckDB floor always runs: "
                         "every result is checked against it)")
    ap.add_argument("--skip-feast-file", action="store_true",
                    help="leave out Feast's file store (at 1M rows it takes minutes and ~19 GB)")
    ap.add_argument("--data", type=Path, default=generate.DEFAULT_DIR)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run is killed")
    ap.add_argument("--rss-limit-mb", type=float, default=None,
                    help="kill a run whose RSS passes this (default: 85%% of the machine's memory)")
    ap.add_argument("--min-available-mb", type=float, default=1024.0,
                    help="kill a run when the machine's available memory drops below this")
    ap.add_argument("--profile-ours", action="store_true",
                    help="run ours under pyinstrument (needs it in the venv); profile saved beside the JSON")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of the DuckDB floor and of ours (median seconds, highest RSS); Feast runs once")
    ap.add_argument("--keep", action="store_true", help="keep each system's result Parquet file")
    args = ap.parse_args()

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        ap.error(f"unknown systems {unknown}; choose from {SYSTEMS}")
    if args.skip_feast_file:
        systems = [s for s in systems if s != "feast-file"]
    systems = [FLOOR] + [s for s in systems if s != FLOOR]
    labels = list(SIZES) if args.rows == "both" else [args.rows]

    files = generate.generate(args.data)
    feast_python = None
    if any(s.startswith("feast-") for s in systems):
        from feast_env import ensure_feast_venv
        print("Feast venv ...", flush=True)
        feast_python = ensure_feast_venv()

    total_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    guard = {"timeout": args.timeout, "rss_limit_mb": args.rss_limit_mb or 0.85 * total_mb,
             "min_available_mb": args.min_available_mb}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict = {"started": stamp, "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
                    "ttl_days": {"driver_hourly_stats": generate.HOURLY_TTL_DAYS,
                                 "driver_daily_stats": generate.DAILY_TTL_DAYS},
                    "targets": {"vs_feast_file": TARGET_VS_FEAST_FILE, "vs_feast_duckdb": TARGET_VS_FEAST_DUCKDB,
                                "vs_floor": TARGET_VS_FLOOR, "peak_rss_mb": TARGET_RSS_MB},
                    "guard": guard, "runs": {}}
    for label in labels:
        print(f"\n{label} entity rows:", flush=True)
        run_dir = args.data / "runs" / label
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        # the floor and ours alternate, round by round, so drift in the machine's load hits both alike
        repeated = [x for x in systems if not x.startswith("feast-")]
        n = max(args.repeat, 1)
        tries: dict[str, list[dict]] = {x: [] for x in systems}
        for i in range(n):
            for system in repeated:
                if tries[system] and not tries[system][-1].get("ok"):
                    continue
                profile = (RESULTS / f"profile-ours-{label}-{stamp}.txt"
                           if args.profile_ours and i == n - 1 else None)
                tries[system].append(run_system(system, label, files, run_dir, feast_python, guard, profile))
        for system in systems:
            if system.startswith("feast-"):
                tries[system].append(run_system(system, label, files, run_dir, feast_python, guard, None))
        recs = {x: _combine(tries[x]) for x in systems}
        floor_path = recs[FLOOR].get("result_path")
        for system, r in recs.items():
            if system != FLOOR and r.get("ok") and floor_path and r.get("result_path"):
                r["check"] = check_against_floor(floor_path, r["result_path"])
        print_report(label, recs)
        report["runs"][label] = {"systems": recs, "ratios": ratios(recs)}
        if not args.keep:
            for r in recs.values():
                if r.get("result_path"):
                    Path(r["result_path"]).unlink(missing_ok=True)
                    r["result_path"] = None
    out = RESULTS / f"export-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    (RESULTS / "latest.json").write_text(out.read_text())
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
