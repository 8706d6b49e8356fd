"""The drift statistics against references written here by hand in plain Python, on randomized data:
PSI on the baseline's deciles and over categories, the Kolmogorov-Smirnov distance over the sorted
union of values and its exact p-value by enumerating every split of the pooled sample, chi-square
from its definition with the p-value from the closed forms of the chi-square survival function."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from featurestore import drift_stats

EPS = drift_stats.EPSILON


def ref_quantile(values: list[float], p: float) -> float:
    """The p-quantile by linear interpolation between order statistics (position p * (n - 1))."""
    s = sorted(values)
    h = p * (len(s) - 1)
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def ref_psi(baseline_shares: list[float], recent_shares: list[float]) -> float:
    total = 0.0
    for b, r in zip(baseline_shares, recent_shares):
        b, r = max(b, EPS), max(r, EPS)
        total += (r - b) * math.log(r / b)
    return total


def ref_psi_numeric(baseline: list[float], recent: list[float]) -> float:
    cuts = sorted({ref_quantile(baseline, k / 10) for k in range(1, 10)})

    def shares(values: list[float]) -> list[float]:
        counts = [0] * (len(cuts) + 1)
        for v in values:  # bin i holds cuts[i-1] < v <= cuts[i]
            counts[sum(1 for c in cuts if c < v)] += 1
        return [c / len(values) for c in counts]

    return ref_psi(shares(baseline), shares(recent))


def ref_ks(a: list[float], b: list[float]) -> float:
    """max |F_a(x) - F_b(x)| over every value x of either sample."""
    return max(abs(sum(v <= x for v in a) / len(a) - sum(v <= x for v in b) / len(b)) for x in set(a) | set(b))


def ref_ks_exact_pvalue(a: list[float], b: list[float]) -> float:
    """P(D >= observed) over all ways of splitting the pooled values into samples of the same sizes."""
    observed = ref_ks(a, b)
    pooled = a + b
    at_least = total = 0
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        picked = set(chosen)
        first = [pooled[i] for i in picked]
        second = [pooled[i] for i in range(len(pooled)) if i not in picked]
        total += 1
        at_least += ref_ks(first, second) >= observed - 1e-12
    return at_least / total


def ref_chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for a chi-square variable: closed forms for even dof, the erfc recurrence for odd."""
    if dof % 2 == 0:
        return math.exp(-x / 2) * sum((x / 2) ** j / math.factorial(j) for j in range(dof // 2))
    sf, k = math.erfc(math.sqrt(x / 2)), 1
    while k < dof:
        sf += (x / 2) ** (k / 2) * math.exp(-x / 2) / math.gamma(k / 2 + 1)
        k += 2
    return sf


def ref_lumped(baseline: dict, recent: dict, top: int) -> tuple[dict, dict]:
    total = {v: baseline.get(v, 0) + recent.get(v, 0) for v in set(baseline) | set(recent)}
    if len(total) <= top:
        return baseline, recent
    kept = sorted(total, key=lambda v: (-total[v], str(v)))[:top]
    out = []
    for counts in (baseline, recent):
        lumped = {v: counts[v] for v in kept if v in counts}
        rest = sum(n for v, n in counts.items() if v not in kept)
        if rest:
            lumped[drift_stats.OTHER] = rest
        out.append(lumped)
    return out[0], out[1]


def ref_categorical(baseline: dict, recent: dict) -> dict[str, float]:
    baseline, recent = ref_lumped(baseline, recent, drift_stats.TOP_CATEGORIES)
    categories = list(set(baseline) | set(recent))
    nb, nr = sum(baseline.values()), sum(recent.values())
    psi = ref_psi([baseline.get(c, 0) / nb for c in categories], [recent.get(c, 0) / nr for c in categories])
    chi2 = 0.0
    for c in categories:
        column = baseline.get(c, 0) + recent.get(c, 0)
        for observed, row in ((baseline.get(c, 0), nb), (recent.get(c, 0), nr)):
            expected = row * column / (nb + nr)
            chi2 += (observed - expected) ** 2 / expected
    dof = len(categories) - 1
    return {"psi": psi, "chi2": chi2, "chi2_pvalue": ref_chi2_sf(chi2, dof) if dof else 1.0}


def _numbers(rng: random.Random, n: int, shape: str, shift: float) -> list[float]:
    if shape == "normal":
        return [rng.gauss(10 + shift, 3) for _ in range(n)]
    if shape == "ints":  # many ties: cut points repeat and merge
        return [float(rng.randrange(0, 6) + round(shift)) for _ in range(n)]
    return [rng.expovariate(1 / (2 + shift)) for _ in range(n)]


@pytest.mark.parametrize("seed", range(12))
def test_numeric_statistics_match_the_references(seed):
    rng = random.Random(seed)
    shape = ["normal", "ints", "exp"][seed % 3]
    shift = rng.choice([0.0, 0.3, 1.0, 3.0])
    baseline = _numbers(rng, rng.randrange(20, 300), shape, 0.0)
    recent = _numbers(rng, rng.randrange(20, 300), shape, shift)
    got = drift_stats.numeric(np.array(baseline), np.array(recent))
    assert got["psi"] == pytest.approx(ref_psi_numeric(baseline, recent), rel=1e-9, abs=1e-12)
    assert got["ks"] == pytest.approx(ref_ks(baseline, recent), rel=1e-12, abs=1e-12)
    assert 0.0 <= got["ks_pvalue"] <= 1.0


@pytest.mark.parametrize("seed", range(8))
def test_ks_exact_pvalue_matches_enumerating_every_split(seed):
    rng = random.Random(100 + seed)
    a = [rng.gauss(0, 1) for _ in range(rng.randrange(4, 8))]
    b = [rng.gauss(rng.choice([0.0, 1.5]), 1) for _ in range(rng.randrange(4, 8))]
    got = drift_stats.numeric(np.array(a), np.array(b))
    assert got["ks"] == pytest.approx(ref_ks(a, b), abs=1e-12)
    assert got["ks_pvalue"] == pytest.approx(ref_ks_exact_pvalue(a, b), rel=1e-6, abs=1e-9)


def ref_kolmogorov_sf(lam: float) -> float:
    """P(K > lam) of the Kolmogorov distribution: 2 * sum((-1)^(k-1) * exp(-2 k^2 lam^2))."""
    return min(1.0, max(0.0, 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))))


