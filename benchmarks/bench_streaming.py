"""Streaming freshness and throughput: Kafka -> our stream job (Flink) -> Redis -> /get-online-features.

Issue 5, acceptance 6. Run with the project's venv, from the repository root, with the CI services up
(``bash .ci/services.sh start; eval "$(bash .ci/services.sh env)"``)::

    .venv/bin/python benchmarks/bench_streaming.py                     # 10,000 events/s for 30 s
    .venv/bin/python benchmarks/bench_streaming.py --rate 5000 --duration 20 --phases floor,agg
    .venv/bin/python benchmarks/bench_streaming.py --stream-engine '{"bundle_time_ms": 50}'

It uses the Kafka broker at ``FS_TEST_KAFKA_BOOTSTRAP`` (or ``--bootstrap``) and the Redis server of
``FS_TEST_REDIS_URL`` (or ``--redis-url``) with its own database (``--redis-db``, default 8, flushed at
every phase); without them it starts nothing and says so. It builds a scratch repo (project ``bench``)
with two views on two KafkaSources (one topic each, unique per invocation), applies it, starts
``featurestore serve`` on a free port, then runs each phase in turn with the same producer and prober:

- ``floor`` (the reference: Feast has no stream ingestion, so the floor is a hand-written loop): one
  confluent-kafka consumer (a child process) reads batches, keeps the latest event per user and writes
  them with one pipelined Redis round trip per batch, plain ``SET`` of the row the online store's codec
  encodes (no event-time check, no TTL), under ``user_last``'s keys so the feature server reads them
  like any row. (The brief said HSET; a hash would not be readable by ``/get-online-features``, and a
  pipelined SET costs Redis the same.)
- ``agg``: our stream job for ``user_spend`` (sum and count of ``price`` over 10 minutes), started with
  ``featurestore.streaming.manager.start``.
- ``last``: our stream job for ``user_last`` (the latest ``price`` per user).

Producer: ``--rate`` events/s for ``--duration`` s over ``--users`` users (uniform), each event's time
``ts`` = its produce time (epoch ms), produced in batches on a 10 ms schedule (catching up if a tick is
late, so the rate holds). Probe users (``--probes``, ids above the load's) also get one event every
``--probe-interval`` s whose price is its sequence number 1, 2, 3... Prober: ``--poll-hz`` lookups/s
of all probe users through ``POST /get-online-features``; per probe event, the delay from its produce
time to the end of the first lookup whose answer includes it (``user_last:price`` >= its number;
``user_spend:price_count_10m`` >= its number). The delay therefore includes the HTTP lookup and up to
one poll interval. A probe event not seen by the end of the drain wait counts as infinitely late
("unseen" in the table, null in the JSON), so a system that falls behind cannot look fresh; the JSON
also has the percentiles over the seen events alone (``seen_p50``, ``seen_p99``).

Throughput: the job's ``events`` counter (its parse step, ``stream status``) or the floor's own,
sampled twice a second: events consumed during the producing window / duration, the backlog when the
producer stops, and how long the rest takes to drain; then the consumer group's committed offset
versus the topic's end (the job commits on checkpoints). Before each measured phase the system gets
warm-up events (a separate user) and the phase starts only once they have been consumed and written.

Prints a table (ratios to the floor) and writes JSON to ``--out`` (default
``benchmarks/results/streaming-<time>.json`` and ``streaming-latest.json``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROJECT = "bench"
WARMUP_USER = 999_999_999
WARMUP_EVENTS = 2000
TICK = 0.01

FEATURES = """
from datetime import timedelta
from featurestore import Aggregation, Entity, FeatureView, Field, FileSource, KafkaSource
from featurestore.types import Float64

user = Entity(name="user", join_keys=["user_id"])
history = FileSource(name="clicks_history", path="data/clicks.parquet", timestamp_field="ts")
spend_clicks = KafkaSource(name="spend_clicks", bootstrap_servers="{bootstrap}", topic="{topic_agg}",
                           format="json", timestamp_field="ts", batch_source=history)
last_clicks = KafkaSource(name="last_clicks", bootstrap_servers="{bootstrap}", topic="{topic_last}",
                          format="json", timestamp_field="ts", batch_source=history)
user_spend = FeatureView(name="user_spend", entities=[user], source=spend_clicks, ttl=timedelta(days=1),
                         aggregations=[Aggregation(column="price", function="sum", window=timedelta(minutes=10)),
                                       Aggregation(column="price", function="count", window=timedelta(minutes=10))])
