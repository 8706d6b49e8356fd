"""The drift statistics between two samples of one feature: a baseline and recent values.

Numbers (integers, floats, times as epoch microseconds):

- **PSI** on the baseline's deciles: the cut points are the baseline's 10th..90th percentiles
  (numpy's default linear interpolation), repeated cut points merged (a feature with few distinct
  values gets fewer bins), bins ``(-inf, c1], (c1, c2], ..., (c9, inf)``. PSI is
  ``sum((r - b) * ln(r / b))`` over the bins' shares ``b`` (baseline) and ``r`` (recent); a share of 0
  counts as ``EPSILON`` (1e-4), so a bin empty on one side adds a large but finite term.
- **Kolmogorov-Smirnov**: the largest distance between the two empirical distribution functions,
  and its two-sided p-value (``scipy.stats.ks_2samp``: exact for small samples, asymptotic else).

Categories (strings, booleans), from value counts:

- **PSI** over the union of categories seen on either side, with the same ``EPSILON``: a category
  only recent data has (unseen in the baseline) weighs ``r * ln(r / EPSILON)``.
- **Chi-square** test of homogeneity on the 2 x k table of counts (``scipy.stats.chi2_contingency``,
  without Yates' correction): an unseen category is a column with a zero in the baseline row, which
  the test takes as it is (its expected counts come from the column total, so they are not zero).
  Fewer than two categories in all: statistic 0, p-value 1.

Beyond ``TOP_CATEGORIES`` categories (by count over both samples, ties by value), the rest are
counted together as one category, ``OTHER``, so an identifier-like column gives a bounded table.
Nulls are not values here: callers drop them and report null counts beside the statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as scipy_stats

BINS = 10
EPSILON = 1e-4
TOP_CATEGORIES = 50
OTHER = "(other)"


def quantile_cuts(baseline: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The distinct interior quantiles (deciles for 10 bins) of ``baseline``, ascending."""
    return np.unique(np.quantile(baseline, np.arange(1, bins) / bins))


def psi_from_shares(baseline: np.ndarray, recent: np.ndarray) -> float:
    """``sum((r - b) * ln(r / b))`` with shares below ``EPSILON`` raised to it."""
    b = np.maximum(baseline, EPSILON)
    r = np.maximum(recent, EPSILON)
    return float(np.sum((r - b) * np.log(r / b)))


def _shares(counts: np.ndarray) -> np.ndarray:
    return counts / counts.sum()


def numeric(baseline: np.ndarray, recent: np.ndarray) -> dict[str, float]:
    """``psi``, ``ks`` and ``ks_pvalue`` of two non-empty samples of numbers (no nulls, no NaN)."""
    cuts = quantile_cuts(baseline)
    counts_b = np.bincount(np.searchsorted(cuts, baseline, side="left"), minlength=len(cuts) + 1)
    counts_r = np.bincount(np.searchsorted(cuts, recent, side="left"), minlength=len(cuts) + 1)
    ks = scipy_stats.ks_2samp(baseline, recent)
    return {"psi": psi_from_shares(_shares(counts_b), _shares(counts_r)), "ks": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue)}


def top_categories(baseline: dict[Any, int], recent: dict[Any, int], top: int = TOP_CATEGORIES
                   ) -> tuple[dict[Any, int], dict[Any, int]]:
    """Both counts with every category past the ``top`` most frequent (over both) merged into ``OTHER``."""
    total: dict[Any, int] = {}
    for counts in (baseline, recent):
        for value, n in counts.items():
            total[value] = total.get(value, 0) + n
    if len(total) <= top:
        return baseline, recent
    kept = set(sorted(total, key=lambda v: (-total[v], str(v)))[:top])

    def merged(counts: dict[Any, int]) -> dict[Any, int]:
        out = {v: n for v, n in counts.items() if v in kept}
        rest = sum(n for v, n in counts.items() if v not in kept)
        if rest:
            out[OTHER] = out.get(OTHER, 0) + rest
        return out

    return merged(baseline), merged(recent)


def categorical(baseline: dict[Any, int], recent: dict[Any, int]) -> dict[str, float]:
    """``psi``, ``chi2`` and ``chi2_pvalue`` from the value counts of two non-empty samples."""
    baseline, recent = top_categories(baseline, recent)
    categories = sorted(set(baseline) | set(recent), key=str)
    counts_b = np.array([baseline.get(c, 0) for c in categories], dtype=np.float64)
    counts_r = np.array([recent.get(c, 0) for c in categories], dtype=np.float64)
    out = {"psi": psi_from_shares(_shares(counts_b), _shares(counts_r))}
    if len(categories) < 2:
        return out | {"chi2": 0.0, "chi2_pvalue": 1.0}
    test = scipy_stats.chi2_contingency(np.vstack([counts_b, counts_r]), correction=False)
    return out | {"chi2": float(test.statistic), "chi2_pvalue": float(test.pvalue)}
