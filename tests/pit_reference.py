"""A brute-force point-in-time join, written for clarity, as the oracle for property tests."""

from __future__ import annotations

from datetime import datetime, timedelta


def reference_join(entity_rows: list[dict], feature_rows: list[dict], keys: list[str], features: list[str],
                   ttl: timedelta | None, ts: str = "event_timestamp",
                   created: str | None = "created") -> list[list[set]]:
    """For each entity row, per feature, the set of acceptable values (more than one only when rows
    tie on both event and created time)."""
    out = []
    for row in entity_rows:
        t: datetime = row["event_timestamp"]
        candidates = [f for f in feature_rows
                      if all(f[k] == row[k] and row[k] is not None for k in keys)
                      and f[ts] <= t and (ttl is None or f[ts] >= t - ttl)]
        if not candidates:
            out.append([{None} for _ in features])
            continue

        def order(f):
            c = f.get(created) if created else None
            return (f[ts], c if c is not None else datetime.min.replace(tzinfo=f[ts].tzinfo))

        best = max(order(f) for f in candidates)
        winners = [f for f in candidates if order(f) == best]
        out.append([{w[name] for w in winners} for name in features])
    return out
