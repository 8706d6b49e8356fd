"""Windowed aggregations (issue 4, acceptance 6): our engines vs a hand-written DuckDB query.

10M transaction events over 1M users (``--events``/``--users`` scale it down), one feature view with
``filter=col("status") == "settled"`` and ``amount`` sum and count over 1 h, 1 day and 7 days:

- ``duckdb floor``: one GROUP BY with a FILTER clause per window, all users at the end time
  (``runners/agg_duckdb.py``);
- ``ours/local export``: ``get_historical_features`` for all users at the end time, from the source
  files; ``ours/local materialize``: ``materialize(start, end, online=False)``, and after it the same
  export read from the offline store (``runners/agg_ours.py``);
- the same two on the Spark engine (``local[2]``), recorded beside them, no target.

Every system runs in its own child process, one at a time, under the export benchmark's guard
(``bench_export.run_child``: time-out, RSS limit, machine's available memory). Every export's numbers
are checked against the floor for every user (counts exactly, sums to a relative 1e-9, nulls alike);
every materialization's row count against the number of settled events. A table, the ratios with
the 1.5x target and a JSON file in ``benchmarks/results/`` come out. When the target is missed, ours
runs once more under pyinstrument (with DuckDB's own per-operator profile) and the report says where
the time goes.

    .venv/bin/python benchmarks/bench_aggregations.py                         # 10M events / 1M users
    .venv/bin/python benchmarks/bench_aggregations.py --events 1000000 --users 100000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate_txns  # noqa: E402
from bench_export import run_child  # noqa: E402  (subprocess-per-system runner with its memory guard)

RUNNERS = HERE / "runners"
RESULTS = HERE / "results"
TARGET_VS_FLOOR = 1.5
FEATURES = [f"amount_{fn}_{w}" for fn in ("sum", "count") for w in ("1h", "1d", "7d")]
REL_TOL = 1e-9


# ---------------------------------------------------------------------------------------------------
# running

def run_task(name: str, cmd: list[str], run_dir: Path, guard: dict) -> dict:
    """One child; its metrics JSON merged with what the guard saw."""
    metrics_path = run_dir / f"{name}.json"
    metrics_path.unlink(missing_ok=True)
    cmd = cmd + ["--metrics", str(metrics_path)]
    print(f"  {name:24s} ...", end="", flush=True)
    child = run_child(cmd, run_dir / f"{name}.log", guard["timeout"], guard["rss_limit_mb"],
                      guard["min_available_mb"])
    rec = {"name": name, "command": " ".join(cmd), **{k: child[k] for k in (
        "exit_code", "process_seconds", "process_peak_rss_mb", "killed")}}
    if metrics_path.exists():
        try:
            rec.update(json.loads(metrics_path.read_text()))
        except ValueError:
            pass
    if not rec.get("ok"):
        rec["ok"] = False
        if child["killed"]:
            rec["error"] = f"killed by the benchmark ({child['killed']['reason']})"
        elif child["exit_code"] == -9 and not rec.get("error"):
            rec["error"] = "SIGKILL from outside (most likely the kernel's OOM killer)"
        elif not rec.get("error"):
            rec["error"] = f"runner wrote no metrics (exit {child['exit_code']})"
        running = rec.get("running")
        if running:
            end = (child["killed"] or {}).get("at_unix", child["ended_unix"])
            rec["error"] += f" during {running['task']}, {end - running['started_unix']:.0f} s into it"
        rec["log_tail"] = (run_dir / f"{name}.log").read_text(errors="replace")[-3000:]
        print(f" FAILED: {rec['error'][:300]}")
    else:
        shown = ", ".join(f"{k} {v['seconds']:.2f} s" for k, v in rec["timings"].items())
        print(f" {shown}  (peak RSS {rec['peak_rss_mb']:,.0f} MB)")
    return rec


def floor_cmd(data: Path, users: int, work: Path, out: Path | None, window: bool, copy: bool) -> list[str]:
    cmd = [sys.executable, str(RUNNERS / "agg_duckdb.py"), "--data", str(data), "--users", str(users),
           "--work", str(work)] + (["--window"] if window else []) + (["--copy"] if copy else [])
    return cmd + (["--out", str(out)] if out else [])


def ours_cmd(engine: str, task: str, data: Path, users: int, work: Path, out: Path | None,
             profile: Path | None = None) -> list[str]:
    cmd = [sys.executable, str(RUNNERS / "agg_ours.py"), "--engine", engine, "--task", task,
           "--data", str(data), "--users", str(users), "--work", str(work)]
    if out:
        cmd += ["--out", str(out)]
    if profile:
        cmd += ["--profile", str(profile)]
    return cmd


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def combine(tries: list[dict]) -> dict:
    """Median seconds per timing over the successful tries, highest RSS; the last try's other fields."""
    ok = [t for t in tries if t.get("ok")]
    rec = dict(ok[-1] if ok else tries[-1])
    rec["tries"] = len(tries)
    if ok:
        timings = {}
        for key in ok[-1]["timings"]:
            secs = [t["timings"][key]["seconds"] for t in ok if key in t["timings"]]
            timings[key] = {"seconds": median(secs), "seconds_all": secs,
                            "rss_after_mb": max(t["timings"][key]["rss_after_mb"] for t in ok if key in t["timings"]),
                            "descendants_peak_rss_mb": max(t["timings"][key].get("descendants_peak_rss_mb", 0.0)
                                                           for t in ok if key in t["timings"])}
        rec["timings"] = timings
        rec["peak_rss_mb"] = max(t["peak_rss_mb"] for t in ok)
        rec["process_peak_rss_mb"] = max(t["process_peak_rss_mb"] for t in ok)
    return rec