@pytest.mark.parametrize("seed", range(6))
def test_ks_large_sample_pvalue_is_the_kolmogorov_tail(seed):
    """Past exact enumeration the p-value follows the Kolmogorov distribution; Stephens' scaling of the
    distance, (sqrt(n) + 0.12 + 0.11 / sqrt(n)) * D with n = n1 n2 / (n1 + n2), is within 0.02 of it."""
    rng = random.Random(500 + seed)
    a = [rng.gauss(0, 1) for _ in range(rng.randrange(200, 800))]
    b = [rng.gauss(rng.choice([0.0, 0.1, 0.2]), 1) for _ in range(rng.randrange(200, 800))]
    got = drift_stats.numeric(np.array(a), np.array(b))
    n = len(a) * len(b) / (len(a) + len(b))
    assert got["ks_pvalue"] == pytest.approx(
        ref_kolmogorov_sf((math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * ref_ks(a, b)), abs=0.02)


@pytest.mark.parametrize("seed", range(12))
def test_categorical_statistics_match_the_references(seed):
    rng = random.Random(1000 + seed)
    width = rng.choice([2, 3, 5, 8, 70])  # 70: more than TOP_CATEGORIES, the rest lumped
    names = [f"c{i}" for i in range(width)]
    weights_b = [rng.random() for _ in names]
    weights_r = [w * rng.choice([1.0, 1.0, 0.3, 3.0]) for w in weights_b]
    baseline: dict = {}
    recent: dict = {}
    for counts, weights, n in ((baseline, weights_b, rng.randrange(50, 3000)), (recent, weights_r, rng.randrange(50, 3000))):
        for v in rng.choices(names, weights, k=n):
            counts[v] = counts.get(v, 0) + 1
    if seed % 4 == 0:
        recent["unseen"] = rng.randrange(1, 40)  # a category only recent data has
    got = drift_stats.categorical(baseline, recent)
    want = ref_categorical(baseline, recent)
    for name in ("psi", "chi2"):
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), name
    assert got["chi2_pvalue"] == pytest.approx(want["chi2_pvalue"], rel=1e-6, abs=1e-12)


def test_booleans_and_a_single_category():
    assert drift_stats.categorical({True: 5}, {True: 9}) == {"psi": 0.0, "chi2": 0.0, "chi2_pvalue": 1.0}
    got = drift_stats.categorical({True: 30, False: 70}, {True: 60, False: 40})
    assert got == pytest.approx(ref_categorical({True: 30, False: 70}, {True: 60, False: 40}))


def test_same_distribution_stays_under_the_default_bounds_and_a_shift_crosses_them():
    rng = np.random.default_rng(7)
    same = drift_stats.numeric(rng.normal(0, 1, 5000), rng.normal(0, 1, 5000))
    shifted = drift_stats.numeric(rng.normal(0, 1, 5000), rng.normal(0.5, 1, 5000))
    assert same["psi"] < 0.05 and same["ks"] < 0.05
    assert shifted["psi"] > 0.2 and shifted["ks"] > 0.1
