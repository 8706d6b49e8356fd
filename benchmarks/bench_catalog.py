"""The web catalog at scale (issue 16, acceptance 3): 1,000 views, 200 services and 50 registry
versions in PostgreSQL; every catalog page under 200 ms at p99, and search answering as you type.

Run with the project's venv, with a PostgreSQL server (the tests' one will do):

    . /tmp/env.sh   # or: export FS_TEST_POSTGRES_URL=postgresql+psycopg://user:pw@host:port/db
    .venv/bin/python benchmarks/bench_catalog.py
    .venv/bin/python benchmarks/bench_catalog.py --requests 500 --keep       # keep the repo and database
    .venv/bin/python benchmarks/bench_catalog.py --reuse benchmarks/.work/catalog   # skip generate/apply
    .venv/bin/python benchmarks/bench_catalog.py --profile-apply              # cProfile of the first apply

1. **generate**: a feature repo under ``benchmarks/.work/catalog`` (Python definitions, seeded): 30
   entities, 40 Parquet file sources, 1,000 views (plain, filtered and transformed, windowed
   aggregations; tags, owners, descriptions, field descriptions, checks), 60 on-demand views and 200
   services, in a scratch PostgreSQL database ``fs_bench_catalog_<pid>`` (dropped at the end unless
   ``--keep``).
2. **apply**: ``featurestore apply`` (a child process, as a user runs it) of the repo, then 49 more
   with small edits (descriptions, tags, owners, TTLs; the view ``HISTORY_VIEW`` and the service
   ``HISTORY_SERVICE`` change every time), so the registry holds 50 versions. Each apply is timed.
3. **list**: ``featurestore list views`` (the table, and ``--json``) timed, as a child process.
4. **pages**: ``featurestore serve`` (one worker) against the repo; each catalog page kind of the URL
   scheme (overview, search page, ``search.json`` for each prefix of a name as it is typed, each kind's
   list (``/ui/views``: all 1,000), each object kind's page, history, the diff of versions 1 and 50,
   the whole lineage graph and a neighbourhood)
   requested ``--requests`` times over one keep-alive connection (``http.client``) after a warm-up,
   rotating over several objects; p50/p99 of each against the 200 ms target. A page answered with 404
   is reported as NOT SERVED (the catalog is not there yet), not as a time. ``GET /registry/feature-views/{name}``
   is timed the same way as a reference (what the server answers without the catalog).
5. **after an apply**: ``--after-apply`` times (default 5), the next revision is applied while the server
   runs, then the first overview (which rebuilds the server's catalog index), ``search.json`` and view
   page are timed. Each round adds a registry version (so a ``--reuse`` run sees more than 50).

A table, and JSON in ``benchmarks/results/catalog-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import json
import os
import platform
import pstats
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, urlencode

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
UTC = timezone.utc
TARGET_MS = 200.0
HISTORY_VIEW = "payments_spend_0000"  # changes in every apply: 50 versions
HISTORY_SERVICE = "svc_fraud_000"
TYPED_NAME = "merchant_risk_0423"  # typed letter by letter into search.json
REFERENCE = "(reference) /registry JSON of a view"  # the JSON API the catalog sits beside: not a catalog page

N_ENTITIES, N_SOURCES, N_VIEWS, N_ODFVS, N_SERVICES, N_VERSIONS = 30, 40, 1000, 60, 200, 50
DOMAINS = ["payments", "merchant", "device", "session", "account", "card", "loyalty", "shipping", "support", "ads"]
KINDS = ["spend", "risk", "velocity", "profile", "activity", "quality", "counts", "ratios"]
OWNERS = [f"{team}@example.com" for team in ("risk", "growth", "ml-platform", "payments", "trust", "search",
                                               "ads", "support", "data-eng", "pricing", "logistics", "fraud")]
TEAMS = ["risk", "growth", "platform", "payments", "trust", "search", "ads", "support"]
WORDS = ("recent spend velocity ratio count sum mean max distinct window customer merchant device session "
         "refund chargeback settled declined basket category country currency hourly daily weekly trend "
         "score signal anomaly baseline lifetime rolling").split()
NUMERIC = [f"x{i}" for i in range(12)]
CATEGORIES = ["US", "DE", "FR", "BR", "IN", "JP"]
TS_TYPE = pa.timestamp("us", tz="UTC")


# ---------------------------------------------------------------------------------------------- the repo

def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _key(entity: int) -> str:
    return f"key_{entity:02d}"


def write_data(repo: Path) -> None:
    """One small Parquet file per source: two join keys, event time, 12 numbers, a category, a status."""
    rng = random.Random(7)
    (repo / "data").mkdir(parents=True, exist_ok=True)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for s in range(N_SOURCES):
        n = 50
        cols = {_key(e): pa.array([rng.randrange(1000) for _ in range(n)], pa.int64()) for e in _source_entities(s)}
        cols["ts"] = pa.array([t0 + timedelta(minutes=rng.randrange(100_000)) for _ in range(n)], TS_TYPE)
        for c in NUMERIC:
            cols[c] = pa.array([rng.random() * 100 for _ in range(n)], pa.float64())
        cols["category"] = pa.array([rng.choice(CATEGORIES) for _ in range(n)])
        cols["status"] = pa.array([rng.choice(["settled", "declined"]) for _ in range(n)])
        pq.write_table(pa.table(cols), repo / "data" / f"src_{s:02d}.parquet")


def _source_entities(s: int) -> list[int]:
    return [s % N_ENTITIES, (s * 7 + 3) % N_ENTITIES]


def _view_name(i: int) -> str:
    return f"{DOMAINS[i % len(DOMAINS)]}_{KINDS[(i // len(DOMAINS)) % len(KINDS)]}_{i:04d}"


def _plan(seed: int = 11) -> dict:
    """What the repo declares, independent of the revision: views' shapes, services' members."""
    rng = random.Random(seed)
    views = []
    for i in range(N_VIEWS):
        source = rng.randrange(N_SOURCES)
        entity = _source_entities(source)[rng.randrange(2)]
        shape = ("plain", "filtered", "aggregated")[i % 3]
        columns = rng.sample(NUMERIC, rng.randint(2, 6))
        views.append({"name": _view_name(i), "source": source, "entity": entity, "shape": shape,
                      "columns": columns, "owner": rng.choice(OWNERS), "team": rng.choice(TEAMS),
                      "tier": rng.choice(["gold", "silver", "bronze"]), "pii": rng.random() < 0.2,
                      "description": _sentence(rng, rng.randint(6, 30)),
                      "field_descriptions": [_sentence(rng, 5) for _ in columns],
                      "ttl_hours": rng.choice([6, 24, 48, 24 * 7, 24 * 30]), "check": rng.random() < 0.3})
    views[0]["name"] = HISTORY_VIEW
    views[423]["name"] = TYPED_NAME
    odfvs = [{"name": f"odfv_{i:03d}", "view": views[rng.randrange(N_VIEWS)]["name"]} for i in range(N_ODFVS)]
    services = []
    for i in range(N_SERVICES):
        members = sorted({views[rng.randrange(N_VIEWS)]["name"] for _ in range(rng.randint(3, 15))})
        if rng.random() < 0.3:
            members.append(odfvs[rng.randrange(N_ODFVS)]["name"])
        name = HISTORY_SERVICE if i == 0 else f"svc_{rng.choice(['fraud', 'ranking', 'pricing', 'churn'])}_{i:03d}"
        services.append({"name": name, "members": members, "owner": rng.choice(OWNERS),
                         "description": _sentence(rng, rng.randint(5, 15))})
    return {"views": views, "odfvs": odfvs, "services": services}


def features_py(plan: dict, revision: int) -> str:
    """The repo's definitions at ``revision`` (1..50): each revision after the first edits the history
    view and service and about 20 other objects."""
    rng = random.Random(1000 + revision)
    edited = {HISTORY_VIEW} | {plan["views"][rng.randrange(N_VIEWS)]["name"] for _ in range(20)}
    out = ["from datetime import timedelta",
           "from featurestore import (Aggregation, Check, Entity, FeatureService, FeatureView, Field, FileSource,",
           "                          RequestSource, col, on_demand_feature_view)",
           "from featurestore.types import Bool, Float64, Int64", ""]
    for e in range(N_ENTITIES):
        out.append(f"e{e:02d} = Entity(name='entity_{e:02d}', join_keys=[{_key(e)!r}], "
                   f"description='Entity {e}: {DOMAINS[e % len(DOMAINS)]} identifier', tags={{'domain': {DOMAINS[e % len(DOMAINS)]!r}}})")
    for s in range(N_SOURCES):
        out.append(f"s{s:02d} = FileSource(name='src_{s:02d}', path='data/src_{s:02d}.parquet', timestamp_field='ts', "
                   f"description='Raw {DOMAINS[s % len(DOMAINS)]} events, table {s}')")
    out.append("")
    for i, v in enumerate(plan["views"]):
        bump = revision if v["name"] in edited else 1
        description = v["description"] + (f" Revision {bump}." if bump > 1 else "")
        tags = {"team": v["team"], "tier": v["tier"], **({"pii": "yes"} if v["pii"] else {}),
                **({"rev": str(bump)} if bump > 1 else {})}
        ttl = v["ttl_hours"] + (bump - 1)
        common = (f"name={v['name']!r}, entities=[e{v['entity']:02d}], source=s{v['source']:02d}, "
                  f"ttl=timedelta(hours={ttl}), owner={v['owner']!r}, tags={tags!r}, description={description!r}")
        check = f", checks=[Check(col({v['columns'][0]!r}) >= 0, name='non_negative', on_fail='warn')]" if v["check"] else ""
        if v["shape"] == "plain":
            fields = ", ".join(f"Field({c!r}, Float64, description={d!r})"
                               for c, d in zip(v["columns"], v["field_descriptions"]))
            out.append(f"v{i:04d} = FeatureView({common}, schema=[{fields}]{check})")
        elif v["shape"] == "filtered":
            exprs = [f"(col({v['columns'][0]!r}) * {1 + i % 5}).alias('scaled')",
                     f"(col('category') == {CATEGORIES[i % len(CATEGORIES)]!r}).alias('is_home')",
                     f"(col({v['columns'][1]!r}) + col({v['columns'][0]!r})).cast(Int64).alias('combined')"]
            fields = "Field('scaled', Float64), Field('is_home', Bool), Field('combined', Int64)"
            out.append(f"v{i:04d} = FeatureView({common}, filter=col('status') == 'settled', "
                       f"transform=[{', '.join(exprs)}], schema=[{fields}]{check})")
        else:
            windows = ["timedelta(hours=1)", "timedelta(days=1)", "timedelta(days=7)", "None"]
            aggs = ", ".join(f"Aggregation(column={c!r}, function={f!r}, window={windows[(i + k) % len(windows)]})"
                             for k, (c, f) in enumerate(zip(v["columns"], ["sum", "mean", "max", "count", "min", "sum"])))
            out.append(f"v{i:04d} = FeatureView({common}, filter=col('status') == 'settled', aggregations=[{aggs}]{check})")
    out.append("")
    names = {v["name"]: f"v{i:04d}" for i, v in enumerate(plan["views"])}
    for o in plan["odfvs"]:
        out += [f"@on_demand_feature_view(sources=[{names[o['view']]}, RequestSource(name='req_{o['name']}', "
                f"schema=[Field('amount_now', Float64)])],",
                f"                        schema=[Field('{o['name']}_score', Float64, description='The request against the view')])",
                f"def {o['name']}(inputs):",
                f"    return {{'{o['name']}_score': [float(x or 0) for x in inputs['amount_now']]}}", ""]
        names[o["name"]] = o["name"]
    for n, s in enumerate(plan["services"]):
        bump = revision if s["name"] == HISTORY_SERVICE else 1
        members = [names[m] for m in s["members"]]
        if bump % 2 == 0 and names[plan["views"][1]["name"]] not in members:  # the history service gains a view
            members.append(names[plan["views"][1]["name"]])
        description = s["description"] + (f" Revision {bump}." if bump > 1 else "")
        out.append(f"service_{n:03d} = FeatureService(name={s['name']!r}, features=[{', '.join(members)}], owner={s['owner']!r}, "
                   f"description={description!r}, tags={{'rev': '{bump}'}})")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- helpers

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(repo: Path, *args: str, timeout: float = 1800) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "featurestore.cli", "--repo", str(repo), *args], cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"featurestore {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return elapsed, out


def scratch_database(base_url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(base_url)
    name = f"fs_bench_catalog_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(base_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(make_url(base_url), isolation_level="AUTOCOMMIT")
    for attempt in range(10):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
            break
        except Exception:  # an autovacuum worker on it finishes in moments
            if attempt == 9:
                raise
            time.sleep(0.5)
    admin.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# ---------------------------------------------------------------------------------------------- phases

def build(repo: Path, registry_url: str, profile: bool, results: dict) -> None:
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    write_data(repo)
    (repo / "featurestore.yaml").write_text(
        f"project: catalog_bench\nregistry: {registry_url}\n"
        "offline_store: {type: parquet, path: data/offline}\nonline_store: {type: sqlite, path: data/online.db}\n")
    plan = _plan()
    applies = []
    for revision in range(1, N_VERSIONS + 1):
        (repo / "features.py").write_text(features_py(plan, revision))
        if revision == 1 and profile:
            applies.append(profile_apply(repo, results))
        else:
            seconds, out = _cli(repo, "apply")
            applies.append(seconds)
            if f"Registry version {revision}." not in out.stdout:
                raise SystemExit(f"apply {revision} did not make registry version {revision}:\n{out.stdout[-1500:]}")
        print(f"  apply {revision:2d}/{N_VERSIONS}: {applies[-1]:.2f} s", flush=True)
    results["apply_seconds"] = {"first": applies[0], "later_median": statistics.median(applies[1:]),
                                "later_max": max(applies[1:]), "all": applies}


def profile_apply(repo: Path, results: dict) -> float:
    """The first apply in this process under cProfile; the top of the profile goes to the results."""
    os.chdir(repo)
    sys.path.insert(0, str(ROOT))
    from featurestore import FeatureStore

    profiler = cProfile.Profile()
    start = time.perf_counter()
    with FeatureStore(repo) as store:
        profiler.enable()
        store.apply()
        profiler.disable()
    seconds = time.perf_counter() - start
    path = HERE / "results" / f"catalog-apply-profile-{datetime.now(UTC):%Y%m%dT%H%M%S}.txt"
    path.parent.mkdir(exist_ok=True)
    with path.open("w") as fh:
        pstats.Stats(profiler, stream=fh).sort_stats("cumulative").print_stats(40)
    results["apply_profile"] = str(path)
    os.chdir(ROOT)
    return seconds


def time_list(repo: Path, results: dict) -> None:
    table = [_cli(repo, "list", "views")[0] for _ in range(3)]
    as_json, out = _cli(repo, "list", "views", "--json")
    shown = len(json.loads(out.stdout))
    if shown != N_VIEWS:
        raise SystemExit(f"featurestore list views --json shows {shown} views, not {N_VIEWS}")
    results["list_seconds"] = {"table_median": statistics.median(table), "json": as_json}


def pages(plan: dict) -> list[tuple[str, list[str]]]:
    """(page kind, the paths to rotate over) for every page of the URL scheme."""
    views = [v["name"] for v in plan["views"]]
    sample = views[::97][:10]
    services = [s["name"] for s in plan["services"]][::23][:8]
    odfvs = [o["name"] for o in plan["odfvs"]][::7][:8]
    entities = [f"entity_{e:02d}" for e in range(0, N_ENTITIES, 4)]
    sources = [f"src_{s:02d}" for s in range(0, N_SOURCES, 5)]
    return [
        ("overview", ["/ui"]),
        ("search page (text)", [f"/ui/search?{urlencode({'q': q})}" for q in ("spend", "risk", "merchant", "velocity")]),
        ("search page (filters)", [f"/ui/search?{urlencode({'q': q, 'kind': 'views', 'tag': 'tier=gold', 'owner': o})}"
                                   for q, o in (("spend", OWNERS[0]), ("", OWNERS[1]), ("risk", OWNERS[2]))]),
        ("search page (tag only)", ["/ui/search?tag=pii", "/ui/search?tag=tier%3Dsilver"]),
        *[(f"{kind} list ({count:,})", [f"/ui/{kind}"]) for kind, count in (
            ("entities", N_ENTITIES), ("sources", N_SOURCES), ("views", N_VIEWS), ("on-demand-views", N_ODFVS),
            ("services", N_SERVICES))],
        ("entity page", [f"/ui/entities/{quote(n)}" for n in entities]),
        ("source page", [f"/ui/sources/{quote(n)}" for n in sources]),
        ("view page", [f"/ui/views/{quote(n)}" for n in sample]),
        ("on-demand view page", [f"/ui/on-demand-views/{quote(n)}" for n in odfvs]),
        ("service page", [f"/ui/services/{quote(n)}" for n in services]),
        ("view history (50 versions)", [f"/ui/views/{HISTORY_VIEW}/history"]),
        ("service history (50 versions)", [f"/ui/services/{HISTORY_SERVICE}/history"]),
        ("view diff 1..50", [f"/ui/views/{HISTORY_VIEW}/diff?a=1&b={N_VERSIONS}"]),
        ("service diff 1..50", [f"/ui/services/{HISTORY_SERVICE}/diff?a=1&b={N_VERSIONS}"]),
        ("lineage (whole graph)", ["/ui/lineage"]),
        ("lineage (view neighbourhood)", [f"/ui/lineage/views/{quote(n)}" for n in sample]),
        ("lineage (service neighbourhood)", [f"/ui/lineage/services/{quote(n)}" for n in services]),
        ("search.json as you type", [f"/ui/search.json?{urlencode({'q': TYPED_NAME[:k]})}"
                                     for k in range(1, len(TYPED_NAME) + 1)]),
        (REFERENCE, [f"/registry/feature-views/{quote(n)}" for n in sample]),
    ]


class Server:
    """``featurestore serve`` on a free port (its own process group, stopped by its pid)."""

    def __init__(self, repo: Path, api_key: str | None):
        self.port = _free_port()
        env = _env()
        if api_key:
            env["FEATURESTORE_API_KEYS"] = f"{api_key}:read"
        self.log = open(repo / "serve.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "featurestore.cli", "--repo", str(repo), "serve",
                                      "--port", str(self.port), "--log-level", "warning"], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"featurestore serve did not start:\n{(repo / 'serve.log').read_text()[-3000:]}") from None
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def measure(port: int, paths: list[str], requests: int, warmup: int, headers: dict[str, str]) -> dict:
    """Time ``requests`` GETs rotating over ``paths`` on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    statuses: dict[int, int] = {}
    times, sizes, slowest, first = [], [], ("", 0.0), None
    for n in range(warmup + requests):
        path = paths[n % len(paths)]
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - start) * 1000
        first = elapsed if first is None else first
        if n < warmup:
            if response.status == 404 and n == 0 and all(_status(port, p, headers) == 404 for p in paths[:3]):
                conn.close()
                return {"status": "not served (404)", "paths": paths[:3]}
            continue
        statuses[response.status] = statuses.get(response.status, 0) + 1
        times.append(elapsed)
        sizes.append(len(body))
        if elapsed > slowest[1]:
            slowest = (path, elapsed)
    conn.close()
    ok = statuses.get(200, 0) == requests
    return {"status": "ok" if ok else f"HTTP {statuses}", "requests": requests, "p50_ms": percentile(times, 50),
            "p99_ms": percentile(times, 99), "max_ms": max(times), "slowest": slowest[0],
            "first_ms": first, "median_bytes": int(statistics.median(sizes)), "example": paths[0]}


