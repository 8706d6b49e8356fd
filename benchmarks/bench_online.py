"""Online path: materializing into Redis and serving lookups over HTTP, our product vs Feast 0.67.

Run with the project's venv, from anywhere (one heavy process at a time; ~6 minutes):

    .venv/bin/python benchmarks/bench_online.py
    .venv/bin/python benchmarks/bench_online.py --phases serve --workers 1 --duration 5
    .venv/bin/python benchmarks/bench_online.py --profile-ours       # py-spy profile of our server

It starts its own redis-server on a free loopback port (``--save '' --appendonly no``) and stops it at
the end. Ours uses DB 0 (key prefix ``bench``), Feast DB 1; every phase starts from ``FLUSHALL``.

1. **materialize**: n distinct drivers x the hourly view's 10 features (one row each) into Redis,
   ``FeatureStore.materialize`` in a child process per system (ours ``--repeat`` times, the median
   counts; Feast once), under the export benchmark's memory/time guard. Online rows per second. The
   floor (``runners/materialize_floor.py``) stores the same rows, encoded before its clock starts, with
   bare pipelined ``SET key row PXAT t``: what per-key expiring strings cost Redis itself.
2. **serve**: the export benchmark's hourly (10 features) and daily (5 features) views for 10,000
   drivers, shifted to recent times, materialized by both systems; then ``featurestore serve`` and
   ``feast serve`` up side by side, for each ``--workers`` count. ``wrk`` (one thread, a Lua script that
   draws random driver ids per request) drives ``POST /get-online-features``: 1 x 10 sequential (one
   connection), 1 x 10 at concurrency 8, 100 x 15 at concurrency 8; each after a warm-up, for a fixed
   duration. Both servers' answers for a sample of drivers are compared value by value. A redis-py
   MGET loop over the same keys (``runners/online_floor.py``) shows what Redis itself costs.

A table, the ratios against the targets of issue 3 (acceptance 7), and JSON in ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNNERS = HERE / "runners"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(RUNNERS))

import generate  # noqa: E402
import online_common as oc  # noqa: E402
from bench_export import _mem_available_mb, _rss_mb, run_child  # noqa: E402
from feast_env import ensure_feast_venv  # noqa: E402

# Targets of issue 3, acceptance 7.
TARGET_MATERIALIZE_X = 40.0
TARGET_SEQ_P99_MS = 2.0
TARGET_1X10_C8_X = 5.0
TARGET_100X15_C8_X = 20.0
FEAST_REDIS_REQ = "feast[redis]==0.67.0"  # feast_env installs feast[duckdb]; the Redis store needs redis-py
PHASES = [  # (name, entities per request, features, connections)
    ("1x10 seq", 1, oc.features_1x10(), 1),
    ("1x10 c8", 1, oc.features_1x10(), 8),
    ("100x15 c8", 100, oc.features_100x15(), 8),
]
OURS_DB, FEAST_DB, OURS_PREFIX = 0, 1, "bench"


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def loadavg() -> list[float]:
    return list(os.getloadavg())


def free_port(first: int, span: int = 200) -> int:
    for port in range(first, first + span):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}..{first + span}")


# ---------------------------------------------------------------------------------------------------
# processes we start: redis-server and the two feature servers

class Service:
    """A long-running child in its own process group, watched by a memory guard, stopped by group."""

    def __init__(self, name: str, cmd: list[str], log: Path, cwd: Path | None, guard: dict,
                 env: dict | None = None):
        self.name, self.log = name, log
        self.killed: str | None = None
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                     start_new_session=True)
        self._done = threading.Event()
        self._guard = threading.Thread(target=self._watch, args=(guard,), daemon=True)
        self._guard.start()

    def group_pids(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    if int(fields[2]) == self.proc.pid:  # pgrp
                        pids.append(int(entry))
                except (OSError, IndexError, ValueError):
                    pass
        return pids

    def _watch(self, guard: dict) -> None:
        while not self._done.wait(0.5):
            rss = sum(_rss_mb(p) for p in self.group_pids())
            reason = None
            if rss > guard["rss_limit_mb"]:
                reason = f"RSS guard: {rss:,.0f} MB > {guard['rss_limit_mb']:,.0f} MB"
            elif (avail := _mem_available_mb()) < guard["min_available_mb"]:
                reason = f"memory guard: {avail:,.0f} MB available < {guard['min_available_mb']:,.0f} MB"
            if reason:
                self.killed = reason
                print(f"\n  !! {self.name} killed: {reason}", flush=True)
                self._signal(signal.SIGKILL)
                return

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        self._done.set()
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(5)
        self._signal(signal.SIGKILL)  # stragglers of the group (workers), if any
        self._out.close()


class RedisServer:
    def __init__(self, port: int, workdir: Path, guard: dict):
        if not shutil.which("redis-server"):
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.port = port
        self.url = f"redis://127.0.0.1:{port}"
        self.service = Service("redis-server", [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--protected-mode", "yes"], workdir / "redis.log", workdir, guard)
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline or not self.service.alive():
                    raise RuntimeError(f"redis-server did not answer on {port}; see {workdir / 'redis.log'}") from exc
                time.sleep(0.1)
        self.version = self.client.info("server")["redis_version"]

    def dbsize(self, db: int) -> int:
        return int(self.client.info("keyspace").get(f"db{db}", {}).get("keys", 0))

    def runner_args(self, system: str) -> list[str]:
        """Where a materialize runner writes: ours DB 0 under ``OURS_PREFIX``, Feast DB 1."""
        if system == "ours":
            return ["--redis-url", f"{self.url}/{OURS_DB}", "--prefix", OURS_PREFIX]
        return ["--redis", f"127.0.0.1:{self.port},db={FEAST_DB}"]

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.service.proc.pid)

    def flushall(self) -> None:
        self.client.flushall()

    def stop(self) -> None:
        try:
            self.client.shutdown(nosave=True)
        except Exception:  # noqa: BLE001 - it closes the connection as it goes
            pass
        self.service.stop()


def ensure_feast_redis(feast_python: Path) -> None:
    if subprocess.run([str(feast_python), "-c", "import redis, feast.infra.online_stores.redis"],
                      capture_output=True).returncode == 0:
        return
    print(f"installing {FEAST_REDIS_REQ} into Feast's venv ...", flush=True)
    subprocess.run([str(feast_python), "-m", "pip", "install", "-q", FEAST_REDIS_REQ], check=True)


# ---------------------------------------------------------------------------------------------------
# materialization (children under the export benchmark's guard)

def run_materialize(system: str, views: dict[str, Path], repo: Path, project: str, start: datetime,
                    end: datetime, redis: RedisServer, feast_python: Path, run_dir: Path, guard: dict,
                    tag: str, profile: Path | None = None) -> dict:
    metrics = run_dir / f"{tag}.json"
    metrics.unlink(missing_ok=True)
    view_args = [a for name, path in views.items() for a in ("--view", f"{name}={path}")]
    common = ["--repo", str(repo), *view_args, "--project", project, "--start", start.isoformat(),
              "--end", end.isoformat(), "--metrics", str(metrics)]
    # ``redis``: anything with ``runner_args(system)`` and ``cpu_seconds()`` (a RedisServer here; the
    # cluster benchmark passes its three-master cluster).
    if system == "ours":
        cmd = [sys.executable, str(RUNNERS / "online_ours.py"), *common, *redis.runner_args("ours")]
        if profile:
            cmd += ["--profile", str(profile)]
    else:
        cmd = [str(feast_python), str(RUNNERS / "online_feast.py"), *common, *redis.runner_args("feast")]
    redis_cpu0 = redis.cpu_seconds()
    child = run_child(cmd, run_dir / f"{tag}.log", guard["timeout"], guard["rss_limit_mb"],
                      guard["min_available_mb"])
    rec = json.loads(metrics.read_text()) if metrics.exists() else {"ok": False}
    rec["redis_cpu_seconds"] = redis.cpu_seconds() - redis_cpu0  # the whole child's life
    rec.update(process_seconds=child["process_seconds"], process_peak_rss_mb=child["process_peak_rss_mb"],
               killed=child["killed"], exit_code=child["exit_code"])
    if not rec.get("ok") and not rec.get("error"):
        rec["error"] = (f"killed by the benchmark ({child['killed']['reason']})" if child["killed"]
                        else f"exit {child['exit_code']}, no metrics; see {run_dir / (tag + '.log')}")
    return rec


def phase_materialize(args, redis: RedisServer, feast_python: Path, work: Path, guard: dict) -> dict:
    print("\n== materialize: distinct drivers x 10 features into Redis ==", flush=True)
    now = now_utc()
    start, end = now - timedelta(days=3), now + timedelta(minutes=5)
    sizes = {"ours": args.entities, "feast": args.feast_entities or args.entities}
    files = {}
    for n in sorted(set(sizes.values())):
        files[n] = oc.distinct_table(work / f"distinct_{n}.parquet", n, now)
    run_dir = work / "materialize"
    run_dir.mkdir(parents=True, exist_ok=True)
    out: dict = {"entities": sizes, "interval": [start.isoformat(), end.isoformat()], "runs": {}}
    tries = []
    for i in range(max(args.repeat, 1)):
        redis.flushall()
        profile = RESULTS / f"profile-ours-materialize-{args.stamp}.txt" if args.profile_ours and i == 0 else None
        rec = run_materialize("ours", {oc.HOURLY_VIEW: files[sizes["ours"]]}, work / "mat_ours_repo", "mat",
                              start, end, redis, feast_python, run_dir, guard, f"ours-{i}", profile)
        rec["keys_in_redis"] = redis.dbsize(OURS_DB)
        rec["loadavg"] = loadavg()
        tries.append(rec)
        shown = f"{rec['seconds']:.2f} s" if rec.get("ok") else f"FAILED: {rec.get('error')}"
        print(f"  ours  #{i + 1}: {shown}  ({rec['keys_in_redis']:,d} keys; redis-server used "
              f"{rec['redis_cpu_seconds']:.1f} s of CPU)"
              + (" [pyinstrument on: not counted]" if profile else ""), flush=True)
        if not rec.get("ok"):
            break
    timed = [t for t in tries if t.get("ok")]
    if args.profile_ours and len(timed) > 1:
        timed = timed[1:]  # the profiled run is slower
    ours = dict(tries[-1])
    if timed:
        secs = sorted(t["seconds"] for t in timed)
        ours["seconds_all"] = [t["seconds"] for t in timed]
        ours["seconds"] = secs[len(secs) // 2]
        ours["rows_per_s"] = sizes["ours"] / ours["seconds"]
    out["runs"]["ours"] = ours
    if not args.skip_feast_materialize:
        redis.flushall()
        print(f"  feast ({sizes['feast']:,d} drivers, once) ...", end="", flush=True)
        rec = run_materialize("feast", {oc.HOURLY_VIEW: files[sizes["feast"]]}, work / "mat_feast_repo", "mat",
                              start, end, redis, feast_python, run_dir, guard, "feast")
        rec["keys_in_redis"] = redis.dbsize(FEAST_DB)
        rec["loadavg"] = loadavg()
        if rec.get("ok"):
            rec["rows_per_s"] = sizes["feast"] / rec["seconds"]
            print(f" {rec['seconds']:.1f} s ({rec['keys_in_redis']:,d} keys; redis-server used "
                  f"{rec['redis_cpu_seconds']:.1f} s of CPU)", flush=True)
        else:
            print(f" FAILED: {rec.get('error')}", flush=True)
        out["runs"]["feast"] = rec
    out["floor"] = run_materialize_floor(redis, files[sizes["ours"]], args)
    redis.flushall()
    return out


def run_materialize_floor(redis: RedisServer, parquet: Path, args) -> dict:
    """The hand-written floor: the same rows, pre-encoded, as pipelined ``SET key row PXAT t`` over a
    raw socket (``runners/materialize_floor.py``): what storing them as per-key expiring strings costs
    Redis itself."""
    redis.flushall()
    cmd = [sys.executable, str(RUNNERS / "materialize_floor.py"), "--redis-url", f"{redis.url}/{OURS_DB}",
           "--parquet", str(parquet)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode:
        return {"ok": False, "error": proc.stderr[-1000:]}
    rec = {"ok": True, **json.loads(proc.stdout.strip().splitlines()[-1])}
    rec["keys_in_redis"] = redis.dbsize(OURS_DB)
    print(f"  floor (pipelined SET PXAT of pre-encoded rows): {rec['seconds']:.2f} s, {rec['rows_per_s']:,.0f} "
          f"rows/s; redis-server used {rec['redis_cpu_seconds']:.1f} s of CPU", flush=True)
    return rec


# ---------------------------------------------------------------------------------------------------
# serving

WRK_LUA = r"""
local n_entities = %(n)d
local features = '%(features)s'
local lo, hi = %(lo)d, %(hi)d
local threads = 0
setup = function(thread) threads = threads + 1; thread:set("seed", %(seed)d + threads) end
init = function(args) math.randomseed(seed or 1) end
request = function()
  local ids = {}
  for i = 1, n_entities do ids[i] = math.random(lo, hi) end
  return wrk.format("POST", "/get-online-features", {["Content-Type"] = "application/json"},
    '{"features":' .. features .. ',"entities":{"driver_id":[' .. table.concat(ids, ",") .. ']}}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"err_connect":%%d,' ..
    '"err_read":%%d,"err_write":%%d,"err_status":%%d,"err_timeout":%%d,"p50_us":%%d,"p90_us":%%d,' ..
    '"p99_us":%%d,"p999_us":%%d,"max_us":%%d,"mean_us":%%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"""


def wrk(port: int, lua: Path, connections: int, seconds: float) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s", "-s", str(lua),
           f"http://127.0.0.1:{port}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}")
    r = json.loads(line[8:])
    secs = r["duration_us"] / 1e6
    r.update(rps=r["requests"] / secs, p50_ms=r["p50_us"] / 1e3, p99_ms=r["p99_us"] / 1e3,
             p999_ms=r["p999_us"] / 1e3, mean_ms=r["mean_us"] / 1e3,
             errors=r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"],
             command=" ".join(cmd))
    return r


