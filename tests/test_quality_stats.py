"""A run's statistics against numpy on randomized tables: exact where they say exact, within their
stated bounds where they are sketches (quantiles past the exact capacity, distinct counts)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from featurestore.quality_stats import QUANTILES, RunStatistics
from featurestore.sketches import Distinct, Histogram, Quantiles, TopValues, align, hash_numbers, hash_strings

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=3)
TS = pa.timestamp("us", tz="UTC")
COLUMNS = [("i", pa.int64()), ("f", pa.float64()), ("g", pa.float32()), ("s", pa.string()),
           ("b", pa.bool_()), ("t", TS), ("l", pa.list_(pa.int64()))]


def _table(rng: np.random.Generator, n: int) -> pa.Table:
    null = rng.random(n) < 0.1
    ints = rng.integers(-(2**40), 2**40, n) if rng.random() < 0.5 else rng.integers(-5, 50, n)
    floats = rng.normal(rng.uniform(-1e3, 1e3), rng.uniform(0.1, 100), n)
    floats[rng.random(n) < 0.05] = np.nan  # NaN: missing, like null
    if n > 3 and rng.random() < 0.3:
        floats[rng.integers(0, n)] = np.inf
    words = np.array([f"w{k}" for k in range(30)] + ["", "ü"], dtype=object)[rng.integers(0, 32, n)]
    event_us = int(T0.timestamp() * 1e6) + rng.integers(0, 2 * 86_400_000_000, n)
    return pa.table({
        "i": pa.array(ints, pa.int64(), mask=null),
        "f": pa.array(floats, pa.float64(), mask=rng.random(n) < 0.1),
        "g": pa.array(rng.random(n).astype(np.float32), pa.float32()),
        "s": pa.array(words, pa.string(), mask=rng.random(n) < 0.2),
        "b": pa.array(rng.random(n) < 0.3, pa.bool_(), mask=rng.random(n) < 0.1),
        "t": pa.array(event_us - rng.integers(0, 10**9, n), TS, mask=rng.random(n) < 0.1),
        "l": pa.array([[1, 2]] * n, pa.list_(pa.int64()), mask=null),
        "event_timestamp": pa.array(event_us, TS),
    })


def _split(table: pa.Table, rng: np.random.Generator) -> list[pa.Table]:
    """Random chunks, empty and one-row ones included."""
    cuts = sorted(set(rng.integers(0, table.num_rows + 1, 4).tolist()) | {0, 1, table.num_rows})
    parts = [table.slice(a, b - a) for a, b in zip(cuts, cuts[1:])]
    return parts + [table.slice(0, 0)]


def _stats(tables: list[pa.Table]) -> dict:
    run = RunStatistics(COLUMNS, "event_timestamp")
    for t in tables:
        run.add(t)
    return run.result(NOW)


def _numpy_reference(table: pa.Table, name: str) -> dict:
    col = table.column(name).combine_chunks()
    values = col.to_numpy(zero_copy_only=False)
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False))
    values = values[valid].astype(np.float64) if name != "i" else col.drop_null().to_numpy()
    present = valid.copy()
    if name != "i":  # NaN and +/-inf: missing
        present[valid] = np.isfinite(values)
        values = values[np.isfinite(values)]
    events = table.column("event_timestamp").cast(pa.int64()).to_numpy()
    return {"rows": len(col), "nulls": int(len(col) - present.sum()), "finite": values, "present": present,
            "events": events}


@pytest.mark.parametrize("seed", range(12))
def test_numbers_match_numpy_whether_chunked_or_whole(seed):
    rng = np.random.default_rng(seed)
    table = _table(rng, int(rng.choice([1, 2, 17, 500, 4000])))
    whole, chunked = _stats([table]), _stats(_split(table, rng))
    for name in ("i", "f", "g"):
        ref = _numpy_reference(table, name)
        x = ref["finite"]
        for got in (whole[name], chunked[name]):
            assert got["rows"] == ref["rows"] and got["nulls"] == ref["nulls"]
            if x.size == 0:
                assert got["min"] is None and got["mean"] is None and got["histogram"] is None
                continue
            assert got["min"] == x.min() and got["max"] == x.max()
            if name == "i":
                assert type(got["min"]) is int
            assert got["mean"] == pytest.approx(np.mean(x), rel=1e-12, abs=1e-9)
            assert got["stddev"] == pytest.approx(np.std(x), rel=1e-9, abs=1e-9)
            assert got["quantile_rank_error"] == 0  # under the exact capacity
            assert list(got["quantiles"].values()) == np.quantile(x, list(QUANTILES.values())).tolist()
            edges, counts = got["histogram"]["edges"], got["histogram"]["counts"]
            assert len(counts) <= Histogram.MAX_BINS and counts[0] > 0 and counts[-1] > 0
            assert counts == np.histogram(x, bins=edges)[0].tolist() and sum(counts) == x.size
            assert edges[-1] > x.max()  # every bin half-open, as numpy's are but its last
            assert got["distinct"] == pytest.approx(len(np.unique(x + 0.0)), rel=0.03, abs=1)
            latest = ref["events"][ref["present"]].max()
            assert got["freshness_seconds"] == (int(NOW.timestamp() * 1e6) - latest) / 1e6


@pytest.mark.parametrize("seed", range(6))
def test_strings_bools_times_match_and_merge(seed):
    rng = np.random.default_rng(100 + seed)
    table = _table(rng, int(rng.choice([1, 3, 400, 3000])))
    whole, chunked = _stats([table]), _stats(_split(table, rng))
    assert {k: whole[k] for k in "sbtl"} == {k: chunked[k] for k in "sbtl"}
    for name in ("s", "b"):
        values = [v for v in table.column(name).to_pylist() if v is not None]
        got = whole[name]
        assert got["rows"] == table.num_rows and got["nulls"] == table.num_rows - len(values)
        counts: dict = {}
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        assert [tuple(p) for p in got["top"]] == expected and got["top_error"] == 0
        assert got["distinct"] == len(counts)  # small counts: HyperLogLog's estimate is exact here
    times = [v for v in table.column("t").to_pylist() if v is not None]
    if times:
        assert whole["t"]["min"] == min(times).isoformat() and whole["t"]["max"] == max(times).isoformat()
    assert whole["l"]["rows"] == table.num_rows and whole["l"]["nulls"] == table.column("l").null_count


def test_an_empty_run_has_counts_and_no_values():
    got = _stats([_table(np.random.default_rng(1), 5).slice(0, 0)])
    assert got["f"] == {"rows": 0, "nulls": 0, "freshness_seconds": None, "min": None,
                        "max": None, "mean": None, "stddev": None, "quantiles": None,
                        "quantile_rank_error": None, "histogram": None, "distinct": 0}
    assert got["s"]["top"] == [] and got["t"]["min"] is None


def test_quantiles_past_capacity_stay_within_their_stated_rank_error():
    rng = np.random.default_rng(5)
    summary, everything = Quantiles(), []
    for _ in range(40):
        chunk = rng.lognormal(0, 2, int(rng.integers(1, 60_000)))
        everything.append(chunk)
        summary.add_sorted(np.sort(chunk))
    x = np.sort(np.concatenate(everything))
    n, error = x.size, summary.error
    assert 0 < error / n <= 6 / Quantiles.CAPACITY  # (1 + levels) / capacity
    qs = [0.0, 0.001, 0.01, 0.25, 0.5, 0.9, 0.999, 1.0]
    for q, v in zip(qs, summary.quantiles(qs)):
        target = q * (n - 1)
        below, at_most = np.searchsorted(x, v, "left"), np.searchsorted(x, v, "right")
        assert below - error - 1 <= target <= at_most + error  # some rank of v within the error


def test_top_values_past_capacity_are_low_by_at_most_their_stated_error():
    rng = np.random.default_rng(8)
    top, truth = TopValues(), {}
    for _ in range(20):  # a few frequent values among many rare ones
        words = np.concatenate([rng.choice([f"hot{k}" for k in range(5)], 2000),
                                np.char.add("cold", rng.integers(0, 50_000, 3000).astype(str))])
        values, counts = np.unique(words, return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist()):
            truth[v] = truth.get(v, 0) + c
        top.add(pa.array(values), pa.array(counts))
    n = sum(truth.values())
    assert 0 < top.error <= n / (TopValues.CAPACITY + 1)
    got = top.top(10)
    assert {v for v, _ in got[:5]} == {f"hot{k}" for k in range(5)}
    for v, c in got:
        assert truth[v] - top.error <= c <= truth[v]


def test_histogram_widens_and_merges_exactly():
    rng = np.random.default_rng(9)
    parts = [rng.normal(0, 1, 1000), rng.normal(50, 3, 10), np.array([-1e6]), rng.normal(3, 0.001, 100)]
    one, two = Histogram(), Histogram()
    for i, p in enumerate(parts):
        (one if i % 2 else two).add(p, float(p.min()), float(p.max()))
    one.merge(two)
    whole = np.concatenate(parts)
    got = one.to_dict()
    assert got["counts"] == np.histogram(whole, bins=got["edges"])[0].tolist()
    widths = np.diff(got["edges"])
    assert np.all(widths == widths[0]) and math.log2(widths[0]).is_integer()
    narrow, wide = rng.normal(0, 1, 500), rng.uniform(-40, 90, 700)
    recorded = []
    for x in (narrow, wide):
        h = Histogram()
        h.add(x, float(x.min()), float(x.max()))
        recorded.append(h.to_dict())
    edges, counts_narrow, counts_wide = align(*recorded)  # two runs' histograms on common bins
    assert counts_narrow == np.histogram(narrow, edges)[0].tolist()
    assert counts_wide == np.histogram(wide, edges)[0].tolist()
    assert edges[1] - edges[0] == recorded[1]["edges"][1] - recorded[1]["edges"][0]
    ints = Histogram(integers=True)
    ints.add(np.array([7.0, 7.0]), 7.0, 7.0)
    assert ints.to_dict() == {"edges": [7.0, 8.0], "counts": [2]}


@pytest.mark.parametrize("n", [0, 1, 10, 1_000, 20_000, 200_000])
def test_distinct_counts_within_the_stated_error(n):
    rng = np.random.default_rng(n)
    errors = []
    for _ in range(3):
        ints = Distinct()
        values = rng.choice(2**62, n, replace=False) if n else np.zeros(0, np.int64)
        for part in np.array_split(np.concatenate([values, values[: n // 3]]), 5):  # repeats change nothing
            ints.add(hash_numbers(part))
        errors.append(abs(ints.estimate() - n) / max(n, 1))
        words = Distinct()
        words.add(hash_strings(pa.array([f"user-{v}" for v in values[: min(n, 20_000)]], pa.string())))
        errors.append(abs(words.estimate() - min(n, 20_000)) / max(min(n, 20_000), 1))
    # 4 standard errors for any one estimate; the average well within 2
    assert max(errors) <= 4 * Distinct.RELATIVE_ERROR
    assert np.mean(errors) <= 2 * Distinct.RELATIVE_ERROR


def test_string_hashes_tell_values_apart_and_ignore_slicing():
    words = pa.array(["", "a", "ab", "ba", "\x00", "\x00\x00", "ü", "a" * 1000] + [f"k{i}" for i in range(5000)])
    hashes = hash_strings(words)
    assert len(set(hashes.tolist())) == len(words)
    assert hash_strings(words.slice(3, 10)).tolist() == hashes[3:13].tolist()
    assert hash_strings(words.cast(pa.large_string())).tolist() == hashes.tolist()
    assert hash_numbers(np.array([0.0, -0.0]))[0] == hash_numbers(np.array([0.0, -0.0]))[1]
