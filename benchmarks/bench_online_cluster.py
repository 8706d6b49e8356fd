"""Online path on Redis Cluster: our product on a three-master cluster, beside the single node and beside
Feast 0.67 on the same cluster, in one invocation (issue "Redis Cluster").

Run with the project's venv, from anywhere (11-14 minutes on the shared 2-core machine):

    .venv/bin/python benchmarks/bench_online_cluster.py
    .venv/bin/python benchmarks/bench_online_cluster.py --entities 200000 --workers 1 --duration 5   # quick

It starts what it needs and stops it at the end: one ``redis-server`` (``bench_online.RedisServer``) and
a six-node Redis Cluster, three masters with one replica each, on free loopback ports
(``tests/cluster_helpers.ThrowawayCluster``, ``--cluster-node-timeout`` 15 s as Redis ships it). Ours
writes the cluster with ``online_store: {type: redis, url: redis://127.0.0.1:<port>, cluster: true}``;
Feast with ``online_store: {type: redis, redis_type: redis_cluster, connection_string:
"127.0.0.1:<port>"}``. Systems, named ``<product>/<where>``: ``ours/single``, ``ours/cluster``,
``feast/cluster`` and (unless ``--no-feast-single``) ``feast/single``.

1. **materialize**: n distinct drivers x the hourly view's 10 features (``online_common.distinct_table``,
   as ``bench_online.py``) by each system into an empty store (``bench_online.run_materialize``: a
   child per run, apply untimed, the timed ``FeatureStore.materialize``). Ours runs ``--repeat`` times
   on each target, single and cluster alternating (median counts); Feast once per target. Rows/s, keys
   stored, and the CPU each Redis node used during the run (``used_cpu_sys + used_cpu_user`` of ``INFO
   cpu`` before and after): the max/min ratio between the three masters shows whether writes spread.
2. **serve**: ``bench_online``'s serving tables (10,000 drivers, hourly 10 + daily 5 features, shifted
   to recent times), materialized by every system; then all feature servers up at once (``featurestore
   serve``, ``feast serve --max-requests 0``) for each ``--workers`` count, and ``wrk`` as in
   ``bench_online.py``: 1x10 sequential, 1x10 at 8 connections, 100x15 at 8 connections, each after a
   warm-up; phase by phase, the systems one after another. Per phase: req/s, latency percentiles, the
   cores each Redis node and the server used. Before and after the load, the answers of ours/cluster
   and feast/cluster, and of ours/single and ours/cluster, are compared value by value
   (``bench_online.compare``: 300 random drivers plus 4 unknown ids x 15 features).

JSON in ``benchmarks/results/online_cluster-<UTC time>.json`` (and ``online_cluster-latest.json``), and a
table with the ratios against Feast on the cluster.
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
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import bench_online as bo  # noqa: E402  (puts runners/ on sys.path too)
import generate  # noqa: E402
import online_common as oc  # noqa: E402
from feast_env import ensure_feast_venv  # noqa: E402

from tests.cluster_helpers import ThrowawayCluster  # noqa: E402

RESULTS = bo.RESULTS
# label -> (product, where)
ALL_SYSTEMS = {"ours/single": ("ours", "single"), "ours/cluster": ("ours", "cluster"),
               "feast/cluster": ("feast", "cluster"), "feast/single": ("feast", "single")}


def _node_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _reset_commandstats(client) -> None:
    client.config_resetstat()


def _commandstats(client) -> dict[str, list]:
    """Commands a node ran since the last reset: name -> [calls, usec of Redis CPU]."""
    out = {}
    for name, v in client.info("commandstats").items():
        if isinstance(v, dict) and v.get("calls"):
            out[name.removeprefix("cmdstat_")] = [int(v["calls"]), int(v["usec"])]
    return dict(sorted(out.items(), key=lambda kv: -kv[1][1]))


class SingleNode(bo.RedisServer):
    """``bench_online``'s private redis-server, with the per-node accounting the cluster has."""

    where = "single"

    def nodes(self) -> dict[str, str]:
        return {f"127.0.0.1:{self.port}": "master"}

    def node_cpu(self) -> dict[str, float]:
        return {f"127.0.0.1:{self.port}": _node_cpu(self.client)}

    def keys_per_master(self) -> dict[str, int]:
        return {f"127.0.0.1:{self.port}": sum(self.dbsize(db) for db in (bo.OURS_DB, bo.FEAST_DB))}

    def reset_commandstats(self) -> None:
        _reset_commandstats(self.client)

    def commandstats(self) -> dict:
        return {f"127.0.0.1:{self.port}": _commandstats(self.client)}