def post(port: int, body: dict, timeout: float = 30.0) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/get-online-features", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def wait_healthy(svc: Service, port: int, timeout: float = 90.0) -> float:
    t0 = time.monotonic()
    body = {"features": oc.features_1x10()[:1], "entities": {"driver_id": [oc.FIRST_DRIVER]}}
    while time.monotonic() - t0 < timeout:
        if not svc.alive():
            raise RuntimeError(f"{svc.name} exited ({svc.proc.returncode}); see {svc.log}")
        try:
            if post(port, body, timeout=2)[0] == 200:
                return time.monotonic() - t0
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{svc.name} did not answer within {timeout:g} s; see {svc.log}")


def columns(resp: dict) -> dict[str, dict]:
    names = resp["metadata"]["feature_names"]
    return {n: r for n, r in zip(names, resp["results"])}


def compare(ours_port: int, feast_port: int, sample: int, seed: int) -> dict:
    """Both servers' answers for ``sample`` random drivers (plus a few unknown ids), 15 features, value by
    value (float32 features compared as float32, the rest exactly), and statuses and event times."""
    import numpy as np

    rng = random.Random(seed)
    ids = rng.sample(range(oc.FIRST_DRIVER, oc.LAST_DRIVER + 1), sample) + [1, 2, 999, 10**9]
    float32 = {n for v in (oc.HOURLY_VIEW, oc.DAILY_VIEW) for n, t in oc.VIEW_FEATURES[v] if str(t) == "float"}
    names = [r.split(":", 1)[1] for r in oc.features_100x15()]
    res: Counter = Counter()
    examples: list = []
    for i in range(0, len(ids), 100):
        batch = ids[i:i + 100]
        body = {"features": oc.features_100x15(), "entities": {"driver_id": batch}}
        (so, o), (sf, f) = post(ours_port, body), post(feast_port, body)
        if so != 200 or sf != 200:
            raise RuntimeError(f"correctness sample: HTTP {so} (ours) / {sf} (feast)")
        co, cf = columns(o), columns(f)
        for name in names:
            for j, d in enumerate(batch):
                vo, vf = co[name]["values"][j], cf[name]["values"][j]
                res["values"] += 1
                if vo is None or vf is None:
                    same = vo is None and vf is None
                elif name in float32:
                    same = np.float32(vo) == np.float32(vf)
                else:
                    same = vo == vf
                if not same:
                    res["value_mismatches"] += 1
                    if len(examples) < 5:
                        examples.append({"driver_id": d, "feature": name, "ours": vo, "feast": vf})
                if vo is None and vf is None:
                    res["both_null"] += 1
                st_o, st_f = co[name]["statuses"][j], cf[name]["statuses"][j]
                if st_o != st_f:
                    res[f"status ours={st_o} feast={st_f}"] += 1
                if vo is not None and co[name]["event_timestamps"][j] != cf[name]["event_timestamps"][j]:
                    res["event_timestamp_mismatches"] += 1
    out = dict(res)
    out["entities"] = len(ids)
    out["examples"] = examples
    out["ok"] = res["value_mismatches"] == 0 and res["event_timestamp_mismatches"] == 0
    return out