user_last = FeatureView(name="user_last", entities=[user], source=last_clicks, ttl=timedelta(days=1),
                        schema=[Field(name="price", dtype=Float64)])
"""

PHASES = {
    "floor": {"view": "user_last", "feature": "user_last:price", "topic": "floor"},
    "agg": {"view": "user_spend", "feature": "user_spend:price_count_10m", "topic": "agg"},
    "last": {"view": "user_last", "feature": "user_last:price", "topic": "last"},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_db_url(url: str, db: int) -> str:
    base = url.split("?", 1)[0]
    scheme, rest = base.split("://", 1)
    host = rest.split("/", 1)[0]
    return f"{scheme}://{host}/{db}"


# --------------------------------------------------------------------------------------------- floor


def floor_worker(args: argparse.Namespace) -> int:
    """The hand-written reference: consume, keep the latest event per user, pipelined SET to Redis."""
    import pyarrow as pa
    import redis
    from confluent_kafka import Consumer

    from connectors import online_codec as codec

    cfg = json.loads(args.floor_worker)
    client = redis.Redis.from_url(cfg["redis_url"])
    prefix = f"fs:{PROJECT}:{cfg['view']}:".encode()
    consumer = Consumer({"bootstrap.servers": cfg["bootstrap"], "group.id": cfg["group"],
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 10})
    consumer.subscribe([cfg["topic"]])
    status = Path(cfg["status"])
    schema = pa.schema([("user_id", pa.int64()), ("price", pa.float64()),
                        ("event_timestamp", pa.timestamp("ms", tz="UTC"))])
    events = 0
    last_status = 0.0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        msgs = consumer.consume(num_messages=10_000, timeout=0.02)
        latest: dict[int, tuple[float, int]] = {}
        for m in msgs:
            if m.error():
                continue
            e = json.loads(m.value())
            uid, ts = e["user_id"], e["ts"]
            prev = latest.get(uid)
            if prev is None or ts >= prev[1]:
                latest[uid] = (e["price"], ts)
        if latest:
            table = pa.table([list(latest), [v[0] for v in latest.values()], [v[1] for v in latest.values()]],
                             schema=schema)
            batch = codec.WriteBatch(table, ["user_id"], "event_timestamp", None)
            pipe = client.pipeline(transaction=False)
            for key, row in zip(batch.keys.to_pylist(), batch.encoded_rows().to_pylist()):
                pipe.set(prefix + key, row)
            pipe.execute()
            consumer.commit(asynchronous=True)
        events += sum(1 for m in msgs if not m.error())
        now = time.time()
        if now - last_status >= 0.5:
            tmp = status.with_suffix(".tmp")
            tmp.write_text(json.dumps({"events": events, "updated": now}))
            os.replace(tmp, status)
            last_status = now
    status.write_text(json.dumps({"events": events, "updated": time.time()}))
    consumer.close()
    return 0


# ------------------------------------------------------------------------------------------ producer


class Producer:
    """Fixed-rate load plus numbered probe events, each stamped with its produce time."""

    def __init__(self, bootstrap: str, users: int, probes: list[int], probe_interval: float, seed: int = 7):
        from confluent_kafka import Producer as KP

        self.kp = KP({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10_000,
                      "queue.buffering.max.messages": 2_000_000, "acks": 1})
        self.users = users
        self.probes = probes
        self.probe_interval = probe_interval
        self.rnd = random.Random(seed)
        self.prices = [b"%.2f" % (i * 0.25) for i in range(1, 200)]
        self.sent: dict[str, int] = {}

    def warmup(self, topic: str, n: int) -> None:
        ts = int(time.time() * 1000)
        for i in range(n):
            self.kp.produce(topic, b'{"user_id":%d,"price":1.0,"ts":%d}' % (WARMUP_USER, ts))
            if i % 1000 == 999:
                self.kp.poll(0)
        self.kp.flush(30)

    def run(self, topic: str, rate: float, duration: float, probe_log: dict[int, list[float]],
            stop: threading.Event) -> dict[str, Any]:
        """Produce for ``duration`` s; ``probe_log[p][k-1]`` = produce time of probe p's k-th event."""
        kp, rnd, users, prices = self.kp, self.rnd, self.users, self.prices
        n_prices = len(prices)
        for p in self.probes:
            probe_log[p] = []
        t0 = time.monotonic()
        wall0 = time.time()
        sent = 0
        next_probe = t0
        late_ticks = 0
        i = 0
        while not stop.is_set():
            target = t0 + i * TICK
            now = time.monotonic()
            if now < target:
                time.sleep(target - now)
            elif now - target > TICK:
                late_ticks += 1
            i += 1
            now = time.monotonic()
            elapsed = min(now - t0, duration)
            due = int(rate * elapsed) - sent
            ts = int(time.time() * 1000)
            for _ in range(due):
                kp.produce(topic, b'{"user_id":%d,"price":%s,"ts":%d}'
                           % (rnd.randrange(users), prices[rnd.randrange(n_prices)], ts))
            sent += due
            if now >= next_probe and now - t0 < duration:
                for p in self.probes:
                    k = len(probe_log[p]) + 1
                    t_wall = time.time()
                    kp.produce(topic, b'{"user_id":%d,"price":%d,"ts":%d}' % (p, k, int(t_wall * 1000)))
                    probe_log[p].append(t_wall)
                next_probe += self.probe_interval
            kp.poll(0)
            if now - t0 >= duration:
                break
        kp.flush(60)
        t_end = time.time()
        probes_sent = sum(len(v) for v in probe_log.values())
        return {"load_events": sent, "probe_events": probes_sent, "events": sent + probes_sent,
                "start": wall0, "end": t_end, "seconds": t_end - wall0, "late_ticks": late_ticks}