def _status(port: int, path: str, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def search_answers(port: int, headers: dict[str, str]) -> dict:
    """Whether search.json finds the typed name once it is typed whole (not timed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/ui/search.json?{urlencode({'q': TYPED_NAME})}", headers=headers)
    response = conn.getresponse()
    body = response.read().decode(errors="replace")
    conn.close()
    return {"status": response.status, "finds_typed_name": TYPED_NAME in body}


def run_pages(repo: Path, requests: int, warmup: int, after_apply_rounds: int, results: dict) -> None:
    key = "bench-catalog-key"
    server = Server(repo, key)
    headers = {"X-API-Key": key, "Authorization": f"Bearer {key}"}
    try:
        refused = _status(server.port, "/ui", {})
        results["ui_without_key_status"] = refused
        rows = {}
        for kind, paths in pages(_plan()):
            rows[kind] = measure(server.port, paths, requests, warmup, headers)
            r = rows[kind]
            shown = f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms" if "p99_ms" in r else r["status"]
            print(f"  {kind}: {shown}", flush=True)
        results["pages"] = rows
        results["search_answers"] = search_answers(server.port, headers)
        if after_apply_rounds:
            print("first pages after an apply ...", flush=True)
            results["after_apply"] = after_applies(repo, server.port, headers, after_apply_rounds)
    finally:
        server.stop()


def _registry_version(port: int, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/health", headers=headers)
    version = json.loads(conn.getresponse().read())["registry_version"]
    conn.close()
    return version


def after_applies(repo: Path, port: int, headers: dict[str, str], rounds: int) -> dict:
    """The first catalog pages after an apply (the server rebuilds its index for the new registry
    version): ``rounds`` times, apply the next revision, then time /ui, search.json and a view page."""
    plan, timings = _plan(), {"overview": [], "search.json": [], "view page": []}
    paths = {"overview": "/ui", "search.json": f"/ui/search.json?{urlencode({'q': 'merch'})}",
             "view page": f"/ui/views/{HISTORY_VIEW}"}
    for _ in range(rounds):
        (repo / "features.py").write_text(features_py(plan, _registry_version(port, headers) + 1))
        _cli(repo, "apply")
        for kind, path in paths.items():  # in this order: the overview pays the rebuild
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            start = time.perf_counter()
            conn.request("GET", path, headers=headers)
            status = conn.getresponse()
            status.read()
            timings[kind].append((time.perf_counter() - start) * 1000)
            conn.close()
            if status.status == 404:
                return {"status": "not served (404)"}
    return {kind: {"median_ms": statistics.median(t), "max_ms": max(t)} for kind, t in timings.items()}


def report(results: dict) -> None:
    print("\n== catalog pages: 1,000 views, 200 services, 50 registry versions (PostgreSQL) ==")
    print(f"(one request at a time; 'first' is the first, untimed-for-p99 request of each page kind, the very\n"
          f" first one building the server's catalog index; load average at start {results['load_average_at_start']})")
    print(f"{'page':38} {'requests':>8} {'first ms':>9} {'p50 ms':>8} {'p99 ms':>8} {'target':>7}  result")
    for kind, r in results.get("pages", {}).items():
        if "p99_ms" not in r:
            print(f"{kind:38} {'-':>8} {'-':>9} {'-':>8} {'-':>8} {TARGET_MS:>7.0f}  NOT SERVED (404: {r['paths'][0]})")
            continue
        verdict = "pass" if r["status"] == "ok" and r["p99_ms"] < TARGET_MS else "FAIL"
        verdict = f"({verdict})" if kind == REFERENCE else verdict
        note = "" if r["status"] == "ok" else f" ({r['status']})"
        print(f"{kind:38} {r['requests']:>8} {r['first_ms']:>9.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{TARGET_MS:>7.0f}  {verdict}{note}")
    after = results.get("after_apply")
    if after and "overview" in after:
        for kind, t in after.items():
            verdict = "pass" if t["max_ms"] < TARGET_MS else "FAIL"
            print(f"first {kind} after an apply: median {t['median_ms']:.1f} ms, max {t['max_ms']:.1f} ms "
                  f"(target {TARGET_MS:.0f} ms): {verdict}")
    elif after:
        print(f"first pages after an apply: {after['status']}")
    if "search_answers" in results:
        print(f"search.json finds {TYPED_NAME!r} typed whole: {results['search_answers']}")
    if "ui_without_key_status" in results:
        print(f"/ui without the API key: HTTP {results['ui_without_key_status']} (401/403 expected)")
    if "apply_seconds" in results:
        a = results["apply_seconds"]
        print(f"apply: first (whole repo) {a['first']:.2f} s; later applies median {a['later_median']:.2f} s, "
              f"max {a['later_max']:.2f} s")
    if "list_seconds" in results:
        s = results["list_seconds"]
        print(f"featurestore list views: table {s['table_median']:.2f} s (median of 3), --json {s['json']:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-url", default=os.environ.get("FS_TEST_POSTGRES_URL"),
                        help="A PostgreSQL server to create the scratch database on (default: $FS_TEST_POSTGRES_URL).")
    parser.add_argument("--requests", type=int, default=300, help="Timed requests per page kind.")
    parser.add_argument("--warmup", type=int, default=20, help="Untimed requests per page kind first.")
    parser.add_argument("--repo", type=Path, default=HERE / ".work" / "catalog", help="Where to generate the repo.")
    parser.add_argument("--reuse", type=Path, default=None, help="A repo a --keep run left: skip generate and apply.")
    parser.add_argument("--after-apply", type=int, default=5, metavar="N",
                        help="Apply N more revisions while serving, timing the first pages after each (0: skip; "
                             "each adds a registry version).")
    parser.add_argument("--keep", action="store_true", help="Keep the repo and the scratch database.")
    parser.add_argument("--profile-apply", action="store_true", help="cProfile the first apply (in this process).")
    args = parser.parse_args()

    results: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
                     "load_average_at_start": os.getloadavg(),
                     "cpus": os.cpu_count(), "command": " ".join(sys.argv), "scale": {
                         "entities": N_ENTITIES, "sources": N_SOURCES, "views": N_VIEWS, "on_demand_views": N_ODFVS,
                         "services": N_SERVICES, "registry_versions": N_VERSIONS}}
    registry_url = None
    repo = args.reuse or args.repo
    try:
        if args.reuse is None:
            if not args.postgres_url:
                raise SystemExit("give --postgres-url (or set FS_TEST_POSTGRES_URL): a PostgreSQL server to use")
            registry_url = scratch_database(args.postgres_url)
            print(f"generate and apply {N_VERSIONS} revisions into {repo} ...", flush=True)
            build(repo, registry_url, args.profile_apply, results)
        print("featurestore list ...", flush=True)
        time_list(repo, results)
        print("catalog pages ...", flush=True)
        run_pages(repo, args.requests, args.warmup, args.after_apply, results)
    finally:
        if registry_url and not args.keep:
            drop_database(args.postgres_url, registry_url)
            shutil.rmtree(repo, ignore_errors=True)
        out = HERE / "results" / f"catalog-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        report(results)
        print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