class ClusterNodes:
    """A throwaway three-master cluster (one replica each), with what ``bench_online.run_materialize``
    asks of a store (``runner_args``, ``cpu_seconds``) and per-node accounting."""

    where = "cluster"

    def __init__(self, workdir: Path, node_timeout_ms: int):
        import redis

        for binary in ("redis-server", "redis-cli"):
            if not shutil.which(binary):
                raise SystemExit(f"{binary} is not installed (apt-get install redis-server)")
        self.cluster = ThrowawayCluster.create(workdir, "redis-server", "redis-cli", node_timeout_ms=node_timeout_ms)
        self.masters = sorted(self.cluster.masters())
        self.replicas = sorted(p for p in self.cluster.ports if p not in self.masters)
        self.port = self.masters[0]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.clients = {p: redis.Redis(host="127.0.0.1", port=p, socket_timeout=30) for p in self.cluster.ports}
        self.version = self.clients[self.port].info("server")["redis_version"]
        self.slots = {f"127.0.0.1:{p}": n for p, n in self.cluster.slot_counts().items()}

    def runner_args(self, system: str) -> list[str]:
        if system == "ours":
            return ["--redis-url", self.url, "--prefix", bo.OURS_PREFIX, "--cluster"]
        return ["--redis", f"127.0.0.1:{self.port}", "--redis-type", "redis_cluster"]

    def nodes(self) -> dict[str, str]:
        roles = {p: "master" for p in self.masters} | {
            p: f"replica of {self.cluster.role(p)[1]}" for p in self.replicas}
        return {f"127.0.0.1:{p}": roles[p] for p in self.cluster.ports}

    def node_cpu(self) -> dict[str, float]:
        return {f"127.0.0.1:{p}": _node_cpu(c) for p, c in self.clients.items()}

    def cpu_seconds(self) -> float:
        return sum(self.node_cpu().values())

    def keys_per_master(self) -> dict[str, int]:
        return {f"127.0.0.1:{p}": int(self.clients[p].dbsize()) for p in self.masters}

    def reset_commandstats(self) -> None:
        for c in self.clients.values():
            _reset_commandstats(c)

    def commandstats(self) -> dict:
        return {f"127.0.0.1:{p}": _commandstats(c) for p, c in self.clients.items()}

    def flushall(self) -> None:
        for p in self.masters:
            self.clients[p].flushall()
        deadline = time.monotonic() + 30
        while any(self.clients[p].dbsize() for p in self.replicas) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        for c in self.clients.values():
            c.close()
        self.cluster.stop()


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _spread(cpu: dict[str, float], masters: list[str]) -> dict:
    vals = [cpu[m] for m in masters]
    lo = min(vals)
    return {"masters": {m: round(cpu[m], 3) for m in masters},
            "max_over_min": round(max(vals) / lo, 3) if lo > 0 else None}


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def master_names(store) -> list[str]:
    return [n for n, role in store.nodes().items() if role == "master"]


# ---------------------------------------------------------------------------------------------------
# materialize

def materialize_one(label: str, store, views: dict[str, Path], project: str, start: datetime, end: datetime,
                    feast_python: Path, work: Path, run_dir: Path, guard: dict, tag: str, flush: bool = True) -> dict:
    system = ALL_SYSTEMS[label][0]
    if flush:
        store.flushall()
    keys0 = sum(store.keys_per_master().values())
    store.reset_commandstats()
    cpu0, busy0 = store.node_cpu(), bo._machine_busy()
    rec = bo.run_materialize(system, views, work / f"{project}_{label.replace('/', '_')}_repo", project, start, end,
                             store, feast_python, run_dir, guard, tag)
    cpu, busy1 = _delta(cpu0, store.node_cpu()), bo._machine_busy()
    per_master = store.keys_per_master()
    rec.update(label=label, loadavg=bo.loadavg(), keys=sum(per_master.values()) - keys0,
               keys_per_master=per_master, node_cpu_seconds={k: round(v, 3) for k, v in cpu.items()},
               master_cpu_spread=_spread(cpu, master_names(store)), commandstats=store.commandstats(),
               machine_busy=round((busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1), 3))
    return rec


