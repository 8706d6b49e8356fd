"""Synthetic quality runs for the report tests: random rows per run (a log-normal amount that shifts
upwards half way through, a normal score, a country and a flag with nulls), summarised with numpy
into the record shape of featurestore/quality_runs.py, with check outcomes counted on the same rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from featurestore.quality_runs import QualityRun

QUANTILES = {"p01": 1, "p05": 5, "p25": 25, "p50": 50, "p75": 75, "p95": 95, "p99": 99}


def numeric_stats(values: np.ndarray, freshness: float, bins: int = 20) -> dict:
    present = values[~np.isnan(values)]
    counts, edges = np.histogram(present, bins=bins)
    return {"rows": int(len(values)), "nulls": int(np.isnan(values).sum()), "min": float(present.min()),
            "max": float(present.max()), "mean": float(present.mean()), "stddev": float(present.std(ddof=1)),
            "quantiles": {k: float(np.percentile(present, q)) for k, q in QUANTILES.items()},
            "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
            "distinct": int(len(np.unique(present))), "freshness_seconds": freshness}


def category_stats(values: list, freshness: float) -> dict:
    present = [v for v in values if v is not None]
    labels, counts = np.unique(np.array([str(v) for v in present]), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    top = [[_typed(labels[i], present), int(counts[i])] for i in order[:10]]
    return {"rows": len(values), "nulls": len(values) - len(present), "min": None, "max": None, "mean": None,
            "stddev": None, "quantiles": None, "histogram": {"top": top}, "distinct": int(len(labels)),
            "freshness_seconds": freshness}


def _typed(label: str, present: list):
    return label == "True" if isinstance(present[0], bool) else label


def synthetic_runs(rng: np.random.Generator, count: int = 14) -> list[QualityRun]:
    start = datetime(2026, 11, 20, tzinfo=timezone.utc) + timedelta(minutes=int(rng.integers(0, 600)))
    runs = []
    for i in range(count):
        started = start + timedelta(hours=12 * i, minutes=int(rng.integers(0, 30)))
        rows = int(rng.integers(3_000, 6_000))
        shift = 0.6 if i >= count // 2 else 0.0
        amount = rng.lognormal(3.0 + shift, 0.5, rows) - rng.choice([0.0, 40.0], rows, p=[0.98, 0.02])
        amount[rng.random(rows) < rng.uniform(0, 0.04)] = np.nan
        score = rng.normal(0.5, 0.15, rows)
        score[rng.random(rows) < 0.01] = np.nan
        weights = [0.5, 0.3, 0.15, 0.05] if i < count // 2 else [0.35, 0.35, 0.2, 0.1]
        country = list(rng.choice(["US", "DE", "FR", "BR"], rows, p=weights))
        country = [None if rng.random() < 0.02 else c for c in country]
        flag = [bool(v) for v in rng.random(rows) < 0.07]
        freshness = float(rng.uniform(600, 7200) * (6 if i == count - 3 else 1))
        negative = int((amount < 0).sum())
        unknown = sum(1 for c in country if c == "BR")
        checks = [
            {"name": "amount_non_negative", "on_fail": "drop", "rows_checked": rows, "rows_failed": negative,
             "action": "dropped" if negative else "passed"},
            {"name": "country_known", "on_fail": "warn", "rows_checked": rows, "rows_failed": unknown,
             "action": "warned" if unknown else "passed"},
            {"name": "row_count", "on_fail": "fail", "rows_checked": rows,
             "rows_failed": rows if i == 3 else 0, "action": "failed" if i == 3 else "passed"},
        ]
        stats = {"amount": numeric_stats(amount, freshness), "score": numeric_stats(score, freshness),
                 "country": category_stats(country, freshness), "is_fraud": category_stats(flag, freshness)}
        runs.append(QualityRun(kind="materialize", started=started, ended=started + timedelta(minutes=3),
                               rows_in=rows, rows_written=0 if i == 3 else rows - negative, checks=checks,
                               stats=stats))
    return runs


def synthetic_drift(rng: np.random.Generator) -> list[dict]:
    out = []
    for feature, statistic, threshold, scale in (("amount", "psi", 0.2, 0.5), ("score", "psi", 0.2, 0.1),
                                                 ("country", "psi", 0.2, 0.3), ("is_fraud", "psi", 0.25, 0.05),
                                                 ("amount", "ks", 0.1, 0.3), ("score", "ks", 0.1, 0.05),
                                                 ("country", "chi2", 0.05, 0.2)):
        value = float(rng.uniform(0, scale * 2))
        out.append({"feature": feature, "statistic": statistic, "value": value, "threshold": threshold,
                    "drifted": value > threshold})
    return out
