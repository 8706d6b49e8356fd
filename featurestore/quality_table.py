"""``featurestore stats``'s terminal view of a view's quality records: its runs (rows, checks), then the
column statistics of the newest run that has them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table

if TYPE_CHECKING:
    from featurestore.quality_runs import QualityRun


def _count(n: Any) -> str:
    return "-" if n is None else f"{n:,}"


def _number(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        return "-" + _age(-seconds)
    parts, rest = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    if rest or not parts:
        parts.append(f"{rest}s")
    return " ".join(parts[:2])


def _checks(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return "-"
    return "\n".join(f"{c.get('name')}: {c.get('action')} {_count(c.get('rows_failed'))}/{_count(c.get('rows_checked'))}"
                     for c in checks)


def runs_table(view: str, runs: list["QualityRun"]) -> Table:
    table = Table(title=f"{view}: {len(runs)} runs", title_justify="left")
    for name in ("started (UTC)", "kind", "seconds", "rows in", "rows written", "checks (failed/checked)"):
        table.add_column(name, justify="right" if name in ("seconds", "rows in", "rows written") else "left",
                         no_wrap=name != "checks (failed/checked)")
    for r in runs:
        table.add_row(r.started.strftime("%Y-%m-%d %H:%M:%S"), r.kind, f"{(r.ended - r.started).total_seconds():.1f}",
                      _count(r.rows_in), _count(r.rows_written), _checks(r.checks))
    return table


def columns_table(run: "QualityRun") -> Table:
    table = Table(title=f"columns, run of {run.started:%Y-%m-%d %H:%M:%S} UTC ({run.kind})", title_justify="left")
    for name in ("column", "rows", "nulls", "min", "p50", "max", "mean", "stddev", "distinct", "fresh", "top"):
        table.add_column(name, justify="left" if name in ("column", "top") else "right",
                         no_wrap=name != "top")
    for column, s in (run.stats or {}).items():
        rows, nulls = s.get("rows") or 0, s.get("nulls") or 0
        share = f" ({100 * nulls / rows:.1f}%)" if rows and nulls else ""
        median = (s.get("quantiles") or {}).get("p50")
        top = ", ".join(f"{v}: {c:,}" for v, c in (s.get("top") or [])[:3])
        table.add_row(column, _count(rows), _count(nulls) + share, _number(s.get("min")), _number(median),
                      _number(s.get("max")), _number(s.get("mean")), _number(s.get("stddev")),
                      _count(s.get("distinct")), _age(s.get("freshness_seconds")), top or "")
    return table


def render(view: str, runs: list["QualityRun"]) -> Group:
    """The runs, oldest first, then the newest run's column statistics (when any run has them)."""
    parts: list[Any] = [runs_table(view, runs)]
    with_stats = [r for r in runs if r.stats]
    if with_stats:
        parts.append(columns_table(with_stats[-1]))
    return Group(*parts)


def to_json(runs: list["QualityRun"]) -> str:
    return json.dumps([{**vars(r), "started": r.started.isoformat(), "ended": r.ended.isoformat()} for r in runs],
                      indent=1)