# ---------------------------------------------------------------------------------------------------
# checks

def check_against_floor(floor_path: Path, other_path: Path) -> dict:
    """Every user: counts equal exactly, sums within a relative 1e-9, nulls in the same places; every
    entity row back once."""
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TEMP TABLE f AS SELECT * FROM read_parquet($p)", {"p": str(floor_path)})
    con.execute("CREATE TEMP TABLE o AS SELECT * FROM read_parquet($p)", {"p": str(other_path)})
    res = {"rows_floor": con.execute("SELECT count(*) FROM f").fetchone()[0],
           "rows_other": con.execute("SELECT count(*) FROM o").fetchone()[0],
           "users_other": con.execute("SELECT count(DISTINCT user_id) FROM o").fetchone()[0]}
    per = []
    for c in FEATURES:
        if c.startswith("amount_count"):
            bad = f"f.{c} IS DISTINCT FROM CAST(o.{c} AS BIGINT)"
        else:
            bad = (f"(f.{c} IS NULL) <> (o.{c} IS NULL) OR "
                   f"abs(f.{c} - o.{c}) > {REL_TOL} * greatest(abs(f.{c}), abs(o.{c}), 1e-300)")
        per.append(f"count(*) FILTER (WHERE o.user_id IS NULL OR ({bad})) AS {c}")
    row = con.execute(f"SELECT {', '.join(per)} FROM f LEFT JOIN o USING (user_id)").fetchone()
    res["mismatches_by_feature"] = {c: int(v) for c, v in zip(FEATURES, row) if v}
    res["non_null_by_feature"] = dict(zip(FEATURES, con.execute(
        "SELECT " + ", ".join(f"count({c})" for c in FEATURES) + " FROM f").fetchone()))
    res["match"] = (not res["mismatches_by_feature"] and res["rows_floor"] == res["rows_other"]
                    == res["users_other"])
    return res


def verdict(check: dict | None) -> str:
    if not check:
        return "not checked"
    if check["match"]:
        return f"equal for all {check['rows_floor']:,d} users"
    if check["rows_other"] != check["rows_floor"]:
        return f"{check['rows_other']:,d} rows back for {check['rows_floor']:,d} users"
    return "DIFFERS: " + ", ".join(f"{k} {v:,d}" for k, v in check["mismatches_by_feature"].items())


# ---------------------------------------------------------------------------------------------------
# report