# -------------------------------------------------------------------------------------------- prober


class Prober:
    """Polls the feature server for the probe users; records when each probe event is first visible."""

    def __init__(self, port: int, feature: str, probes: list[int], hz: float):
        self.port = port
        self.feature = feature
        self.probes = probes
        self.interval = 1.0 / hz
        self.body = json.dumps({"features": [feature], "entities": {"user_id": probes}}).encode()
        self.seen: dict[int, dict[int, float]] = {p: {} for p in probes}
        self.best = {p: 0 for p in probes}
        self.rtts: list[float] = []
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="prober", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        next_t = time.monotonic()
        while not self.stop.is_set():
            t_send = time.time()
            try:
                conn.request("POST", "/get-online-features", body=self.body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                t_recv = time.time()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
                values = json.loads(data)["results"][1]["values"]
            except Exception as exc:  # noqa: BLE001 - count and reconnect, the run goes on
                self.errors += 1
                if self.errors <= 3:
                    log(f"prober: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                time.sleep(self.interval)
                continue
            self.rtts.append(t_recv - t_send)
            for p, v in zip(self.probes, values):
                k = int(v) if v is not None else 0
                if k > self.best[p]:
                    for seq in range(self.best[p] + 1, k + 1):
                        self.seen[p][seq] = t_recv
                    self.best[p] = k
            next_t += self.interval
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()
        conn.close()

    def all_seen(self, probe_log: dict[int, list[float]]) -> bool:
        return all(self.best[p] >= len(probe_log.get(p, [])) for p in self.probes)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


# -------------------------------------------------------------------------------------------- phases


class Counters:
    """Samples a system's consumed-events counter from its status files."""

    def __init__(self, status_dir: Path):
        self.status_dir = status_dir
        self.samples: list[tuple[float, int, dict[str, Any]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="counters", daemon=True)

    def read(self) -> tuple[float, int, dict[str, Any]]:
        merged: dict[str, Any] = {}
        updated = 0.0
        for f in sorted(self.status_dir.glob("*.json")):
            try:
                data = json.loads(f.read_text())
            except (ValueError, FileNotFoundError):
                continue
            if f.stem in ("parse", "floor"):
                updated = data.get("updated", updated)
            merged.update({k: v for k, v in data.items() if k != "updated"})
        return updated, int(merged.get("events", 0)), merged

    def _loop(self) -> None:
        while not self.stop.is_set():
            sample = self.read()
            if not self.samples or sample[0] != self.samples[-1][0]:
                self.samples.append(sample)
            time.sleep(0.5)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def at(self, t: float) -> float:
        """The counter at wall time ``t``, interpolated between samples (by their ``updated`` times)."""
        pts = [(u, n) for u, n, _ in self.samples if u]
        if not pts:
            return 0.0
        if t <= pts[0][0]:
            return float(pts[0][1])
        for (u0, n0), (u1, n1) in zip(pts, pts[1:]):
            if u0 <= t <= u1:
                return n0 + (n1 - n0) * (t - u0) / (u1 - u0) if u1 > u0 else float(n1)
        return float(pts[-1][1])


def committed_lag(bootstrap: str, group: str, topic: str) -> dict[str, Any]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tp = TopicPartition(topic, 0)
        committed = c.committed([tp], timeout=10)[0].offset
        _, high = c.get_watermark_offsets(tp, timeout=10)
        return {"committed": committed, "end": high, "lag": None if committed < 0 else high - committed}
    finally:
        c.close()


def wait_for(what: str, check, timeout: float, alive=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None:
            alive()
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def profile_job(pid: int, delay: float, seconds: float, out: Path) -> None:
    """py-spy the stream job's main process, where a local (mini-cluster) job runs its Python functions
    (PyFlink's loopback mode), sampling the thread that holds the GIL; writes a summary to ``out``."""
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not Path(spy).exists():
        log("--profile: py-spy not found (`.venv/bin/pip install py-spy`)")
        return
    time.sleep(delay)
    raw = out.with_suffix(".raw")
    RESULTS.mkdir(exist_ok=True)
    proc = subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
                           "--gil", "--nonblocking", "--format", "raw", "-o", str(raw)],
                          capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0 or not raw.exists():
        log(f"--profile: py-spy failed: {proc.stderr[-500:]}")
        return
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        total += int(n)
        own[frames[-1]] = own.get(frames[-1], 0) + int(n)
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + int(n)
    lines = [f"py-spy --gil, {seconds:.0f} s of pid {pid}: {total} samples with the GIL held", "", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in sorted(own.items(), key=lambda x: -x[1])[:25]]
    lines += ["", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in sorted(inclusive.items(), key=lambda x: -x[1])[:60]]
    out.write_text("\n".join(lines) + "\n")
    log(f"profile in {out}")


def run_phase(name: str, ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import redis

    from featurestore.streaming import manager

    spec = PHASES[name]
    store = ctx["store"]
    topic = f"{ctx['run']}-{spec['topic']}"
    redis.Redis.from_url(ctx["redis_url"]).flushdb()
    floor_proc = None
    job_started = False
    result: dict[str, Any] = {"phase": name, "view": spec["view"], "topic": topic}
    try:
        if name == "floor":
            status_dir = Path(ctx["repo"]) / "floor-status"
            status_dir.mkdir(exist_ok=True)
            group = f"{ctx['run']}-floor"
            cfg = {"bootstrap": ctx["bootstrap"], "topic": topic, "group": group, "view": spec["view"],
                   "redis_url": ctx["redis_url"], "status": str(status_dir / "floor.json")}
            floor_proc = subprocess.Popen([sys.executable, __file__, "--floor-worker", json.dumps(cfg)],
                                          cwd=ROOT)

            def alive():
                if floor_proc.poll() is not None:
                    raise RuntimeError(f"the floor consumer exited with {floor_proc.returncode}")
        else:
            status_dir = manager.job_dir(store, spec["view"]) / "status"
            group = f"featurestore.{PROJECT}.{spec['view']}"
            t = time.monotonic()
            log(f"{name}: starting the stream job of {spec['view']}")
            manager.start(store, spec["view"], fresh=True, wait_seconds=0)
            job_started = True
            result["job_start_seconds"] = time.monotonic() - t

            def alive():
                st = manager.status_of(store, spec["view"])
                if not st.running:
                    raise RuntimeError(f"the stream job of {spec['view']} died:\n{st.log}")

        counters = Counters(status_dir)
        producer: Producer = ctx["producer"]
        t = time.monotonic()
        producer.warmup(topic, WARMUP_EVENTS)
        wait_for(f"{name} to consume the warm-up events", lambda: counters.read()[1] >= WARMUP_EVENTS,
                 args.ready_timeout, alive)
        wait_for(f"{name} to write the warm-up user online", lambda: ctx["lookup"](spec["feature"], WARMUP_USER)
                 is not None, 60, alive)
        result["ready_seconds"] = time.monotonic() - t
        log(f"{name}: ready after {result['ready_seconds']:.1f} s; producing {args.rate:.0f} events/s "
            f"for {args.duration:.0f} s")
        time.sleep(1.0)
        base_events = counters.read()[1]
        counters.start()
        prober = Prober(ctx["port"], spec["feature"], ctx["probes"], args.poll_hz)
        prober.start()
        probe_log: dict[int, list[float]] = {}
        stop = threading.Event()
        profiler = None
        if args.profile and name != "floor":
            pid = manager.status_of(store, spec["view"]).pid
            out = RESULTS / f"profile-streaming-{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.txt"
            profiler = threading.Thread(target=profile_job, args=(pid, args.duration / 3, args.profile, out),
                                        daemon=True)
            profiler.start()
            result["profile"] = str(out)
        try:
            prod = producer.run(topic, args.rate, args.duration, probe_log, stop)
            t_prod_end = prod["end"]
            target_total = base_events + prod["events"]
            drained_at = None
            deadline = time.monotonic() + args.drain_timeout
            while time.monotonic() < deadline:
                alive()
                if counters.read()[1] >= target_total and prober.all_seen(probe_log):
                    drained_at = time.time()
                    break
                time.sleep(0.25)
        finally:
            prober.close()
            counters.close()
            if profiler is not None:
                profiler.join(timeout=args.profile + 30)
        final = counters.read()
        consumed_end = counters.at(t_prod_end) - base_events
        start_n = counters.at(prod["start"]) - base_events
        window = prod["seconds"]
        # Steady state: the middle half of the producing window (no ramp-up, no tail).
        a, b = prod["start"] + window / 4, prod["start"] + 3 * window / 4
        mid_rate = (counters.at(b) - counters.at(a)) / (b - a)
        delays, missing = [], 0
        for p, times in probe_log.items():
            for k, t_prod in enumerate(times, start=1):
                seen = prober.seen[p].get(k)
                if seen is None:
                    missing += 1
                else:
                    delays.append(seen - t_prod)
        everything = delays + [float("inf")] * missing
        result.update({
            "produced": prod, "produced_rate": prod["events"] / window,
            "consumed_in_window": consumed_end - start_n,
            "consumed_rate": (consumed_end - start_n) / window,
            "steady_rate": mid_rate,
            "backlog_at_producer_end": prod["events"] - consumed_end,
            "drain_seconds": None if drained_at is None else max(0.0, drained_at - t_prod_end),
            "consumed_total": final[1] - base_events,
            "counters": final[2],
            # Over every probe event; one never seen within the drain timeout counts as infinitely late
            # (null here, "unseen" in the table), so a job that falls behind cannot look fresh.
            "freshness": {"n": len(delays), "missing": missing, "p50": pct(everything, 50), "p90": pct(everything, 90),
                          "p99": pct(everything, 99), "max": max(everything) if everything else None,
                          "seen_p50": pct(delays, 50), "seen_p99": pct(delays, 99),
                          "mean_seen": sum(delays) / len(delays) if delays else None},
            "lookup_rtt": {"n": len(prober.rtts), "p50": pct(prober.rtts, 50), "p99": pct(prober.rtts, 99)},
            "prober_errors": prober.errors,
        })
        # Kept up: at most one second of input still unconsumed when the producer stopped, and the rest
        # (with every probe event) readable within the drain wait.
        kept_up = result["backlog_at_producer_end"] <= result["produced_rate"] * 1.0 and drained_at is not None
        result["kept_up"] = kept_up
        if name != "floor":
            time.sleep(max(0.0, args.commit_wait))
        result["committed"] = committed_lag(ctx["bootstrap"], group, topic)
        return result
    finally:
        if floor_proc is not None and floor_proc.poll() is None:
            floor_proc.send_signal(signal.SIGTERM)
            try:
                floor_proc.wait(10)
            except subprocess.TimeoutExpired:
                floor_proc.kill()
                floor_proc.wait()
        if job_started:
            manager.stop(store, spec["view"], timeout=20)


# ---------------------------------------------------------------------------------------------- main


def fmt(v: Any, spec: str = ".0f", unit: str = "") -> str:
    if isinstance(v, float) and math.isinf(v):
        return "unseen"
    return "-" if v is None else f"{v:{spec}}{unit}"


def ratio_of(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "-"
    return "inf" if math.isinf(a) else f"{a / b:.1f}"


def table(results: list[dict[str, Any]]) -> str:
    floor = next((r for r in results if r["phase"] == "floor" and "error" not in r), None)
    rows = [("system", "produced/s", "consumed/s", "steady/s", "backlog@end", "drain s", "p50 ms", "p99 ms",
             "max ms", "probes seen", "kept up", "vs floor (rate, p50, p99)")]
    for r in results:
        if "error" in r:
            rows.append((r["phase"], "error: " + r["error"][:80], *[""] * 10))
            continue
        f = r["freshness"]
        ratio = ""
        if floor is not None and r is not floor:
            fr = floor["freshness"]
            ratio = (f"{r['consumed_rate'] / floor['consumed_rate']:.2f}x, "
                     f"{ratio_of(f['p50'], fr['p50'])}x, {ratio_of(f['p99'], fr['p99'])}x")
        rows.append((f"{r['phase']} ({r['view']})", fmt(r["produced_rate"]), fmt(r["consumed_rate"]),
                     fmt(r["steady_rate"]), fmt(r["backlog_at_producer_end"]), fmt(r["drain_seconds"], ".1f"),
                     fmt(f["p50"] and f["p50"] * 1000), fmt(f["p99"] and f["p99"] * 1000),
                     fmt(f["max"] and f["max"] * 1000), f"{f['n']}/{f['n'] + f['missing']}",
                     "yes" if r["kept_up"] else "NO", ratio))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=10_000, help="load events per second (default 10000)")
    ap.add_argument("--duration", type=float, default=30, help="seconds of load per phase (default 30)")
    ap.add_argument("--users", type=int, default=100_000, help="distinct load users (default 100000)")
    ap.add_argument("--probes", type=int, default=4, help="probe users (default 4)")
    ap.add_argument("--probe-interval", type=float, default=0.1, help="seconds between a probe's events")
    ap.add_argument("--poll-hz", type=float, default=20, help="prober lookups per second (default 20)")
    ap.add_argument("--phases", default="floor,agg,last", help="comma-separated: floor, agg, last")
    ap.add_argument("--stream-engine", default="{}", help="JSON merged into featurestore.yaml's stream_engine")
    ap.add_argument("--bootstrap", default=os.environ.get("FS_TEST_KAFKA_BOOTSTRAP", ""))
    ap.add_argument("--redis-url", default=os.environ.get("FS_TEST_REDIS_URL", ""))
    ap.add_argument("--redis-db", type=int, default=8, help="Redis database for the run (flushed; default 8)")
    ap.add_argument("--ready-timeout", type=float, default=600, help="seconds to wait for a job's first events")
    ap.add_argument("--drain-timeout", type=float, default=60, help="seconds to wait after the producer stops")
    ap.add_argument("--commit-wait", type=float, default=6, help="seconds before reading committed offsets")
    ap.add_argument("--out", help="JSON results file (default benchmarks/results/streaming-<time>.json)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch repo (its path is printed)")
    ap.add_argument("--profile", type=float, default=0, metavar="SECONDS",
                    help="py-spy the job's Python process (GIL holder) for SECONDS from a third into the load")
    ap.add_argument("--floor-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.floor_worker:
        return floor_worker(args)

    missing = [n for n, v in (("FS_TEST_KAFKA_BOOTSTRAP/--bootstrap", args.bootstrap),
                              ("FS_TEST_REDIS_URL/--redis-url", args.redis_url)) if not v]
    if missing:
        print(f"bench_streaming: {', '.join(missing)} not set; this benchmark starts nothing itself. Run\n"
              f'  bash .ci/services.sh start; eval "$(bash .ci/services.sh env)"', file=sys.stderr)
        return 2
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        ap.error(f"unknown phases {unknown}; choose from {list(PHASES)}")

    import pyarrow as pa
    import pyarrow.parquet as pq
    import redis

    from connectors.kafka import KafkaClient, KafkaConfig
    from featurestore import FeatureStore
    from featurestore.streaming import env as flink_env

    run = f"bench-stream-{datetime.now(timezone.utc).strftime('%H%M%S')}-{random.randrange(16**6):06x}"
    repo = Path(tempfile.mkdtemp(prefix="bench_streaming_"))
    redis_url = redis_db_url(args.redis_url, args.redis_db)
    redis.Redis.from_url(redis_url).ping()
    kafka = KafkaClient(KafkaConfig(bootstrap_servers=args.bootstrap, timeout_seconds=30))
    topics = [f"{run}-{PHASES[p]['topic']}" for p in phases]
    stream_engine = json.loads(args.stream_engine)
    server = None
    results: list[dict[str, Any]] = []
    started = time.time()
    try:
        (repo / "data").mkdir()
        (repo / "features.py").write_text(FEATURES.format(bootstrap=args.bootstrap, topic_agg=f"{run}-agg",
                                                          topic_last=f"{run}-last"))
        (repo / "featurestore.yaml").write_text(
            f"project: {PROJECT}\nregistry: sqlite:///data/registry.db\n"
            f"offline_store: {{type: parquet, path: data/offline}}\n"
            f"online_store: {{type: redis, url: '{redis_url}'}}\n"
            f"stream_engine: {json.dumps(stream_engine)}\n")
        pq.write_table(pa.table({"user_id": pa.array([1], pa.int64()), "price": pa.array([1.0]),
                                 "ts": pa.array([datetime(2024, 1, 1, tzinfo=timezone.utc)],
                                                pa.timestamp("us", tz="UTC"))}), repo / "data" / "clicks.parquet")
        store = FeatureStore(repo)
        store.apply()
        for t in topics:
            kafka.create_topic(t, partitions=1)
        if any(p != "floor" for p in phases) and not flink_env.is_ready():
            log("building .venv-flink (first run only, several minutes)")
            flink_env.ensure(verbose=True)

        port = free_port()
        server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "featurestore"), "--repo", str(repo), "serve",
                                   "--port", str(port), "--log-level", "warning"], cwd=repo,
                                  stdout=subprocess.DEVNULL, stderr=open(repo / "server.log", "wb"),
                                  start_new_session=True)

        def lookup(feature: str, user: int) -> Any:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("POST", "/get-online-features", headers={"Content-Type": "application/json"},
                             body=json.dumps({"features": [feature], "entities": {"user_id": [user]}}))
                resp = conn.getresponse()
                data = resp.read()
                return json.loads(data)["results"][1]["values"][0] if resp.status == 200 else None
            finally:
                conn.close()

        def health() -> bool:
            if server.poll() is not None:
                raise RuntimeError(f"featurestore serve exited: {(repo / 'server.log').read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                return conn.getresponse().status == 200
            except OSError:
                return False

        wait_for("the feature server", health, 60)
        probes = [args.users + 1000 + i for i in range(args.probes)]
        ctx = {"store": store, "repo": repo, "run": run, "bootstrap": args.bootstrap, "redis_url": redis_url,
               "port": port, "probes": probes, "lookup": lookup,
               "producer": Producer(args.bootstrap, args.users, probes, args.probe_interval)}
        for phase in phases:
            try:
                results.append(run_phase(phase, ctx, args))
                r = results[-1]
                log(f"{phase}: consumed {r['consumed_rate']:.0f}/s of {r['produced_rate']:.0f}/s, "
                    f"freshness p50 {fmt(r['freshness']['p50'] and r['freshness']['p50'] * 1000)} ms "
                    f"p99 {fmt(r['freshness']['p99'] and r['freshness']['p99'] * 1000)} ms")
            except Exception as exc:  # noqa: BLE001 - report the phase's failure, run the others
                log(f"{phase} failed: {exc}")
                results.append({"phase": phase, "view": PHASES[phase]["view"], "error": str(exc)})
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        for t in topics:
            for name in (t, f"{t}.dead-letter"):
                try:
                    kafka.delete_topic(name)
                except Exception:  # noqa: BLE001 - best effort cleanup
                    pass
        kafka.close()
        try:
            redis.Redis.from_url(redis_url).flushdb()
        except Exception:  # noqa: BLE001
            pass
        if args.keep:
            log(f"scratch repo kept at {repo}")
        else:
            shutil.rmtree(repo, ignore_errors=True)

    report = {
        "benchmark": "streaming", "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "params": {"rate": args.rate, "duration": args.duration, "users": args.users, "probes": args.probes,
                   "probe_interval": args.probe_interval, "poll_hz": args.poll_hz, "stream_engine": stream_engine},
        "target": {"events_per_second": 10_000, "p99_freshness_seconds": 1.0},
        "results": results,
    }
    print(table(results))

    def finite(obj: Any) -> Any:
        if isinstance(obj, float) and math.isinf(obj):
            return None
        if isinstance(obj, dict):
            return {k: finite(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [finite(v) for v in obj]
        return obj

    report = finite(report)
    RESULTS.mkdir(exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / f"streaming-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    if not args.out:
        (RESULTS / "streaming-latest.json").write_text(json.dumps(report, indent=1, default=str))
    log(f"results in {out}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
