"""Mergeable summaries of a column's values, fed one chunk at a time with numpy arrays, so a run's
statistics need memory bounded by the summary sizes, not by the rows (``featurestore.quality_stats``
uses them). Written here rather than taken from a sketch library: the stream job's environment
(``.venv-flink``) has numpy and pyarrow only, and each summary takes a whole chunk in a few
vectorized steps where the libraries' Python bindings take one value per call.

- ``Distinct``: HyperLogLog with 2**14 registers and Ertl's improved estimator ("New cardinality
  estimation algorithms for HyperLogLog sketches", 2017), whose relative standard error is
  1.04 / sqrt(2**14) = 0.81 % over the whole range (small counts included).
- ``Quantiles``: sorted values with integer weights (exact while a run has at most ``CAPACITY``
  values); beyond that, merged level by level (two summaries of a level make one of the next) and
  thinned to ``CAPACITY`` points, each thinning adding less than its summary's weight / ``CAPACITY``
  to ``error`` (in rows). A quantile's rank in the data lies within ``error`` rows of the rank asked
  for, so ``error / count`` bounds the rank error: (1 + levels) / ``CAPACITY`` at most (levels =
  log2 of the chunks).
- ``Histogram``: counts on bins of width 2**e aligned to multiples of 2**e, at most ``MAX_BINS`` of
  them; a wider range doubles the width, merging bins pairwise, so the counts stay exact. Runs with
  different widths re-bin exactly onto the wider one (``align``), which is what drift needs.
- ``TopValues``: the Misra-Gries summary of a categorical column (``CAPACITY`` counters): counts are
  exact while a run has at most that many distinct values, otherwise each is low by at most ``error``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer over uint64 values (a new array): every input bit moves every output bit."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    t = np.empty_like(z)
    with np.errstate(over="ignore"):
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            np.right_shift(z, np.uint64(shift), out=t)
            z ^= t
            z *= np.uint64(factor)
    np.right_shift(z, np.uint64(31), out=t)
    z ^= t
    return z


def hash_numbers(values: np.ndarray) -> np.ndarray:
    """64-bit hashes of integers (by value) or floats (by value: -0.0 is 0.0)."""
    if values.dtype.kind == "f":
        values = values + 0.0 if values.dtype == np.float64 else values.astype(np.float64) + 0.0
    elif values.dtype.kind in "bu" or values.dtype != np.int64:
        values = values.astype(np.int64)
    return _mix(np.ascontiguousarray(values).view(np.uint64))


def hash_strings(values: pa.Array) -> np.ndarray:
    """64-bit hashes of a string or binary array without nulls: each value's bytes, 8 at a time as
    words, mixed in turn into a hash seeded with its length."""
    values = values.cast(pa.large_binary()) if not pa.types.is_large_binary(values.type) else values
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], np.int64)[values.offset:values.offset + n + 1] if n else \
        np.zeros(1, np.int64)
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    data = values.buffers()[2]
    raw = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]] if data is not None and n else np.zeros(0, np.uint8)
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([raw, np.zeros(8, np.uint8)]), 8)
    h = _mix(lengths.astype(np.uint64))
    rows = np.arange(n)
    for word in range(-(-int(lengths.max(initial=0)) // 8)):
        rows = rows[lengths[rows] > 8 * word]  # the values this long
        at = starts[rows] + 8 * word
        chunk = windows[at].view(np.uint64)[:, 0]  # 8 bytes from each
        left = np.minimum(lengths[rows] - 8 * word, 8).astype(np.uint64)
        with np.errstate(over="ignore"):
            keep = np.where(left == 8, _M64, (np.uint64(1) << (left * np.uint64(8))) - np.uint64(1))
        h[rows] = _mix(h[rows] ^ (chunk & keep))
    return h


class Distinct:
    """HyperLogLog: an approximate count of distinct hashed values, mergeable by register maximum."""

    P = 14
    M = 1 << P
    Q = 64 - P
    RELATIVE_ERROR = 1.04 / math.sqrt(M)

    def __init__(self) -> None:
        self.registers = np.zeros(self.M, np.uint8)

    def add(self, hashes: np.ndarray) -> None:
        if hashes.size == 0:
            return
        index = (hashes >> np.uint64(self.Q)).astype(np.intp)
        rest = (hashes & np.uint64((1 << self.Q) - 1)).astype(np.float64)
        # rest < 2**50 is exact as a float64, so frexp's exponent is its bit length (0 for 0).
        rank = (self.Q + 1 - np.frexp(rest)[1]).astype(np.uint8)
        np.maximum.at(self.registers, index, rank)

    def merge(self, other: "Distinct") -> None:
        np.maximum(self.registers, other.registers, out=self.registers)

    def estimate(self) -> int:
        counts = np.bincount(self.registers, minlength=self.Q + 2).astype(np.float64)
        m = float(self.M)
        if counts[0] == m:
            return 0
        z = m * _tau(1 - counts[self.Q + 1] / m)
        for k in range(self.Q, 0, -1):
            z = 0.5 * (z + counts[k])
        z += m * _sigma(counts[0] / m)
        return int(round(m * m / (2 * math.log(2)) / z))


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        before = z
        z += x * y
        y += y
        if z == before:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1 - x
    while True:
        x = math.sqrt(x)
        before = z
        y *= 0.5
        z -= (1 - x) ** 2 * y
        if z == before:
            return z / 3


class Quantiles:
    """Weighted sorted points standing for a column's values (see the module docs)."""

    CAPACITY = 4096

    def __init__(self) -> None:
        self.levels: list[tuple[np.ndarray, np.ndarray, int] | None] = []  # (values, weights, error)
        self.count = 0

    def add_sorted(self, values: np.ndarray) -> None:
        """A chunk's values, sorted, without NaN."""
        if values.size == 0:
            return
        self.count += values.size
        values = values.astype(np.float64, copy=False)
        if values.size > self.CAPACITY:  # unit weights: the points _thin keeps, by arithmetic
            ends = -(-np.arange(1, self.CAPACITY + 1, dtype=np.int64) * values.size // self.CAPACITY)
            weights = np.diff(ends, prepend=0)
            self._carry((values[ends - 1], weights, int(weights.max()) - 1), 0)
        else:
            self._carry((values, np.ones(values.size, np.int64), 0), 0)

    def merge(self, other: "Quantiles") -> None:
        self.count += other.count
        for level, summary in enumerate(other.levels):
            if summary is not None:
                self._carry(summary, level)

    def _carry(self, summary, level: int) -> None:
        while True:
            if level == len(self.levels):
                self.levels.append(None)
            held = self.levels[level]
            if held is None:
                self.levels[level] = summary
                return
            self.levels[level] = None
            summary = _thin(*_union(held, summary))
            level += 1

    @property
    def error(self) -> int:
        """Rows a reported quantile's rank may be away from the rank asked for (0: exact)."""
        return sum(s[2] for s in self.levels if s is not None)

    def quantiles(self, qs: list[float]) -> list[float]:
        """numpy's default (linear) quantiles of the values, exact while ``error`` is 0."""
        held = [s for s in self.levels if s is not None]
        if not held:
            return [math.nan] * len(qs)
        values, weights, _ = held[0]
        for s in held[1:]:
            values, weights, _ = _union((values, weights, 0), s)
        cumulative = np.cumsum(weights)

        def order_statistic(k: int) -> float:
            return float(values[np.searchsorted(cumulative, k, side="right")])

        out = []
        for q in qs:
            h = (self.count - 1) * q
            lo = math.floor(h)
            a = order_statistic(lo)
            b = order_statistic(min(lo + 1, self.count - 1))
            t = h - lo
            out.append(a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t))  # numpy's _lerp
        return out