def rows_of(recs: dict[str, dict]) -> list[dict]:
    """One table row per (system, task)."""
    out = []
    floor = recs.get("duckdb")
    expected_rows = floor.get("settled_in_materialize_interval") if floor and floor.get("ok") else None
    for key, label, task, check_key in (
            ("duckdb", "duckdb floor (GROUP BY)", "export", None),
            ("duckdb", "duckdb window functions", "export_window", "window_check"),
            ("duckdb", "duckdb COPY to Parquet", "materialize_copy", "copy_check"),
            ("local-export", "ours/local", "export", "check"),
            ("local-materialize", "ours/local", "materialize", "mat_check"),
            ("local-materialize", "ours/local", "export_from_offline", "check"),
            ("spark-export", "ours/spark local[2]", "export", "check"),
            ("spark-materialize", "ours/spark local[2]", "materialize", "mat_check"),
            ("spark-materialize", "ours/spark local[2]", "export_from_offline", "check")):
        r = recs.get(key)
        if r is None:
            continue
        row = {"system": label, "task": task, "key": key}
        t = r.get("timings", {}).get(task)
        if t is None:
            row["error"] = r.get("error") or "did not run"
            out.append(row)
            continue
        row.update(seconds=t["seconds"], seconds_all=t.get("seconds_all"), rss_mb=t["rss_after_mb"],
                   child_rss_mb=t.get("descendants_peak_rss_mb") or None)
        if task.startswith("materialize"):
            n = r.get("materialized_rows") if task == "materialize" else r.get("copy_rows")
            row["rows"] = n
            row["check"] = ("rows equal settled events" if n == expected_rows and n is not None
                            else f"{n} rows, expected {expected_rows} settled events")
        elif key == "duckdb" and task == "export":
            row.update(rows=r.get("rows_out"), check="(reference)")
        else:
            row.update(rows=r.get("rows_out"), check=verdict(r.get(check_key)),
                       read_from=(r.get("read_from") or {}).get(task))
        out.append(row)
    return out


def ratios(table: list[dict]) -> list[dict]:
    secs = {(r["key"], r["task"]): r.get("seconds") for r in table}
    floor = secs.get(("duckdb", "export"))
    out = []
    for key, task, name, target in (
            ("duckdb", "export_window", "hand-written window-function query / floor", None),
            ("local-export", "export", "ours/local export / floor", TARGET_VS_FLOOR),
            ("local-materialize", "materialize", "ours/local materialize / floor", TARGET_VS_FLOOR),
            ("local-materialize", "export_from_offline", "ours/local export from offline store / floor", None),
            ("spark-export", "export", "ours/spark export / floor", None),
            ("spark-materialize", "materialize", "ours/spark materialize / floor", None),
            ("spark-materialize", "export_from_offline", "ours/spark export from offline store / floor", None)):
        if (key, task) not in secs:
            continue
        v = secs[(key, task)]
        value = v / floor if v and floor else None
        out.append({"name": name, "value": value, "target": f"<= {target:g}x" if target else "(recorded)",
                    "pass": (value <= target if value is not None else None) if target else None})
    copy, mat = secs.get(("duckdb", "materialize_copy")), secs.get(("local-materialize", "materialize"))
    if copy and mat:
        out.append({"name": "ours/local materialize / DuckDB COPY of the same rows", "value": mat / copy,
                    "target": "(recorded)", "pass": None})
    window, ours = secs.get(("duckdb", "export_window")), secs.get(("local-export", "export"))
    if window and ours:
        out.append({"name": "ours/local export / hand-written window query", "value": ours / window,
                    "target": "(recorded)", "pass": None})
    return out


