"""examples/streaming end to end, the way its README runs it: generate the history, apply, create the
topic, ``featurestore stream start user_clicks``, produce clicks with ``producer.py``, read them back
through ``featurestore serve``'s ``/get-online-features``, ``stream status``, ``stream stop``.

Real services (the CI Kafka broker and Redis, a Flink mini-cluster in ``.venv-flink``); the values
served must equal what the producer sent, per user, and the offline store must hold every click.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import _required_env, _running_in_ci

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "streaming"
REDIS_DB = 10  # this file's own database on the shared test server
CLI = [sys.executable, "-m", "featurestore.cli"]


@pytest.fixture(scope="module")
def flink_ready() -> None:
    from featurestore.streaming import env as flink_env

    if not flink_env.is_ready():
        if not _running_in_ci():
            pytest.skip(f"{flink_env.venv_dir()} missing or stale: run `make flink-env`")
        flink_env.ensure(verbose=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, path: str, body: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _healthy(port: int) -> bool:
    from featurestore.errors import FeatureStoreError
    from serving.client import FeatureClient

    try:
        with FeatureClient(f"http://127.0.0.1:{port}", timeout=2) as client:
            return client.health()["status"] == "ok"
    except FeatureStoreError:
        return False


def test_streaming_example_serves_what_the_producer_sent(tmp_path, redis_url, flink_ready):
    import redis

    from connectors.kafka import KafkaClient, KafkaConfig
    from featurestore import FeatureStore

    bootstrap = _required_env("FS_TEST_KAFKA_BOOTSTRAP", "no Kafka broker for tests")
    repo = tmp_path / "streaming"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    base = redis_url.split("?", 1)[0].rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    online_url = f"{base}/{REDIS_DB}"
    redis.Redis.from_url(online_url).flushdb()
    config = (repo / "featurestore.yaml").read_text()
    assert 'url: "redis://127.0.0.1:6379/0"' in config
    (repo / "featurestore.yaml").write_text(config.replace("redis://127.0.0.1:6379/0", online_url))
    topic = f"fs-example-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "CLICKS_TOPIC": topic}

    def run(*args: str, timeout: float = 300) -> str:
        out = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"{args} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    run(sys.executable, "generate_history.py")
    assert "feature_view user_clicks" in run(*CLI, "apply")
    run(sys.executable, "producer.py", "--create-only")
    server = None
    try:
        started = run(*CLI, "stream", "start", "user_clicks", timeout=900)
        assert "user_clicks: running" in started
        sent = json.loads(run(sys.executable, "producer.py", "--rate", "300", "--count", "600", "--seed", "5")
                          .strip().splitlines()[-1])
        assert sent["sent"] == 600
        users = sorted(int(u) for u in sent["users"])
        want_sum = [sent["users"][str(u)]["sum"] for u in users]
        want_count = [sent["users"][str(u)]["count"] for u in users]
        assert sum(want_count) == 600

        port = _free_port()
        server = subprocess.Popen([*CLI, "--repo", str(repo), "serve", "--port", str(port)], cwd=repo, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 60
        while not _healthy(port):
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "featurestore serve did not answer /health"
            time.sleep(0.3)

        request = {"features": ["user_clicks:price_sum_10m", "user_clicks:price_count_10m"],
                   "entities": {"user_id": users}}
        got: dict = {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status, got = _post(port, "/get-online-features", request)
            assert status == 200, got
            if got["results"][1]["values"] == want_sum and got["results"][2]["values"] == want_count:
                break
            status_out = run(*CLI, "stream", "status", "user_clicks")
            assert "running" in status_out, status_out
            time.sleep(1)
        assert got["metadata"]["feature_names"] == ["user_id", "price_sum_10m", "price_count_10m"]
        assert got["results"][0]["values"] == users
        assert got["results"][1]["values"] == want_sum
        assert got["results"][2]["values"] == want_count
        assert set(got["results"][1]["statuses"]) == {"PRESENT"}

        store = FeatureStore(repo)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jobs = json.loads(run(*CLI, "stream", "status", "user_clicks", "--json"))
            if jobs[0]["counters"].get("offline_rows") == 600:
                break
            time.sleep(1)
        counters = jobs[0]["counters"]
        assert jobs[0]["running"] and counters["events"] == 600 and counters["offline_rows"] == 600
        assert counters.get("dead_letters", 0) == 0 and counters.get("late_events", 0) == 0
        offline = store.offline_store.appends.read("user_clicks").to_pylist()
        assert len(offline) == 600
        totals: dict[int, float] = {}
        for row in offline:
            totals[row["user_id"]] = totals.get(row["user_id"], 0.0) + row["price"]
        assert [totals[u] for u in users] == want_sum
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(15)
        stopped = subprocess.run([*CLI, "stream", "stop", "user_clicks"], cwd=repo, env=env, capture_output=True,
                                 text=True, timeout=120)
        kafka = KafkaClient(KafkaConfig(bootstrap_servers=bootstrap))
        for name in (topic, f"{topic}.dead-letter"):
            try:
                kafka.delete_topic(name)
            except Exception:  # noqa: BLE001 - cleanup only
                pass
        kafka.close()
        redis.Redis.from_url(online_url).flushdb()
    assert "user_clicks: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