def phase_materialize(args, stores: dict, systems: list[str], feast_python: Path, work: Path, guard: dict) -> dict:
    print("\n== materialize: distinct drivers x 10 features ==", flush=True)
    now = bo.now_utc()
    start, end = now - timedelta(days=3), now + timedelta(minutes=5)
    sizes = {label: (args.entities if label.startswith("ours") else args.feast_entities or args.entities)
             for label in systems}
    files = {n: oc.distinct_table(work / f"distinct_{n}.parquet", n, now) for n in sorted(set(sizes.values()))}
    run_dir = work / "materialize"
    run_dir.mkdir(parents=True, exist_ok=True)
    out: dict = {"entities": sizes, "interval": [start.isoformat(), end.isoformat()], "runs": {}}
    tries: dict[str, list] = {label: [] for label in systems}

    def one(label: str, i: int) -> dict:
        store = stores[ALL_SYSTEMS[label][1]]
        rec = materialize_one(label, store, {oc.HOURLY_VIEW: files[sizes[label]]}, "mat", start, end, feast_python,
                              work, run_dir, guard, f"{label.replace('/', '-')}-{i}")
        if rec.get("ok"):
            sp = rec["master_cpu_spread"]
            cpu = ", ".join(f"{v:.2f}" for v in sp["masters"].values())
            print(f"  {label:14s} #{i + 1}: {rec['seconds']:7.2f} s  {sizes[label] / rec['seconds']:>9,.0f} rows/s  "
                  f"{rec['keys']:,d} keys; Redis CPU {rec['redis_cpu_seconds']:.1f} s, per master [{cpu}] s"
                  + (f" (max/min {sp['max_over_min']:.2f})" if len(sp["masters"]) > 1 and sp["max_over_min"] else "")
                  + f"; machine {rec['machine_busy']:.0%} busy", flush=True)
        else:
            print(f"  {label:14s} #{i + 1}: FAILED: {rec.get('error')}", flush=True)
        tries[label].append(rec)
        return rec

    ours = [label for label in systems if label.startswith("ours")]
    for i in range(max(args.repeat, 1)):  # single and cluster alternate, so drift in the load hits both
        for label in ours:
            one(label, i)  # a failed run is recorded and the next one tried: failures can be transient
    for label in systems:
        if label.startswith("feast"):
            one(label, 0)
    for label, recs in tries.items():
        timed = [r for r in recs if r.get("ok")]
        rec = dict(recs[-1])
        if timed:
            order = sorted(timed, key=lambda r: r["seconds"])
            rec = dict(order[len(order) // 2])  # the median run, with its own CPU figures
            rec["seconds_all"] = [r["seconds"] for r in timed]
            rec["rows_per_s"] = sizes[label] / rec["seconds"]
            rec["runs"] = len(timed)
        rec["failed_runs"] = [r.get("error") for r in recs if not r.get("ok")]
        out["runs"][label] = rec
    for store in stores.values():
        store.flushall()
    return out


# ---------------------------------------------------------------------------------------------------
# serve

def _server_cpu(svc: bo.Service) -> float:
    return sum(bo._cpu_seconds(p) for p in svc.group_pids())


def phase_serve(args, stores: dict, systems: list[str], feast_python: Path, work: Path, guard: dict) -> dict:
    print("\n== serve: POST /get-online-features ==", flush=True)
    now = bo.now_utc()
    start, end = now - timedelta(days=10), now + timedelta(minutes=5)
    for store in stores.values():
        store.flushall()
    views = oc.serving_tables(work / "serve_data", now)
    run_dir = work / "serve"
    run_dir.mkdir(parents=True, exist_ok=True)
    out: dict = {"setup": {}, "by_workers": {}}
    repos, ready = {}, []
    for label in systems:
        store = stores[ALL_SYSTEMS[label][1]]
        rec = materialize_one(label, store, views, "serve", start, end, feast_python, work, run_dir, guard,
                              f"serve-{label.replace('/', '-')}", flush=False)
        out["setup"][label] = rec
        repos[label] = work / f"serve_{label.replace('/', '_')}_repo"
        if rec.get("ok"):
            ready.append(label)
            print(f"  {label:14s} materialized the serving data in {rec['seconds']:.1f} s ({rec['keys']:,d} keys)",
                  flush=True)
        else:
            print(f"  {label:14s} could not materialize the serving data: {rec.get('error')}", flush=True)
    pairs = [(a, b) for a, b in (("ours/cluster", "feast/cluster"), ("ours/single", "ours/cluster"))
             if a in ready and b in ready]
    for w in args.workers:
        print(f"  workers={w}: {len(ready)} servers up", flush=True)
        ports, services = {}, {}
        rec: dict = {"ports": ports, "startup_seconds": {}, "phases": {}, "correctness": {}}
        try:
            nxt = 56410
            for label in ready:
                ports[label] = bo.free_port(nxt)
                nxt = ports[label] + 1
                services[label] = bo.start_server(ALL_SYSTEMS[label][0], label.replace("/", "-"), w, repos[label],
                                                  ports[label], feast_python, run_dir, guard)
            for label in ready:
                rec["startup_seconds"][label] = bo.wait_healthy(services[label], ports[label])
            for a, b in pairs:
                rec["correctness"][f"{a} vs {b} before"] = bo.compare(ports[a], ports[b], args.sample, seed=w)
            for name, n, feats, conns in bo.PHASES:
                lua = run_dir / f"wrk-{name.replace(' ', '-')}.lua"
                lua.write_text(bo.WRK_LUA % {"n": n, "features": json.dumps(feats), "lo": oc.FIRST_DRIVER,
                                             "hi": oc.LAST_DRIVER, "seed": 7})
                rec["phases"][name] = {}
                for label in ready:
                    store = stores[ALL_SYSTEMS[label][1]]
                    bo.wrk(ports[label], lua, conns, args.warmup)  # warm-up, not counted
                    store.reset_commandstats()
                    cpu0, srv0, busy0 = store.node_cpu(), _server_cpu(services[label]), bo._machine_busy()
                    t0 = time.perf_counter()
                    r = bo.wrk(ports[label], lua, conns, args.duration)
                    wall = time.perf_counter() - t0
                    busy1 = bo._machine_busy()
                    node_cores = {k: round(v / wall, 3) for k, v in _delta(cpu0, store.node_cpu()).items()}
                    r.update(loadavg=bo.loadavg(), node_cores=node_cores, commandstats=store.commandstats(),
                             server_cores=round((_server_cpu(services[label]) - srv0) / wall, 3),
                             machine_busy=round((busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1), 3),
                             master_spread=_spread(node_cores, master_names(store)))
                    rec["phases"][name][label] = r
                    redis_cores = sum(node_cores.values())
                    print(f"    {label:14s} {name:10s} {r['rps']:9,.0f} req/s  p50 {r['p50_ms']:7.2f}  "
                          f"p99 {r['p99_ms']:7.2f}  p99.9 {r['p999_ms']:7.2f} ms  errors {r['errors']}; cores: "
                          f"server {r['server_cores']:.2f}, redis {redis_cores:.2f}"
                          + (f" (masters {'/'.join(f'{v:.2f}' for v in r['master_spread']['masters'].values())})"
                             if ALL_SYSTEMS[label][1] == "cluster" else ""), flush=True)
            for a, b in pairs:
                rec["correctness"][f"{a} vs {b} after"] = bo.compare(ports[a], ports[b], args.sample, seed=100 + w)
            for key, c in rec["correctness"].items():
                print(f"    check {key}: {c['values']:,d} values of {c['entities']} drivers, "
                      f"{c.get('value_mismatches', 0)} value mismatches, "
                      f"{c.get('event_timestamp_mismatches', 0)} event-time mismatches; status differences: "
                      + (", ".join(f"{k[7:]} x{v}" for k, v in c.items() if k.startswith("status ")) or "none"),
                      flush=True)
        except Exception as exc:  # noqa: BLE001 - report what happened, keep the figures measured so far
            rec["error"] = f"{type(exc).__name__}: {exc}"
            print(f"    FAILED: {rec['error']}", flush=True)
        finally:
            for label, svc in services.items():
                if svc.killed:
                    rec[f"{label}_killed"] = svc.killed
                svc.stop()
        out["by_workers"][str(w)] = rec
    return out


# ---------------------------------------------------------------------------------------------------
# report

def ratios(report: dict) -> list[dict]:
    rows = []
    mat = report.get("materialize", {}).get("runs", {})

    def rps(label):
        return mat.get(label, {}).get("rows_per_s")

    for a, b in (("ours/cluster", "feast/cluster"), ("ours/single", "feast/cluster"), ("ours/single", "feast/single"),
                 ("ours/cluster", "ours/single"), ("feast/cluster", "feast/single")):
        if rps(a) and rps(b):
            rows.append({"name": f"materialize rows/s, {a} / {b}", "value": rps(a) / rps(b)})
    for label in ("ours/cluster", "feast/cluster"):
        sp = mat.get(label, {}).get("master_cpu_spread", {})
        if sp.get("max_over_min"):
            rows.append({"name": f"materialize {label}: master CPU max/min", "value": sp["max_over_min"]})
    serve = report.get("serve", {})
    for w, rec in serve.get("by_workers", {}).items():
        for phase, by in rec.get("phases", {}).items():
            for a, b in (("ours/cluster", "feast/cluster"), ("ours/cluster", "ours/single")):
                ra, rb = by.get(a), by.get(b)
                if ra and rb and not ra["errors"] and not rb["errors"]:
                    rows.append({"name": f"w{w} {phase} req/s, {a} / {b}", "value": ra["rps"] / rb["rps"]})
            if phase.startswith("100x15"):
                for label in ("ours/cluster", "feast/cluster"):
                    sp = by.get(label, {}).get("master_spread", {})
                    if sp.get("max_over_min"):
                        rows.append({"name": f"w{w} {phase} {label}: master CPU max/min", "value": sp["max_over_min"]})
        bad = sum(c.get("value_mismatches", 0) + c.get("event_timestamp_mismatches", 0)
                  for c in rec.get("correctness", {}).values())
        if rec.get("correctness"):
            rows.append({"name": f"w{w} value + event-time mismatches (all checks)", "value": bad})
    return rows


def print_report(report: dict) -> None:
    mat = report.get("materialize")
    if mat:
        print("\n== materialize (distinct drivers x 10 features; ours: median of the runs) ==")
        print(f"{'system':14s} {'drivers':>9s} {'seconds':>8s} {'rows/s':>9s} {'keys':>9s} {'RSS MB':>7s} "
              f"{'redis CPU s':>11s}  per-master CPU s (max/min)")
        for label, r in mat["runs"].items():
            if not r.get("ok"):
                print(f"{label:14s} FAILED: {r.get('error')}")
                continue
            sp = r["master_cpu_spread"]
            per = " / ".join(f"{v:.2f}" for v in sp["masters"].values())
            print(f"{label:14s} {mat['entities'][label]:>9,d} {r['seconds']:>8.2f} {r['rows_per_s']:>9,.0f} "
                  f"{r['keys']:>9,d} {r.get('peak_rss_mb', 0):>7,.0f} {r['redis_cpu_seconds']:>11.2f}  {per}"
                  + (f" ({sp['max_over_min']:.2f})" if len(sp["masters"]) > 1 and sp["max_over_min"] else ""))
            for error in r.get("failed_runs", []):
                print(f"{'':14s} and a FAILED run: {error}")
    serve = report.get("serve")
    if serve:
        print("\n== serving (wrk, one thread; cores = CPU seconds / wall seconds during the phase) ==")
        print(f"{'w':>2s} {'phase':10s} {'system':14s} {'req/s':>8s} {'p50 ms':>7s} {'p90 ms':>7s} {'p99 ms':>7s} "
              f"{'p99.9':>7s} {'err':>4s} {'server':>6s} {'redis':>6s}  masters (max/min)")
        for w, rec in serve["by_workers"].items():
            for phase, by in rec.get("phases", {}).items():
                for label, r in by.items():
                    sp = r["master_spread"]
                    per = ("/".join(f"{v:.2f}" for v in sp["masters"].values())
                           + (f" ({sp['max_over_min']:.2f})" if sp["max_over_min"] else "")) if len(sp["masters"]) > 1 else ""
                    print(f"{w:>2s} {phase:10s} {label:14s} {r['rps']:>8,.0f} {r['p50_ms']:>7.2f} "
                          f"{r['p90_us'] / 1e3:>7.2f} {r['p99_ms']:>7.2f} {r['p999_ms']:>7.2f} {r['errors']:>4d} "
                          f"{r['server_cores']:>6.2f} {sum(r['node_cores'].values()):>6.2f}  {per}")
            if rec.get("error"):
                print(f"{w:>2s} FAILED: {rec['error']}")
    print()
    for row in ratios(report):
        v = row["value"]
        print(f"  {row['name']:58s} {v:>9.2f}" if isinstance(v, float) else f"  {row['name']:58s} {v:>9}")


def main() -> int:
    ap = argparse.ArgumentParser(description="Online path on Redis Cluster vs single node vs Feast 0.67")
    ap.add_argument("--phases", default="materialize,serve", help="comma-separated: materialize, serve")
    ap.add_argument("--entities", type=int, default=1_000_000, help="distinct drivers materialized")
    ap.add_argument("--feast-entities", type=int, default=None, help="drivers materialized by Feast (default: same)")
    ap.add_argument("--no-feast-single", action="store_true", help="leave Feast on the single node out")
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS),
                    help="comma-separated subset of " + ", ".join(ALL_SYSTEMS))
    ap.add_argument("--repeat", type=int, default=3, help="materialize runs of ours per target (median counts)")
    ap.add_argument("--workers", default="1,2", help="server worker counts to try, for every server")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per measured load phase")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load before each phase")
    ap.add_argument("--sample", type=int, default=300, help="drivers compared between servers")
    ap.add_argument("--redis-port", type=int, default=56400, help="first port tried for the single node")
    ap.add_argument("--node-timeout-ms", type=int, default=15000, help="the cluster's cluster-node-timeout")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds before a materialize child is killed")
    ap.add_argument("--rss-limit-mb", type=float, default=None)
    ap.add_argument("--min-available-mb", type=float, default=1024.0)
    args = ap.parse_args()
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    args.workers = [int(w) for w in args.workers.split(",")]
    args.duration = min(max(args.duration, 2.0), 60.0)
    args.warmup = min(max(args.warmup, 1.0), 30.0)
    args.stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if "serve" in phases and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    wanted = {s.strip() for s in args.systems.split(",") if s.strip()}
    if wanted - set(ALL_SYSTEMS):
        raise SystemExit(f"--systems: unknown {sorted(wanted - set(ALL_SYSTEMS))}; known: {list(ALL_SYSTEMS)}")
    systems = [s for s in ALL_SYSTEMS if s in wanted and not (args.no_feast_single and s == "feast/single")]

    total_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    guard = {"timeout": args.timeout, "rss_limit_mb": args.rss_limit_mb or 0.85 * total_mb,
             "min_available_mb": args.min_available_mb}
    generate.generate()
    print("Feast venv ...", flush=True)
    feast_python = ensure_feast_venv()
    bo.ensure_feast_redis(feast_python)
    work = generate.DEFAULT_DIR / "online_cluster"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    product_dirs = ["connectors", "featurestore", "serving"]
    report: dict = {"started": args.stamp, "command": " ".join([Path(sys.executable).name, *sys.argv]),
                    "commit": _git("rev-parse", "--short", "HEAD"),
                    "product_uncommitted": _git("status", "--short", "--", *product_dirs).splitlines(),
                    "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_start": bo.loadavg()},
                    "settings": {k: v for k, v in vars(args).items() if k != "stamp"}, "guard": guard,
                    "systems": systems}
    t_start = time.perf_counter()
    stores: dict = {}
    out = RESULTS / f"online_cluster-{args.stamp}.json"
    try:
        stores["single"] = SingleNode(bo.free_port(args.redis_port), work, guard)
        stores["cluster"] = ClusterNodes(work / "cluster", args.node_timeout_ms)
        c = stores["cluster"]
        report["redis"] = {"version": c.version, "single": f"127.0.0.1:{stores['single'].port}",
                           "cluster_nodes": c.nodes(), "cluster_slots_per_master": c.slots,
                           "cluster_node_timeout_ms": args.node_timeout_ms}
        print(f"redis-server {c.version}: single node 127.0.0.1:{stores['single'].port}; cluster masters "
              f"{c.masters} (slots {list(c.slots.values())}), replicas {c.replicas}", flush=True)
        if "materialize" in phases:
            report["materialize"] = phase_materialize(args, stores, systems, feast_python, work, guard)
        if "serve" in phases:
            report["serve"] = phase_serve(args, stores, systems, feast_python, work, guard)
    finally:
        for store in stores.values():
            store.stop()
        report["host"]["loadavg_end"] = bo.loadavg()
        report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        report["ratios"] = ratios(report)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        shutil.copy(out, RESULTS / "online_cluster-latest.json")
    print_report(report)
    print(f"\nwall {report['wall_seconds']:.0f} s; results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