def print_report(title: str, table: list[dict], rats: list[dict]) -> None:
    print(f"\n== {title} ==")
    head = (f"{'system':24s} {'task':20s} {'seconds':>9s} {'runs':>30s} {'RSS MB':>8s} {'JVM MB':>7s} "
            f"{'rows':>11s}  check")
    print(head)
    print("-" * (len(head) + 30))
    for r in table:
        if "error" in r:
            print(f"{r['system']:24s} {r['task']:20s} FAILED: {r['error'][:400]}")
            continue
        runs = ",".join(f"{s:.2f}" for s in (r.get("seconds_all") or [])) if len(r.get("seconds_all") or []) > 1 else ""
        jvm = f"{r['child_rss_mb']:.0f}" if r.get("child_rss_mb") else ""
        print(f"{r['system']:24s} {r['task']:20s} {r['seconds']:>9.2f} {runs:>30s} {r['rss_mb']:>8.0f} {jvm:>7s} "
              f"{(r['rows'] if r['rows'] is not None else 0):>11,d}  {r['check']}"
              + (f" (read from {r['read_from']})" if r.get("read_from") else ""))
    print()
    for row in rats:
        shown = "-" if row["value"] is None else f"{row['value']:.2f}x"
        v = {True: "PASS", False: "FAIL", None: ""}[row["pass"]]
        print(f"  {row['name']:54s} {shown:>9s}   target {row['target']:>11s}   {v}")


def print_profile(name: str, prof: dict) -> None:
    py = prof.get("python", {})
    print(f"\n-- where the time goes: {name} ({py.get('total_seconds', 0):.2f} s under pyinstrument) --")
    print("  Python, self time (a C call into DuckDB counts where it was made):")
    for r in py.get("self_time", [])[:6]:
        print(f"    {r['share']:6.1%}  {r['seconds']:7.2f} s  {r['function']}")
    print("  the product's functions, inclusive:")
    for r in py.get("product_inclusive", [])[:8]:
        print(f"    {r['share']:6.1%}  {r['seconds']:7.2f} s  {r['function']}")
    queries = prof.get("duckdb", [])
    total_q = sum(q["seconds"] or 0 for q in queries)
    print(f"  DuckDB: {len(queries)} queries, {total_q:.2f} s wall in total; slowest:")
    for q in queries[:3]:
        ops = ", ".join(f"{o['name']} {o['share']:.0%}" for o in q["operators"][:4])
        print(f"    {q['seconds']:.2f} s wall, {q['cpu_seconds']:.2f} s CPU: {ops}")
        print(f"      {q['sql_head'][:160]}")