def start_server(system: str, name: str, workers: int, repo: Path, port: int, feast_python: Path, run_dir: Path,
                 guard: dict) -> Service:
    """One feature server (``system`` ours or feast) on ``port`` for the repo a materialize runner wrote;
    not waited for (``wait_healthy``)."""
    if system == "ours":
        return Service(f"{name}(w{workers})", [
            str(Path(sys.executable).parent / "featurestore"), "--repo", str(repo), "serve", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--log-level", "warning"],
            run_dir / f"server-{name}-w{workers}.log", ROOT, guard)
    # Feast's defaults restart each gunicorn worker after ~1,000 requests (--max-requests 1000), which
    # stalls a run for seconds; 0 turns that off. Access log off, as ours.
    return Service(f"{name}(w{workers})", [
        str(feast_python.parent / "feast"), "serve", "-h", "127.0.0.1", "-p", str(port),
        "--workers", str(workers), "--no-access-log", "--max-requests", "0"],
        run_dir / f"server-{name}-w{workers}.log", repo, guard)


def start_servers(workers: int, ours_repo: Path, feast_repo: Path, feast_python: Path, run_dir: Path,
                  guard: dict) -> dict:
    ports = {"ours": free_port(56410), "feast": None}
    ports["feast"] = free_port(ports["ours"] + 1)
    ours = start_server("ours", "ours", workers, ours_repo, ports["ours"], feast_python, run_dir, guard)
    feast = start_server("feast", "feast", workers, feast_repo, ports["feast"], feast_python, run_dir, guard)
    try:
        startup = {"ours": wait_healthy(ours, ports["ours"]), "feast": wait_healthy(feast, ports["feast"])}
    except BaseException:
        ours.stop()
        feast.stop()
        raise
    return {"ports": ports, "services": {"ours": ours, "feast": feast}, "startup_seconds": startup}


def load_phases(port: int, run_dir: Path, label: str, args) -> dict:
    out = {}
    for name, n, feats, conns in PHASES:
        lua = run_dir / f"wrk-{name.replace(' ', '-')}.lua"
        lua.write_text(WRK_LUA % {"n": n, "features": json.dumps(feats), "lo": oc.FIRST_DRIVER,
                                  "hi": oc.LAST_DRIVER, "seed": 7})
        wrk(port, lua, conns, args.warmup)  # warm-up, not counted
        r = wrk(port, lua, conns, args.duration)
        r["loadavg"] = loadavg()
        out[name] = r
        print(f"    {label:10s} {name:10s} {r['rps']:9,.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
              f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}", flush=True)
    return out


def run_floor(redis: RedisServer, args) -> dict:
    out = {}
    for name, n, views in (("1x10", 1, oc.HOURLY_VIEW), ("100x15", 100, f"{oc.HOURLY_VIEW},{oc.DAILY_VIEW}")):
        cmd = [sys.executable, str(RUNNERS / "online_floor.py"), "--redis-url", f"{redis.url}/{OURS_DB}",
               "--prefix", OURS_PREFIX, "--project", "serve", "--views", views, "--entities", str(n),
               "--duration", str(args.duration), "--warmup", str(args.warmup)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + args.warmup + 120)
        if proc.returncode:
            raise RuntimeError(f"floor failed: {proc.stderr[-1000:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = out[name]
        print(f"    {'redis MGET':10s} {name:10s} {r['rps']:9,.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
              f"p99 {r['p99_ms']:7.2f} ms  ({r['keys_per_request']} keys, sequential, no HTTP)", flush=True)
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def profile_server(svc: Service, port: int, redis: RedisServer, run_dir: Path, args) -> dict:
    """py-spy (``--gil``: only the thread holding the GIL, i.e. where the server's Python CPU goes) on our
    one-worker server while wrk drives each concurrent phase; plus the CPU each process used meanwhile."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        return {"error": "py-spy not found: pip install py-spy (into .venv)"}
    out = {}
    pid = max(svc.group_pids())  # with one worker the server is the group's only process
    for name, _n, _feats, conns in PHASES[1:]:
        lua = run_dir / f"wrk-{name.replace(' ', '-')}.lua"
        raw = run_dir / f"pyspy-{name.replace(' ', '-')}.txt"
        spy = subprocess.Popen([pyspy, "record", "--pid", str(pid), "--format", "raw", "--output", str(raw),
                                "--duration", str(int(args.duration)), "--rate", "250", "--gil", "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        time.sleep(1.0)
        cpu0 = {"server": _cpu_seconds(pid), "redis": _cpu_seconds(redis.service.proc.pid)}
        busy0, t0 = _machine_busy(), time.perf_counter()
        r = wrk(port, lua, conns, args.duration - 2)
        wall = time.perf_counter() - t0
        busy1 = _machine_busy()
        cpu = {k: round((_cpu_seconds(p) - cpu0[k]) / wall, 3) for k, p in
               (("server", pid), ("redis", redis.service.proc.pid))}
        spy.wait(timeout=args.duration + 60)
        out[name] = summarize_stacks(raw) if raw.exists() else {"error": "py-spy wrote nothing"}
        out[name].update(rps_under_profiler=round(r["rps"]), cores_used=cpu,
                         machine_busy=round((busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1), 3))
        dest = RESULTS / f"profile-ours-serve-{name.replace(' ', '-')}-{args.stamp}.txt"
        if raw.exists():
            shutil.copy(raw, dest)
            out[name]["collapsed_stacks"] = str(dest)
        print(f"    profiled {name}: {r['rps']:,.0f} req/s under py-spy; server used {cpu['server']:.2f} cores, "
              f"redis {cpu['redis']:.2f}, machine {out[name]['machine_busy']:.0%} busy", flush=True)
    return out


def summarize_stacks(path: Path, top: int = 25) -> dict:
    """From py-spy's collapsed stacks: the share of samples where each function is on the stack
    (inclusive) and on top (self)."""
    total = 0
    inclusive: Counter = Counter()
    own: Counter = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    pct = lambda c: [(f, round(100.0 * k / total, 1)) for f, k in c.most_common(top)]  # noqa: E731
    return {"samples": total, "inclusive_pct": pct(inclusive), "self_pct": pct(own)}


def phase_serve(args, redis: RedisServer, feast_python: Path, work: Path, guard: dict) -> dict:
    print("\n== serve: POST /get-online-features ==", flush=True)
    now = now_utc()
    start, end = now - timedelta(days=10), now + timedelta(minutes=5)
    redis.flushall()
    views = oc.serving_tables(work / "serve_data", now)
    run_dir = work / "serve"
    run_dir.mkdir(parents=True, exist_ok=True)
    out: dict = {"setup": {}, "by_workers": {}, "correctness": {}}
    repos = {"ours": work / "serve_ours_repo", "feast": work / "serve_feast_repo"}
    for system in ("ours", "feast"):
        rec = run_materialize(system, views, repos[system], "serve", start, end, redis, feast_python, run_dir,
                              guard, f"materialize-{system}")
        if not rec.get("ok"):
            raise RuntimeError(f"{system} could not materialize the serving data: {rec.get('error')}")
        rec["keys_in_redis"] = redis.dbsize(OURS_DB if system == "ours" else FEAST_DB)
        out["setup"][system] = rec
        print(f"  {system} materialized the serving data in {rec['seconds']:.1f} s "
              f"({rec['keys_in_redis']:,d} keys)", flush=True)
    for w in args.workers:
        print(f"  workers={w}: both servers up", flush=True)
        srv = start_servers(w, repos["ours"], repos["feast"], feast_python, run_dir, guard)
        try:
            rec: dict = {"startup_seconds": srv["startup_seconds"], "ports": srv["ports"]}
            rec["correctness_before"] = compare(srv["ports"]["ours"], srv["ports"]["feast"], args.sample, seed=w)
            for system in ("ours", "feast"):
                rec[system] = load_phases(srv["ports"][system], run_dir, f"{system}(w{w})", args)
            rec["correctness_after"] = compare(srv["ports"]["ours"], srv["ports"]["feast"], args.sample,
                                               seed=100 + w)
            for when in ("correctness_before", "correctness_after"):
                c = rec[when]
                print(f"    {when.split('_')[1]:6s} check: {c['values']:,d} values of {c['entities']} drivers, "
                      f"{c.get('value_mismatches', 0)} value mismatches, "
                      f"{c.get('event_timestamp_mismatches', 0)} event-time mismatches; status differences: "
                      + (", ".join(f"{k[7:]} x{v}" for k, v in c.items() if k.startswith("status ")) or "none"),
                      flush=True)
            if args.profile_ours and w == 1:
                rec["profile_ours"] = profile_server(srv["services"]["ours"], srv["ports"]["ours"], redis, run_dir,
                                                     args)
            for system, svc in srv["services"].items():
                if svc.killed:
                    rec[f"{system}_killed"] = svc.killed
        finally:
            for svc in srv["services"].values():
                svc.stop()
        out["by_workers"][str(w)] = rec
    print("  floor (redis-py MGET on our keys):", flush=True)
    out["floor"] = run_floor(redis, args)
    redis.flushall()
    return out


# ---------------------------------------------------------------------------------------------------
# report

def best(serve: dict, system: str, phase: str, key: str, lower_is_better: bool = False) -> tuple[float, str]:
    cands = [(rec[system][phase][key], w) for w, rec in serve["by_workers"].items()
             if system in rec and rec[system][phase]["errors"] == 0]
    if not cands:
        return None, None
    v, w = (min if lower_is_better else max)(cands)
    return v, w


def ratios(report: dict) -> list[dict]:
    rows = []
    mat = report.get("materialize")
    if mat:
        o, f = mat["runs"].get("ours", {}), mat["runs"].get("feast", {})
        v = o.get("rows_per_s") / f["rows_per_s"] if o.get("rows_per_s") and f.get("rows_per_s") else None
        rows.append({"name": "materialize rows/s, ours / feast", "value": v, "unit": "x",
                     "target": f">= {TARGET_MATERIALIZE_X:g}x", "pass": None if v is None else v >= TARGET_MATERIALIZE_X})
        floor = mat.get("floor", {})
        if floor.get("ok") and f.get("rows_per_s"):
            v = floor["rows_per_s"] / f["rows_per_s"]
            rows.append({"name": "  floor (bare SET PXAT) rows/s / feast", "value": v, "unit": "x",
                         "target": f">= {TARGET_MATERIALIZE_X:g}x", "pass": v >= TARGET_MATERIALIZE_X,
                         "informational": True})
        if floor.get("ok") and o.get("rows_per_s"):
            rows.append({"name": "  ours / floor", "value": o["rows_per_s"] / floor["rows_per_s"], "unit": "x",
                         "target": "-", "pass": None, "informational": True})
    serve = report.get("serve")
    if serve and serve["by_workers"]:
        p99, w = best(serve, "ours", "1x10 seq", "p99_ms", lower_is_better=True)
        rows.append({"name": f"ours 1x10 sequential p99 (w{w})", "value": p99, "unit": "ms",
                     "target": f"<= {TARGET_SEQ_P99_MS:g} ms", "pass": None if p99 is None else p99 <= TARGET_SEQ_P99_MS})
        for phase, target in (("1x10 c8", TARGET_1X10_C8_X), ("100x15 c8", TARGET_100X15_C8_X)):
            o, wo = best(serve, "ours", phase, "rps")
            f, wf = best(serve, "feast", phase, "rps")
            v = o / f if o and f else None
            rows.append({"name": f"{phase} req/s, ours (w{wo}) / feast (w{wf})", "value": v, "unit": "x",
                         "target": f">= {target:g}x", "pass": None if v is None else v >= target})
            # Like with like: both servers at the same worker count (each worker count tried).
            for w, rec in serve["by_workers"].items():
                o_w, f_w = rec.get("ours", {}).get(phase), rec.get("feast", {}).get(phase)
                if not o_w or not f_w or o_w["errors"] or f_w["errors"]:
                    continue
                v = o_w["rps"] / f_w["rps"]
                rows.append({"name": f"  {phase} req/s at equal workers w{w}", "value": v, "unit": "x",
                             "target": f">= {target:g}x", "pass": v >= target, "informational": True})
        checks = [rec[k] for rec in serve["by_workers"].values() for k in ("correctness_before", "correctness_after")]
        rows.append({"name": "same values from both servers", "value": sum(c.get("value_mismatches", 0) for c in checks),
                     "unit": " mismatches", "target": "0", "pass": all(c["ok"] for c in checks)})
    return rows


def print_report(report: dict) -> None:
    mat = report.get("materialize")
    if mat:
        print("\n== materialize into Redis (distinct drivers x 10 features) ==")
        print(f"{'system':8s} {'drivers':>10s} {'seconds':>9s} {'rows/s':>11s} {'keys':>10s} {'peak RSS MB':>12s}")
        for system, r in mat["runs"].items():
            if r.get("ok"):
                print(f"{system:8s} {mat['entities'][system]:>10,d} {r['seconds']:>9.2f} {r['rows_per_s']:>11,.0f} "
                      f"{r['keys_in_redis']:>10,d} {r.get('peak_rss_mb', 0):>12,.0f}")
            else:
                print(f"{system:8s} FAILED: {r.get('error')}")
        floor = mat.get("floor", {})
        if floor.get("ok"):
            print(f"{'floor':8s} {floor['rows']:>10,d} {floor['seconds']:>9.2f} {floor['rows_per_s']:>11,.0f} "
                  f"{floor['keys_in_redis']:>10,d}   (pre-encoded rows, bare pipelined SET PXAT, no offline write)")
    serve = report.get("serve")
    if serve:
        print("\n== serving (wrk, one thread; req/s and latency) ==")
        print(f"{'system':12s} {'phase':10s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'p99.9 ms':>9s} {'errors':>7s}")
        for w, rec in serve["by_workers"].items():
            for system in ("ours", "feast"):
                for phase, r in rec.get(system, {}).items():
                    print(f"{system + ' w' + w:12s} {phase:10s} {r['rps']:>9,.0f} {r['p50_ms']:>8.2f} "
                          f"{r['p99_ms']:>8.2f} {r['p999_ms']:>9.2f} {r['errors']:>7d}")
        for name, r in serve.get("floor", {}).items():
            print(f"{'redis floor':12s} {name + ' seq':10s} {r['rps']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    print()
    for row in ratios(report):
        v = row["value"]
        shown = "-" if v is None else (f"{v:,.2f}{row['unit']}" if isinstance(v, float) else f"{v}{row['unit']}")
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[row["pass"]]
        print(f"  {row['name']:48s} {shown:>14s}   target {row['target']:>10s}   {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description="Online path benchmark (issue 3, acceptance 7)")
    ap.add_argument("--phases", default="materialize,serve", help="comma-separated: materialize, serve")
    ap.add_argument("--entities", type=int, default=1_000_000, help="distinct drivers materialized by ours")
    ap.add_argument("--feast-entities", type=int, default=None,
                    help="distinct drivers materialized by Feast (default: the same; e.g. 200000 if it is slow)")
    ap.add_argument("--skip-feast-materialize", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="materialize runs of ours (median counts)")
    ap.add_argument("--workers", default="1,2", help="worker counts to try, for both servers")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured load phase")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load before each phase")
    ap.add_argument("--sample", type=int, default=300, help="drivers compared between the two servers")
    ap.add_argument("--redis-port", type=int, default=56400, help="first port tried for the private redis")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds before a materialize child is killed")
    ap.add_argument("--rss-limit-mb", type=float, default=None)
    ap.add_argument("--min-available-mb", type=float, default=1024.0)
    ap.add_argument("--profile-ours", action="store_true",
                    help="pyinstrument on one materialize run of ours; py-spy on our 1-worker server")
    args = ap.parse_args()
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    args.workers = [int(w) for w in args.workers.split(",")]
    args.duration = min(max(args.duration, 2.0), 60.0)  # bounded whatever is asked
    args.warmup = min(max(args.warmup, 1.0), 30.0)
    args.stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if "serve" in phases and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    total_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    guard = {"timeout": args.timeout, "rss_limit_mb": args.rss_limit_mb or 0.85 * total_mb,
             "min_available_mb": args.min_available_mb}
    generate.generate()
    print("Feast venv ...", flush=True)
    feast_python = ensure_feast_venv()
    ensure_feast_redis(feast_python)
    work = generate.DEFAULT_DIR / "online"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict = {"started": args.stamp, "command": " ".join([Path(sys.executable).name, *sys.argv]),
                    "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_start": loadavg()},
                    "settings": {k: v for k, v in vars(args).items() if k != "stamp"}, "guard": guard,
                    "targets": {"materialize_x": TARGET_MATERIALIZE_X, "seq_p99_ms": TARGET_SEQ_P99_MS,
                                "1x10_c8_x": TARGET_1X10_C8_X, "100x15_c8_x": TARGET_100X15_C8_X}}
    redis = RedisServer(free_port(args.redis_port), work, guard)
    report["redis"] = {"port": redis.port, "version": redis.version, "ours": f"db {OURS_DB}, prefix {OURS_PREFIX}",
                       "feast": f"db {FEAST_DB}"}
    print(f"redis-server {redis.version} on 127.0.0.1:{redis.port}", flush=True)
    try:
        if "materialize" in phases:
            report["materialize"] = phase_materialize(args, redis, feast_python, work, guard)
        if "serve" in phases:
            report["serve"] = phase_serve(args, redis, feast_python, work, guard)
    finally:
        redis.stop()
        report["host"]["loadavg_end"] = loadavg()
        report["ratios"] = ratios(report)
        out = RESULTS / f"online-{args.stamp}.json"
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        shutil.copy(out, RESULTS / "online-latest.json")
    print_report(report)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