def _union(a, b) -> tuple[np.ndarray, np.ndarray, int]:
    values = np.concatenate([a[0], b[0]])
    order = np.argsort(values, kind="stable")
    return values[order], np.concatenate([a[1], b[1]])[order], a[2] + b[2]


def _thin(values: np.ndarray, weights: np.ndarray, error: int) -> tuple[np.ndarray, np.ndarray, int]:
    """At most ``CAPACITY`` points: the first point at or past each of ``CAPACITY`` evenly spaced
    cumulative weights (the last point always), each absorbing the weight of the points dropped before
    it. A value's rank moves by at most the weight dropped between two kept points."""
    if values.size <= Quantiles.CAPACITY:
        return values, weights, error
    cumulative = np.cumsum(weights)
    total = int(cumulative[-1])
    targets = -(-np.arange(1, Quantiles.CAPACITY + 1, dtype=np.int64) * total // Quantiles.CAPACITY)
    kept = np.searchsorted(cumulative, targets, side="left")  # non-decreasing
    kept = kept[np.concatenate([[True], kept[1:] != kept[:-1]])]
    kept_cumulative = cumulative[kept]
    new_weights = np.diff(kept_cumulative, prepend=0)
    dropped = new_weights - weights[kept]
    return values[kept], new_weights, error + int(dropped.max(initial=0))


class Histogram:
    """Exact counts on aligned power-of-two bins (see the module docs)."""

    MAX_BINS = 64

    def __init__(self, integers: bool = False) -> None:
        self.integers = integers
        self.exponent: int | None = None
        self.first = 0  # the first bin's index: it covers [first * 2**e, (first + 1) * 2**e)
        self.counts = np.zeros(0, np.int64)

    def add(self, values: np.ndarray, lo: float, hi: float) -> None:
        """A chunk's finite values, with their minimum and maximum."""
        if values.size:
            self._add(values.astype(np.float64, copy=False), None, lo, hi, None)

    def add_sorted(self, values: np.ndarray) -> None:
        """A chunk's finite values, sorted: each bin's count is where its edges fall among them."""
        if values.size == 0:
            return
        lo, hi = float(values[0]), float(values[-1])
        exponent = self._exponent(*self._span(lo, hi), None)
        bins = np.arange(math.floor(math.ldexp(lo, -exponent)), math.floor(math.ldexp(hi, -exponent)) + 2,
                         dtype=np.float64)
        edges = np.ldexp(bins, exponent)
        self._add(edges[:-1], np.diff(np.searchsorted(values, edges, side="left")), lo, hi, exponent)

    def _span(self, lo: float, hi: float) -> tuple[float, float]:
        """[lo, hi] widened to the bins held."""
        if self.exponent is None:
            return lo, hi
        return (min(lo, math.ldexp(self.first, self.exponent)),
                max(hi, math.ldexp(self.first + self.counts.size - 1, self.exponent)))

    def merge(self, other: "Histogram") -> None:
        """Add ``other``'s counts: each of its bins lands whole in one of ours, once ours are at least
        as wide."""
        filled = np.flatnonzero(other.counts)
        if filled.size:
            starts = np.ldexp((other.first + filled).astype(np.float64), other.exponent)
            self._add(starts, other.counts[filled], float(starts[0]), float(starts[-1]), other.exponent)

    def _add(self, points: np.ndarray, weights: np.ndarray | None, lo: float, hi: float,
             min_exponent: int | None) -> None:
        lo, hi = self._span(lo, hi)
        exponent = self._exponent(lo, hi, min_exponent)
        if self.exponent is None:
            self.exponent, self.first = exponent, math.floor(math.ldexp(lo, -exponent))
        elif exponent > self.exponent:
            self._widen(exponent)
        index = np.floor(np.ldexp(points, -self.exponent)).astype(np.int64)
        first = min(self.first, math.floor(math.ldexp(lo, -self.exponent)))
        size = max(self.first + self.counts.size, math.floor(math.ldexp(hi, -self.exponent)) + 1) - first
        counts = np.zeros(size, np.int64)
        counts[self.first - first:self.first - first + self.counts.size] = self.counts
        counts += np.bincount(index - first, weights=weights, minlength=size).astype(np.int64)
        self.first, self.counts = first, counts

    def _exponent(self, lo: float, hi: float, min_exponent: int | None) -> int:
        """The narrowest allowed width 2**e putting [lo, hi] in at most MAX_BINS aligned bins: never
        narrower than now, than ``min_exponent``, than 1 for integers, or than a float64's resolution
        at the range's magnitude."""
        e = 0 if self.integers else math.frexp(max(abs(lo), abs(hi)))[1] - 53
        if hi > lo:
            e = max(e, math.floor(math.log2((hi - lo) / self.MAX_BINS)))
        for bound in (self.exponent, min_exponent):
            if bound is not None:
                e = max(e, bound)
        while math.floor(math.ldexp(hi, -e)) - math.floor(math.ldexp(lo, -e)) + 1 > self.MAX_BINS:
            e += 1
        return e

    def _widen(self, exponent: int) -> None:
        index = (self.first + np.arange(self.counts.size, dtype=np.int64)) >> (exponent - self.exponent)
        self.first = int(index[0])
        self.counts = np.bincount(index - self.first, weights=self.counts).astype(np.int64)
        self.exponent = exponent

    @classmethod
    def from_dict(cls, recorded: dict[str, Any]) -> "Histogram":
        """A histogram as ``to_dict`` recorded it."""
        edges, counts = recorded["edges"], recorded["counts"]
        out = cls()
        out.exponent = math.frexp(edges[1] - edges[0])[1] - 1
        out.first = round(math.ldexp(edges[0], -out.exponent))
        out.counts = np.asarray(counts, np.int64)
        return out

    def to_dict(self) -> dict[str, Any] | None:
        if self.exponent is None:
            return None
        keep = np.flatnonzero(self.counts)
        counts = self.counts[keep[0]:keep[-1] + 1]
        first = self.first + int(keep[0])
        edges = [math.ldexp(first + i, self.exponent) for i in range(counts.size + 1)]
        return {"edges": edges, "counts": counts.tolist()}


class TopValues:
    """Misra-Gries counters of a categorical column's values (see the module docs)."""

    CAPACITY = 1024

    def __init__(self) -> None:
        self.table: pa.Table | None = None  # columns "value", "count"
        self.error = 0

    def add(self, values: pa.Array, counts: pa.Array) -> None:
        """A chunk's distinct non-null values and how often each occurs (``pyarrow.compute.value_counts``)."""
        if len(values) == 0:
            return
        values, counts_np = self._prune(values, counts.to_numpy(zero_copy_only=False).astype(np.int64))
        if self.table is not None:  # add to the values held, append the new ones
            held_values, held_counts = self.table.column("value").combine_chunks(), self.table.column("count").to_numpy()
            where = pc.index_in(values, value_set=held_values)
            found = where.is_valid().to_numpy(zero_copy_only=False)
            held_counts = held_counts + np.bincount(where.drop_null().to_numpy(zero_copy_only=False),
                                                    weights=counts_np[found], minlength=len(held_values)
                                                    ).astype(np.int64)
            values, counts_np = self._prune(pa.concat_arrays([held_values, values.filter(pa.array(~found))]),
                                            np.concatenate([held_counts, counts_np[~found]]))
        self.table = pa.table({"value": values, "count": pa.array(counts_np, pa.int64())})

    def _prune(self, values: pa.Array, counts: np.ndarray) -> tuple[pa.Array, np.ndarray]:
        """At most CAPACITY counters: all less the (CAPACITY + 1)-th largest count, those left above 0
        (a chunk is pruned before it is merged: summaries of parts merge into one of the whole)."""
        if len(values) <= self.CAPACITY:
            return values, counts
        threshold = int(np.partition(counts, -(self.CAPACITY + 1))[-(self.CAPACITY + 1)])
        keep = counts > threshold
        self.error += threshold
        return values.filter(pa.array(keep)), counts[keep] - threshold

    def top(self, n: int) -> list[list[Any]]:
        """The ``n`` most frequent values with their counts, most frequent first (ties by value)."""
        if self.table is None:
            return []
        best = self.table.sort_by([("count", "descending"), ("value", "ascending")]).slice(0, n)
        return [[v, c] for v, c in zip(best.column("value").to_pylist(), best.column("count").to_pylist())]


def align(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[float], list[int], list[int]]:
    """Two recorded histograms on common bins (the wider width, over both ranges), exactly: (edges,
    counts of ``a``, counts of ``b``). What compares two runs' distributions (drift)."""
    both = Histogram.from_dict(a)
    both.merge(Histogram.from_dict(b))
    out = []
    for recorded in (a, b):
        h = Histogram()
        h.exponent, h.first, h.counts = both.exponent, both.first, np.zeros(both.counts.size, np.int64)
        h.merge(Histogram.from_dict(recorded))
        out.append(h.counts.tolist())
    edges = [math.ldexp(both.first + i, both.exponent) for i in range(both.counts.size + 1)]
    return edges, out[0], out[1]