# ---------------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description="Windowed aggregation benchmark (issue 4, acceptance 6)")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of the floor and of ours/local (alternating; median seconds); Spark runs once")
    ap.add_argument("--engines", default="local,spark", help="comma-separated subset of local,spark")
    ap.add_argument("--profile", choices=["auto", "always", "never"], default="auto",
                    help="profile ours/local in an extra run: when the target is missed (auto), always or never")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds before a child is killed")
    ap.add_argument("--rss-limit-mb", type=float, default=None,
                    help="kill a child whose RSS passes this (default: 85%% of the machine's memory)")
    ap.add_argument("--min-available-mb", type=float, default=1024.0,
                    help="kill a child when the machine's available memory drops below this")
    ap.add_argument("--no-window-variant", action="store_true",
                    help="skip the hand-written window-function query (timed beside the floor, for comparison)")
    ap.add_argument("--no-copy-variant", action="store_true",
                    help="skip the DuckDB COPY of the materialized rows (timed beside the floor, for comparison)")
    ap.add_argument("--keep", action="store_true", help="keep result Parquet files and scratch repos")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if set(engines) - {"local", "spark"}:
        ap.error("--engines takes local and/or spark")

    total_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    guard = {"timeout": args.timeout, "rss_limit_mb": args.rss_limit_mb or 0.85 * total_mb,
             "min_available_mb": args.min_available_mb}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    label = f"{args.events:,d} events / {args.users:,d} users"
    run_dir = generate_txns.DEFAULT_ROOT.parent / "runs" / "aggregations"
    shutil.rmtree(run_dir, ignore_errors=True)
    work = run_dir / "work"
    work.mkdir(parents=True)
    RESULTS.mkdir(parents=True, exist_ok=True)

    # the data, in a guarded child too (10M rows take ~2 GB while they are generated)
    data = generate_txns.folder_for(args.events, args.users)
    print(f"data: {data}", flush=True)
    t0 = time.perf_counter()
    child = run_child([sys.executable, str(HERE / "generate_txns.py"), "--events", str(args.events),
                       "--users", str(args.users)], run_dir / "generate.log", guard["timeout"],
                      guard["rss_limit_mb"], guard["min_available_mb"])
    if child["exit_code"] != 0:
        print((run_dir / "generate.log").read_text()[-3000:])
        print(f"generating the data failed: {child}")
        return 1
    gen = json.loads((data / "generated.json").read_text())
    print(f"  ready in {time.perf_counter() - t0:.1f} s ({gen['bytes'] / 2**20:,.0f} MB of Parquet, "
          f"{len(generate_txns.files(data))} files)", flush=True)

    report: dict = {"started": stamp, "label": label, "events": args.events, "users": args.users,
                    "data": str(data), "generated": gen,
                    "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "memory_mb": round(total_mb)},
                    "target_vs_floor": TARGET_VS_FLOOR, "guard": guard, "runs": {}}

    def out(name: str) -> Path:
        return run_dir / f"{name}.parquet"

    tries: dict[str, list[dict]] = {}
    print(f"\n{label}:", flush=True)
    # the floor and ours/local alternate, round by round, so drift in the machine's load hits all alike
    plan = [("duckdb", floor_cmd(data, args.users, work, out("duckdb"), not args.no_window_variant,
                                  not args.no_copy_variant))]
    if "local" in engines:
        plan += [("local-export", ours_cmd("local", "export", data, args.users, work, out("local-export"))),
                 ("local-materialize", ours_cmd("local", "materialize", data, args.users, work,
                                                out("local-materialize")))]
    for _ in range(max(args.repeat, 1)):
        for name, cmd in plan:
            if tries.get(name) and not tries[name][-1].get("ok"):
                continue
            tries.setdefault(name, []).append(run_task(name, cmd, run_dir, guard))
    if "spark" in engines:
        for task in ("export", "materialize"):
            name = f"spark-{task}"
            tries[name] = [run_task(name, ours_cmd("spark", task, data, args.users, work, out(name)),
                                    run_dir, guard)]
    recs = {k: combine(v) for k, v in tries.items()}

    floor_ok = recs["duckdb"].get("ok") and out("duckdb").exists()
    for name, r in recs.items():
        if name != "duckdb" and r.get("ok") and floor_ok and out(name).exists():
            r["check"] = check_against_floor(out("duckdb"), out(name))
    if recs["duckdb"].get("ok") and out("duckdb-window").exists():
        recs["duckdb"]["window_check"] = check_against_floor(out("duckdb"), out("duckdb-window"))

    table = rows_of(recs)
    rats = ratios(table)
    print_report(f"windowed aggregations, {label}", table, rats)

    missed = any(r["pass"] is False for r in rats)
    profiles = {}
    if "local" in engines and (args.profile == "always" or (args.profile == "auto" and missed)):
        print("\nprofiling ours/local (one extra run of each task, not counted in the figures) ...", flush=True)
        for task in ("export", "materialize"):
            prof_path = RESULTS / f"profile-aggregations-{task}-{stamp}.txt"
            r = run_task(f"profile-local-{task}", ours_cmd("local", task, data, args.users, work, None,
                                                           prof_path), run_dir, guard)
            if r.get("ok"):
                for name, prof in (r.get("profiles") or {}).items():
                    profiles[name] = prof
                    print_profile(f"ours/local {name}", prof)
            else:
                profiles[task] = {"error": r.get("error")}

    report["runs"] = {k: {kk: vv for kk, vv in v.items() if kk not in ("versions",)} for k, v in recs.items()}
    report["versions"] = next((v.get("versions") for v in recs.values() if v.get("versions")), None)
    report["table"] = table
    report["ratios"] = rats
    report["profiles"] = profiles
    path = RESULTS / f"aggregations-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    (RESULTS / "aggregations-latest.json").write_text(path.read_text())
    print(f"\nresults: {path}")
    if not args.keep:
        for p in run_dir.glob("*.parquet"):
            p.unlink()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
