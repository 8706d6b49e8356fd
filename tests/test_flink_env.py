"""PyFlink 2.2 runs in its own venv (.venv-flink): a Table API job, and a bounded Kafka read.

The venv comes from ``make flink-env`` (``python -m featurestore.streaming.env ensure``). Outside CI a
missing venv skips the slow tests (creating it downloads ~300 MB); under CI=true the tests create it.
Every job runs in a separate process in that venv; nothing is mocked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from featurestore import jvm_jars
from featurestore.streaming import env as flink_env
from featurestore.streaming import jars
from tests.conftest import _required_env, _running_in_ci

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "featurestore.streaming.env", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_venv_holds_pyflink_2_2_with_capped_shared_libraries(flink_python: Path) -> None:
    probe = ("import json, pyarrow, pandas, redis, pyflink, connectors.kafka, transforms;"
             "from importlib.metadata import version;"
             "print(json.dumps({'flink': version('apache-flink'), 'pyarrow': pyarrow.__version__,"
             " 'pandas': pandas.__version__, 'redis': redis.__version__, 'transforms': transforms.__file__}))")
    out = subprocess.run([str(flink_python), "-c", probe], capture_output=True, text=True, timeout=120,
                         env=flink_env.child_env(), check=True)
    versions = json.loads(out.stdout)
    assert versions["flink"].startswith("2.2.")
    assert 16 <= int(versions["pyarrow"].split(".")[0]) < 17
    assert int(versions["redis"].split(".")[0]) == 5
    assert tuple(int(p) for p in versions["pandas"].split(".")[:2]) < (2, 3)
    # The project is installed editable: the venv runs this checkout's code.
    assert Path(versions["transforms"]).resolve().is_relative_to(ROOT)

    # Idempotent: ensure on a ready venv changes nothing and prints the same python.
    before = (flink_env.venv_dir() / flink_env.STAMP_NAME).read_text()
    result = _cli("ensure", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(flink_python)
    assert (flink_env.venv_dir() / flink_env.STAMP_NAME).read_text() == before


@pytest.mark.slow
def test_table_api_job_on_a_mini_cluster(flink_python: Path) -> None:
    result = _cli("check")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    assert "local Table API job OK" in result.stdout


@pytest.mark.slow
@pytest.mark.kafka
def test_flink_reads_a_produced_topic_through_the_connector_jar(flink_python: Path) -> None:
    from connectors.kafka import KafkaClient, KafkaConfig

    bootstrap = _required_env("FS_TEST_KAFKA_BOOTSTRAP", "no Kafka broker for tests")
    client = KafkaClient(KafkaConfig(bootstrap_servers=bootstrap, timeout_seconds=20))
    topic = f"fs-test-flink-{uuid.uuid4().hex[:12]}"
    events = [{"user_id": i % 5, "seq": i, "price": i * 0.5, "ok": i % 2 == 0, "tag": f"t{i}"}
              for i in range(50)]
    try:
        client.create_topic(topic, partitions=2)
        client.produce(topic, events, key=lambda e: str(e["user_id"]))
        rows = flink_env.read_kafka(
            bootstrap, topic,
            {"user_id": "INT", "seq": "BIGINT", "price": "DOUBLE", "ok": "BOOLEAN", "tag": "STRING"},
            timeout=600)
    finally:
        if topic in client.list_topics():
            client.delete_topic(topic)
        client.close()
    assert sorted(rows, key=lambda r: r["seq"]) == events


def test_kafka_table_ddl_is_a_bounded_json_read() -> None:
    ddl = flink_env.kafka_table_ddl("src", "clicks", "127.0.0.1:59092", {"id": "INT", "ts": "TIMESTAMP(3)"})
    assert "`id` INT" in ddl and "`ts` TIMESTAMP(3)" in ddl
    for option in ("'connector' = 'kafka'", "'topic' = 'clicks'",
                   "'properties.bootstrap.servers' = '127.0.0.1:59092'",
                   "'scan.startup.mode' = 'earliest-offset'", "'scan.bounded.mode' = 'latest-offset'",
                   "'format' = 'json'"):
        assert option in ddl


def test_stamp_follows_requirements_and_pyproject(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = flink_env._fingerprint(flink_env.wanted())
    assert flink_env._fingerprint(flink_env.wanted()) == base
    monkeypatch.setattr(flink_env, "FLINK_REQUIREMENTS", (*flink_env.FLINK_REQUIREMENTS, "six"))
    assert flink_env._fingerprint(flink_env.wanted()) != base
    # A venv folder without a stamp is not ready (a half-made venv is redone, not used).
    monkeypatch.setenv("FS_FLINK_VENV", str(tmp_path / "venv"))
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    assert not flink_env.is_ready()


def test_connector_jar_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    jar = tmp_path / "flink-sql-connector-kafka-x.jar"
    jar.write_bytes(b"PK")
    monkeypatch.setenv(jars.CONNECTOR_ENV, str(jar))
    assert jars.connector_jar() == jar.resolve()
    monkeypatch.delenv(jars.CONNECTOR_ENV)
    assert jvm_jars.repo_root() == ROOT
    if jvm_jars.is_fetched(jars.CONNECTOR_PROFILE):
        found = jars.connector_jar(fetch_missing=False)
        assert found.name == "flink-sql-connector-kafka-5.0.0-2.2.jar" and found.stat().st_size > 1_000_000
    elif _running_in_ci():
        pytest.fail("CI=true but the Flink Kafka connector was not fetched (make jars)")
