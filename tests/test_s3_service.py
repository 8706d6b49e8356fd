"""The S3 test service stores objects, and delta-rs keeps Delta tables on it, with concurrent writers.

The server is MinIO (built from source with ``go install``) that ``.ci/services.sh`` starts; ``make test``
exports ``FS_TEST_S3_ENDPOINT``, ``FS_TEST_S3_ACCESS_KEY``, ``FS_TEST_S3_SECRET_KEY``, ``FS_TEST_S3_REGION``
(and ``FS_TEST_S3_SERVER``, which implementation answers). Without them these tests skip, and fail under
CI=true. Each test works in a bucket of its own, deleted afterwards.

What delta-rs (deltalake 1.x) needs for this server, in ``storage_options``: the endpoint, keys and region
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``) and
``AWS_ALLOW_HTTP=true`` (plain http). Path-style requests are delta-rs's default. Commits are PUTs with
``If-None-Match: *`` (conditional put, ``AWS_CONDITIONAL_PUT=etag``, the default): a writer that loses the
race for a version gets 412 and retries at the next one. ``AWS_S3_ALLOW_UNSAFE_RENAME`` no longer changes
how commits are written; ``AWS_CONDITIONAL_PUT=disabled`` makes every commit fail.

So concurrent Delta writers lose nothing only if the server's conditional PUT is atomic: of several
overlapping PUTs of one new key, exactly one may succeed. The two concurrency tests below hold any server to
that. (s3s-fs 0.14.1, the server used before, fails them: it checks for the object before it writes and then
renames its temporary file over the key, so two overlapping PUTs can both succeed and one Delta commit is
silently lost.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from tests.conftest import _required_env

pytestmark = pytest.mark.s3

SERVER = os.environ.get("FS_TEST_S3_SERVER", "the S3 server")


@dataclass(frozen=True)
class S3:
    endpoint: str
    access_key: str
    secret_key: str
    region: str

    def storage_options(self, **extra: str) -> dict[str, str]:
        """delta-rs storage options for this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
            **extra,
        }

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                ) -> tuple[int, bytes]:
        """One SigV4-signed request (path-style ``/bucket/key``, no query string); (status, body)."""
        url = urlsplit(self.endpoint)
        path = quote(path, safe="/-_.~")
        now = dt.datetime.now(dt.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        payload_hash = hashlib.sha256(body).hexdigest()
        hdrs = {k.lower(): v.strip() for k, v in (headers or {}).items()}
        hdrs.update({"host": url.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash})
        names = sorted(hdrs)
        canonical = "\n".join([method, path, "", "".join(f"{k}:{hdrs[k]}\n" for k in names),
                               ";".join(names), payload_hash])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self.secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        hdrs["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                 f"SignedHeaders={';'.join(names)}, Signature={signature}")
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def s3() -> S3:
    what = "no S3 server for tests"
    return S3(endpoint=_required_env("FS_TEST_S3_ENDPOINT", what),
              access_key=_required_env("FS_TEST_S3_ACCESS_KEY", what),
              secret_key=_required_env("FS_TEST_S3_SECRET_KEY", what), region=_required_env("FS_TEST_S3_REGION", what))


@pytest.fixture(scope="module")
def s3fs(s3: S3) -> pafs.S3FileSystem:
    url = urlsplit(s3.endpoint)
    return pafs.S3FileSystem(endpoint_override=url.netloc, scheme=url.scheme, access_key=s3.access_key,
                             secret_key=s3.secret_key, region=s3.region, allow_bucket_creation=True,
                             allow_bucket_deletion=True, connect_timeout=5, request_timeout=30)


@pytest.fixture
def bucket(s3fs: pafs.S3FileSystem) -> Iterator[str]:
    """A new, empty bucket for one test; deleted with its objects afterwards."""
    name = f"fs-test-{uuid.uuid4().hex[:16]}"
    s3fs.create_dir(name)
    try:
        yield name
    finally:
        s3fs.delete_dir(name)


def read_delta(table: DeltaTable, s3fs: pafs.S3FileSystem, path: str) -> pa.Table:
    """The table's rows through pyarrow's own S3 client. (deltalake's default, a Python filesystem
    that Arrow's threads call back into, makes the interpreter abort now and then at exit.)"""
    return table.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(path, s3fs)).to_table()


# ---------------------------------------------------------------- objects


def test_bucket_put_get_list_delete(s3fs: pafs.S3FileSystem, bucket: str) -> None:
    small, large = b"alpha", bytes(range(256)) * 400  # 100 KiB: more than one read buffer
    with s3fs.open_output_stream(f"{bucket}/dir/a.txt") as out:
        out.write(small)
    with s3fs.open_output_stream(f"{bucket}/dir/sub/b.bin") as out:
        out.write(large)

    with s3fs.open_input_stream(f"{bucket}/dir/a.txt") as f:
        assert f.read() == small
    with s3fs.open_input_file(f"{bucket}/dir/sub/b.bin") as f:
        assert f.size() == len(large)
        f.seek(1000)
        assert f.read(10) == large[1000:1010]

    files = {i.path: i.size for i in s3fs.get_file_info(pafs.FileSelector(bucket, recursive=True))
             if i.type == pafs.FileType.File}
    assert files == {f"{bucket}/dir/a.txt": len(small), f"{bucket}/dir/sub/b.bin": len(large)}
    top = {i.path: i.type for i in s3fs.get_file_info(pafs.FileSelector(f"{bucket}/dir"))}
    assert top == {f"{bucket}/dir/a.txt": pafs.FileType.File, f"{bucket}/dir/sub": pafs.FileType.Directory}

    s3fs.delete_file(f"{bucket}/dir/a.txt")
    assert s3fs.get_file_info(f"{bucket}/dir/a.txt").type == pafs.FileType.NotFound
    with pytest.raises(FileNotFoundError):
        s3fs.open_input_stream(f"{bucket}/dir/a.txt").read()


def test_wrong_secret_is_refused(s3: S3, bucket: str) -> None:
    status, _ = s3.request("GET", f"/{bucket}")
    assert status == 200
    wrong = S3(s3.endpoint, s3.access_key, s3.secret_key + "-wrong", s3.region)
    status, body = wrong.request("GET", f"/{bucket}")
    assert status == 403 and b"SignatureDoesNotMatch" in body


def test_conditional_put_refuses_to_replace_an_object(s3: S3, bucket: str) -> None:
    key = f"/{bucket}/_delta_log/00000000000000000007.json"
    assert s3.request("PUT", key, b"first", {"If-None-Match": "*"})[0] == 200
    status, body = s3.request("PUT", key, b"second", {"If-None-Match": "*"})
    assert status == 412 and b"PreconditionFailed" in body
    assert s3.request("GET", key) == (200, b"first")
    # Without the condition the same PUT replaces the object: the header is what protects it.
    assert s3.request("PUT", key, b"third")[0] == 200
    assert s3.request("GET", key) == (200, b"third")


def test_concurrent_conditional_puts_have_one_winner(s3: S3, bucket: str) -> None:
    """Writers PUT the same new key with If-None-Match: * at once: exactly one may succeed, the others
    get 412, and the object holds the winner's bytes. Up to 200 rounds, stopping at the first breach."""
    writers, rounds = 8, 200
    bodies = [f"writer {w} ".encode() * 6000 for w in range(writers)]  # ~60 KB: the write takes a moment
    for r in range(rounds):
        key = f"/{bucket}/race/{r:04d}.json"
        statuses: list[int] = [0] * writers
        barrier = threading.Barrier(writers)

        def put(w: int, key: str = key, statuses: list[int] = statuses, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(timeout=30)
            statuses[w] = s3.request("PUT", key, bodies[w], {"If-None-Match": "*"})[0]

        threads = [threading.Thread(target=put, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        winners = [w for w, status in enumerate(statuses) if status == 200]
        assert sorted(Counter(statuses)) in ([200, 412], [200]), f"round {r}: statuses {statuses}"
        assert len(winners) == 1, (f"round {r}: {len(winners)} of {writers} conditional PUTs of {key} "
                                  f"succeeded on {SERVER}: its If-None-Match is not atomic")
        status, stored = s3.request("GET", key)
        assert status == 200 and stored == bodies[winners[0]], f"round {r}: the object is not the winner's"


# ---------------------------------------------------------------- Delta tables


def _features(ids: list[int], day: int) -> pa.Table:
    return pa.table({
        "entity_id": pa.array(ids, pa.int64()),
        "value": pa.array([i * 1.5 for i in ids], pa.float64()),
        "event_time": pa.array([dt.datetime(2024, 1, day, 12, i, tzinfo=dt.timezone.utc) for i in ids],
                               pa.timestamp("us", tz="UTC")),
    })


def test_delta_table_write_append_and_time_travel(s3: S3, s3fs: pafs.S3FileSystem, bucket: str) -> None:
    path = f"{bucket}/tables/features"
    uri = f"s3://{path}"
    options = s3.storage_options()
    first, second = _features([1, 2, 3], day=1), _features([4, 5], day=2)

    write_deltalake(uri, first, storage_options=options)
    write_deltalake(uri, second, mode="append", storage_options=options)

    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 1
    assert read_delta(table, s3fs, path).sort_by("entity_id").equals(pa.concat_tables([first, second]))
    assert [h["operationParameters"]["mode"] for h in sorted(table.history(), key=lambda h: h["version"])] == [
        "ErrorIfExists", "Append"]

    at_zero = DeltaTable(uri, version=0, storage_options=options)
    assert at_zero.version() == 0
    assert read_delta(at_zero, s3fs, path).sort_by("entity_id").equals(first)

    # The commits and data files are objects in the bucket, where delta-rs said they are.
    log = {i.base_name for i in s3fs.get_file_info(pafs.FileSelector(f"{path}/_delta_log")) if i.is_file}
    assert {"00000000000000000000.json", "00000000000000000001.json"} <= log
    for file_uri in table.file_uris():
        assert file_uri.startswith(f"{uri}/")
        assert s3fs.get_file_info(file_uri.removeprefix("s3://")).type == pafs.FileType.File

    # Appending with a different schema is refused, and leaves the table as it was.
    with pytest.raises(Exception, match="(?i)schema"):
        write_deltalake(uri, pa.table({"other": [1]}), mode="append", storage_options=options)
    assert DeltaTable(uri, storage_options=options).version() == 1


def test_delta_over_plain_http_needs_allow_http(s3: S3, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ALLOW_HTTP", raising=False)  # delta-rs also reads AWS_* from the environment
    options = {k: v for k, v in s3.storage_options().items() if k != "AWS_ALLOW_HTTP"}
    with pytest.raises(OSError, match="(?i)scheme is not allowed"):
        write_deltalake(f"s3://{bucket}/t", _features([1], day=1), storage_options=options)


def test_concurrent_delta_appends_lose_no_commit(s3: S3, s3fs: pafs.S3FileSystem, bucket: str) -> None:
    """Writers append to one table at once, many times. Each commit that delta-rs reports as done must be
    in the table exactly once, at its own version; a writer that loses a version retries (or fails)."""
    writers, appends = 4, 20
    path = f"{bucket}/tables/contended"
    uri = f"s3://{path}"
    options = s3.storage_options()
    schema = pa.schema([("writer", pa.int64()), ("seq", pa.int64())])
    write_deltalake(uri, schema.empty_table(), storage_options=options)

    committed: list[tuple[int, int]] = []
    refused: list[tuple[int, int]] = []
    unexpected: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(writers)

    def writer(w: int) -> None:
        barrier.wait(timeout=60)
        for i in range(appends):
            try:
                write_deltalake(uri, pa.table({"writer": [w], "seq": [i]}, schema=schema), mode="append",
                                storage_options=options,
                                commit_properties=CommitProperties(custom_metadata={"tag": f"{w}:{i}"},
                                                                   max_commit_retries=100))
            except CommitFailedError:
                with lock:
                    refused.append((w, i))
            except BaseException as exc:  # noqa: BLE001 - reported below
                with lock:
                    unexpected.append(exc)
            else:
                with lock:
                    committed.append((w, i))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not unexpected, f"writers failed: {unexpected[:3]}"
    assert len(committed) + len(refused) == writers * appends
    assert committed, "no append was committed"

    table = DeltaTable(uri, storage_options=options)
    history = table.history()
    versions = sorted(h["version"] for h in history)
    tags = Counter(h.get("tag") for h in history if h["version"] > 0)  # custom_metadata of each commit
    rows = read_delta(table, s3fs, path)
    found = Counter(zip(rows.column("writer").to_pylist(), rows.column("seq").to_pylist(), strict=True))
    lost = sorted(set(committed) - set(found))
    summary = (f"{SERVER}, {writers} writers x {appends} appends: {len(committed)} reported committed, "
               f"{len(refused)} refused, table at version {table.version()} with {rows.num_rows} rows; "
               f"lost commits {lost[:10]}")

    assert rows.num_rows == len(committed), summary
    assert not lost, summary
    assert all(n == 1 for n in found.values()), summary
    assert set(found) == set(committed), summary
    assert versions == list(range(len(committed) + 1)), summary
    assert tags == Counter(f"{w}:{i}" for w, i in committed), summary
    # The writers really raced: some commit found its version taken and retried.
    assert sum(h.get("operationMetrics", {}).get("num_retries", 0) for h in history) > 0, summary


# ---------------------------------------------------------------- the offline store on S3


def test_the_offline_store_on_s3_replaces_appends_and_commits_offsets(s3: S3, bucket: str, monkeypatch,
                                                                      tmp_path) -> None:
    """The Delta offline store at an ``s3://`` path, with the secret only in the environment
    (``${VAR}`` in storage_options): interval replace, staged commits, appends with stream offsets,
    file listing, old versions, deletion."""
    from datetime import timedelta

    from connectors.offline_delta import DeltaOfflineStore, DeltaOfflineStoreConfig

    monkeypatch.setenv("FS_TEST_OFFLINE_SECRET", s3.secret_key)
    options = {**s3.storage_options(), "AWS_SECRET_ACCESS_KEY": "${FS_TEST_OFFLINE_SECRET}"}
    config = DeltaOfflineStoreConfig(type="parquet", path=f"s3://{bucket}/offline", storage_options=options)
    assert "fstest-secret" not in config.model_dump_json()  # what a config or registry dump would show
    store = DeltaOfflineStore(config, tmp_path, "proj")
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)

    def rows(hours: list[int], base: int = 0) -> pa.Table:
        return pa.table({"driver_id": pa.array([base + i for i in range(len(hours))], pa.int64()),
                         "event_timestamp": pa.array([t0 + timedelta(hours=h) for h in hours],
                                                     pa.timestamp("us", tz="UTC")),
                         "trips": pa.array([float(h) for h in hours])})

    store.write("trips", rows([1, 5, 30]), t0, t0 + timedelta(days=2), "event_timestamp")
    first = store.version("trips")
    store.write("trips", rows([6], base=10), t0 + timedelta(hours=4), t0 + timedelta(hours=24), "event_timestamp")
    assert sorted(store.read("trips").column("trips").to_pylist()) == [1.0, 6.0, 30.0]
    assert sorted(store.read("trips", version=first).column("trips").to_pylist()) == [1.0, 5.0, 30.0]
    store.write("trips", rows([40], base=20), t0 + timedelta(hours=36), t0 + timedelta(hours=48),
                "event_timestamp")
    assert sorted(store.read("trips").column("trips").to_pylist()) == [1.0, 6.0, 30.0, 40.0]
    assert all(f.startswith(f"s3://{bucket}/offline/proj/trips/") for f in store.files("trips"))
    assert store.views() == ["trips"]

    store.appends.append("trips", rows([2], base=30), "event_timestamp", stream="kafka:t",
                         offsets={0: (0, 9)}, progress={"max_event_us": {"0": 1}})
    assert store.appends.stream_progress("trips", "kafka:t") == ({0: 9}, {"max_event_us": {"0": 1}})
    fresh = DeltaOfflineStore(config, tmp_path, "proj")  # another process: read back from S3
    assert fresh.appends.stream_progress("trips", "kafka:t")[0] == {0: 9}
    assert fresh.appends.read("trips").num_rows == 1
    assert fresh.delete_view("trips") and fresh.views() == [] and fresh.appends.views() == []


_OFFLINE_WRITER = textwrap.dedent("""
    import json, sys, time, pyarrow as pa
    from datetime import datetime, timedelta, timezone
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from connectors.offline_delta import DeltaOfflineStore, DeltaOfflineStoreConfig
    config, role = json.loads(sys.argv[2]), sys.argv[3]
    w, rounds, n = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    store = DeltaOfflineStore(DeltaOfflineStoreConfig(**config), Path(sys.argv[7]), "proj")
    go = Path(sys.argv[8])
    (go.parent / f"ready-{w}").touch()
    while not go.exists():  # all writers start together, once every one has imported
        time.sleep(0.01)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for r in range(rounds):
        lo = t0 + timedelta(hours=6 * (w * rounds + r))  # each writer and round: an interval of its own
        ids = [w * 100_000 + r * n + i for i in range(n)]
        table = pa.table({"driver_id": pa.array(ids, pa.int64()),
                          "event_timestamp": pa.array([lo + timedelta(minutes=i) for i in range(n)],
                                                      pa.timestamp("us", tz="UTC")),
                          "trips": pa.array([float(w)] * n)})
        if role == "materialize":
            store.write("trips", table, lo, lo + timedelta(hours=6), "event_timestamp")
        else:  # a stream job's micro-batch: rows and their Kafka offsets in one commit
            store.appends.append("trips", table, "event_timestamp", stream="kafka:trips",
                                 offsets={0: (r * n, r * n + n - 1)}, progress={"batch": r})
""")


def test_concurrent_offline_store_writers_on_s3_lose_nothing(s3: S3, bucket: str, tmp_path) -> None:
    """Two materializations and a stream job write one view's tables on S3 from three processes at once
    (interval replaces of disjoint intervals beside appends with offsets): every row lands exactly once
    and the stream's offsets are the last batch's. tests/test_offline_delta.py races writers on local disk."""
    from connectors.offline_delta import DeltaOfflineStore, DeltaOfflineStoreConfig

    config = {"path": f"s3://{bucket}/offline", "storage_options": s3.storage_options()}
    store = DeltaOfflineStore(DeltaOfflineStoreConfig(**config), tmp_path, "proj")
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    empty = pa.table({"driver_id": pa.array([], pa.int64()),
                      "event_timestamp": pa.array([], pa.timestamp("us", tz="UTC")),
                      "trips": pa.array([], pa.float64())})
    # The tables exist before the race.
    store.write("trips", empty, t0, t0 + dt.timedelta(hours=1), "event_timestamp")
    store.appends.append("trips", empty, "event_timestamp")
    rounds, n = 25, 4
    root = str(Path(__file__).resolve().parents[1])
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _OFFLINE_WRITER, root, json.dumps(config), role, str(w),
                               str(rounds), str(n), str(tmp_path), str(go)], stderr=subprocess.PIPE, text=True)
             for w, role in enumerate(["materialize", "materialize", "stream"])]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{w}").exists() for w in range(len(procs))):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a writer did not start"
        time.sleep(0.05)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]

    fresh = DeltaOfflineStore(DeltaOfflineStoreConfig(**config), tmp_path, "proj")
    materialized, appended = fresh.read("trips"), fresh.appends.read("trips")
    expected = {w: {w * 100_000 + i for i in range(rounds * n)} for w in range(3)}
    for table, writers in ((materialized, (0, 1)), (appended, (2,))):
        ids = table.column("driver_id").to_pylist()
        summary = f"{SERVER}: {len(ids)} rows, {len(set(ids))} ids, from writers {writers}"
        assert len(ids) == len(set(ids)) == len(writers) * rounds * n, summary
        assert set(ids) == set().union(*(expected[w] for w in writers)), summary
    offsets, progress = fresh.appends.stream_progress("trips", "kafka:trips")
    assert offsets == {0: rounds * n - 1} and progress == {"batch": rounds - 1}
