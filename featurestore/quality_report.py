"""Charts of a view's quality runs (``featurestore stats VIEW --plot stats.html``): per-feature
distributions over time, null rate and freshness lines, rows failing each check, and drift per feature.

``write_html`` writes one self-contained file: the charts are inline SVG, with no script, font, style
sheet or image fetched from anywhere (a Content-Security-Policy says so to the browser), so the report
opens offline and can be mailed or attached to a ticket. ``write_png`` writes the same charts as PNG.
matplotlib draws them (its own DejaVu fonts, so the output looks the same on every machine); it is
imported only when a chart is drawn.

Input: ``QualityRun`` records (``featurestore/quality_runs.py``) whose ``stats`` map each feature to
``{"rows", "nulls", "min", "max", "mean", "stddev", "quantiles", "histogram", "distinct",
"freshness_seconds"}`` (``histogram`` is ``{"edges", "counts"}`` for numbers, ``{"top": [[value, count],
...]}`` otherwise), and drift results as a list of ``{"feature", "statistic", "value", "threshold",
"drifted"}``.
"""

from __future__ import annotations

import html
import io
import math
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from featurestore.quality_runs import QualityRun

UTC = timezone.utc
# Okabe and Ito's palette: told apart by readers with any common colour-vision deficiency.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
ALERT = "#D55E00"
CALM = "#0072B2"
INK = "#222222"
MUTED = "#6b6b6b"
WIDTH_IN = 5.0  # inches: on a phone the chart is scaled to the screen, so its text stays readable
HEATMAP_BINS = 40
# More runs than these are summed into this many equal stretches of time (columns, bars, points).
MAX_COLUMNS = 60
MAX_BARS = 90
MAX_POINTS = 240
TOP_VALUES = 6

_STYLE = {
    "font.family": "DejaVu Sans", "font.size": 11, "axes.titlesize": 12.5, "axes.titleweight": "bold",
    "axes.titlelocation": "left", "axes.labelsize": 11, "axes.labelcolor": INK, "axes.edgecolor": "#999999",
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "axes.grid.axis": "y",
    "grid.color": "#e3e3e3", "grid.linewidth": 0.8, "xtick.color": INK, "ytick.color": INK,
    "legend.frameon": False, "legend.fontsize": 10, "figure.facecolor": "white", "svg.fonttype": "path",
    "text.parse_math": False, "timezone": "UTC",
}


def _styled():
    """The report's look (fonts, colours, grid), for drawing and saving alike, whatever the caller's
    matplotlib settings."""
    import matplotlib

    return matplotlib.rc_context(_STYLE)


@dataclass
class Chart:
    """One drawn chart: ``key`` names its PNG file and HTML element, ``description`` is its text
    alternative (what a screen reader says, and the caption)."""

    key: str
    section: str
    title: str
    description: str
    figure: "Figure"


# ------------------------------------------------------------------------------------------ entry points


def write_html(view_name: str, runs: Sequence["QualityRun"], path: str | os.PathLike[str],
               drift: list[dict[str, Any]] | None = None) -> Path:
    """Write the view's quality report to ``path`` as one self-contained HTML file; returns its path."""
    with _styled():
        charts = build_charts(runs, drift)
        document = _document(view_name, runs, drift, charts)
    target = Path(path)
    _write_atomically(target, document.encode("utf-8"))
    return target


def write_png(view_name: str, runs: Sequence["QualityRun"], path_or_dir: str | os.PathLike[str],
              drift: list[dict[str, Any]] | None = None, dpi: int = 150) -> list[Path]:
    """Write the charts as PNG: into a directory, one file per chart (``null-rate.png``,
    ``histogram-amount.png``, ...), or, when the path ends in ``.png``, all of them stacked in one
    image. Returns the files written."""
    from matplotlib import image
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    target = Path(path_or_dir)
    with _styled():
        charts = build_charts(runs, drift)
        if target.suffix.lower() == ".png":
            images = []
            for chart in charts:
                canvas = FigureCanvasAgg(chart.figure)
                chart.figure.set_dpi(dpi)
                canvas.draw()
                images.append(np.asarray(canvas.buffer_rgba())[..., :3])
            if not images:
                images.append(np.full((40, 400, 3), 255, np.uint8))
            width = max(img.shape[1] for img in images)
            padded = [np.pad(img, ((0, 24), (0, width - img.shape[1]), (0, 0)), constant_values=255)
                      for img in images]
            buffer = io.BytesIO()
            image.imsave(buffer, np.concatenate(padded), format="png",
                         metadata={"Software": None, "Title": f"Quality of {view_name}"})
            _write_atomically(target, buffer.getvalue())
            return [target]
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for chart in charts:
            buffer = io.BytesIO()
            chart.figure.savefig(buffer, format="png", dpi=dpi, metadata={
                "Software": None, "Title": f"{view_name}: {chart.title}", "Description": chart.description})
            file = target / f"{chart.key}.png"
            _write_atomically(file, buffer.getvalue())
            written.append(file)
        return written


def build_charts(runs: Sequence["QualityRun"], drift: list[dict[str, Any]] | None = None) -> list[Chart]:
    """Every chart the data allows, in report order: drift, checks, null rate, freshness, then one
    distribution chart per feature (numbers first)."""
    runs = sorted(runs, key=lambda r: _utc(r.started))
    drift = _validated_drift(drift)
    numeric, categorical = _features(runs)
    features = sorted(set(numeric) | set(categorical))
    colours = {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(features)}
    charts: list[Chart] = []
    with _styled():
        if drift:
            charts.append(_drift_chart(drift))
        if any(r.checks for r in runs):
            charts.append(_checks_chart(runs))
        if features:
            charts.append(_null_rate_chart(runs, features, colours))
            freshness = _freshness_chart(runs, features, colours)
            if freshness is not None:
                charts.append(freshness)
        charts += [_histogram_chart(runs, feature) for feature in numeric]
        charts += [_top_values_chart(runs, feature) for feature in categorical]
    used: set[str] = set()
    for chart in charts:  # keys become file names and HTML ids: keep them distinct and plain
        key = re.sub(r"[^A-Za-z0-9_.-]+", "_", chart.key).strip("._") or "chart"
        while key in used:
            key += "_"
        used.add(key)
        chart.key = key
    return charts


def svg_charts(runs: Sequence["QualityRun"], drift: list[dict[str, Any]] | None = None) -> list[tuple[Chart, str]]:
    """Every chart of ``build_charts`` with its inline ``<svg>`` element (ids prefixed by the chart's
    key, titled and described by ``<key>-caption`` for screen readers), for embedding in a page."""
    with _styled():
        return [(chart, _inline_svg(chart)) for chart in build_charts(runs, drift)]


# ------------------------------------------------------------------------------------------ input


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _features(runs: Sequence["QualityRun"]) -> tuple[list[str], list[str]]:
    """Feature columns seen in any run's stats, split into numeric (a histogram with edges) and the
    rest (a top-values list)."""
    numeric: set[str] = set()
    categorical: set[str] = set()
    for run in runs:
        for feature, stats in (run.stats or {}).items():
            if not isinstance(stats, dict):
                raise ValueError(f"quality run {run.run_id}: stats[{feature!r}] is {type(stats).__name__}, "
                                 "not a dict of statistics")
            histogram = stats.get("histogram") or {}
            if "edges" in histogram:
                numeric.add(feature)
            elif "top" in histogram:
                categorical.add(feature)
            elif stats.get("mean") is not None:
                numeric.add(feature)
            else:
                categorical.add(feature)
    return sorted(numeric), sorted(categorical - numeric)


def _validated_drift(drift: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    rows = []
    for i, item in enumerate(drift or []):
        missing = [k for k in ("feature", "statistic", "value", "threshold", "drifted") if k not in item]
        if missing:
            raise ValueError(f"drift[{i}] lacks {', '.join(missing)} (each entry needs feature, statistic, "
                             "value, threshold, drifted)")
        rows.append(item)
    return rows


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _series(runs: Sequence["QualityRun"], feature: str, key: str) -> np.ndarray:
    return np.array([_number(((r.stats or {}).get(feature) or {}).get(key)) for r in runs], dtype=float)


def rebin(edges: Sequence[float], counts: Sequence[float], grid: np.ndarray) -> np.ndarray:
    """Counts of a histogram moved onto another grid of bin edges, taking values as spread evenly
    within each bin (a bin of zero width is a point). The total is kept for bins inside the grid."""
    edges = np.asarray(edges, dtype=float)
    counts = np.asarray(counts, dtype=float)
    out = np.zeros(len(grid) - 1)
    for lo, hi, count in zip(edges[:-1], edges[1:], counts):
        if count == 0:
            continue
        if hi <= lo:
            index = min(max(int(np.searchsorted(grid, lo, side="right")) - 1, 0), len(out) - 1)
            out[index] += count
            continue
        overlap = np.clip(np.minimum(grid[1:], hi) - np.maximum(grid[:-1], lo), 0, None)
        out += count * overlap / (hi - lo)
    return out


def _histogram_of(run: "QualityRun", feature: str) -> tuple[np.ndarray, np.ndarray] | None:
    histogram = ((run.stats or {}).get(feature) or {}).get("histogram") or {}
    if "edges" not in histogram:
        return None
    edges = np.asarray(histogram["edges"], dtype=float)
    counts = np.asarray(histogram.get("counts", []), dtype=float)
    if len(edges) != len(counts) + 1:
        raise ValueError(f"quality run {run.run_id}: stats[{feature!r}]['histogram'] has {len(counts)} counts "
                         f"for {len(edges)} edges (a histogram needs one count fewer than edges)")
    if len(counts) == 0 or not np.all(np.isfinite(edges)):
        return None
    return edges, counts


# ------------------------------------------------------------------------------------------ time axis


def _date_numbers(times: Sequence[datetime]) -> np.ndarray:
    from matplotlib import dates

    return np.array([dates.date2num(_utc(t)) for t in times], dtype=float)


@dataclass
class _Span:
    """A stretch of time drawn as one point, bar or heat-map column, and the runs that started in it."""

    x: float  # matplotlib date number (days): the mean start of its runs, or its middle when empty
    left: float
    right: float
    runs: list["QualityRun"]


def _timeline(runs: Sequence["QualityRun"], limit: int) -> list[_Span]:
    """Runs grouped for drawing: a span per distinct start (its edges half way to the neighbours), or,
    with more starts than ``limit``, ``limit`` equal stretches of time (some possibly empty), so a week
    of stream commits stays a readable chart and a small file."""
    x = _date_numbers([r.started for r in runs])
    starts = np.unique(x)
    if len(starts) == 0:
        return []
    if len(starts) <= limit:
        if len(starts) == 1:
            edges = np.array([starts[0] - 1 / 48, starts[0] + 1 / 48])
        else:
            middles = (starts[:-1] + starts[1:]) / 2
            edges = np.concatenate([[2 * starts[0] - middles[0]], middles, [2 * starts[-1] - middles[-1]]])
        index = np.searchsorted(starts, x)
    else:
        edges = np.linspace(starts[0], starts[-1], limit + 1)
        index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, limit - 1)
    members: list[list[QualityRun]] = [[] for _ in range(len(edges) - 1)]
    for i, run in zip(index, runs):
        members[i].append(run)
    spans = []
    for i, group in enumerate(members):
        where = float(np.mean(x[index == i])) if group else float((edges[i] + edges[i + 1]) / 2)
        spans.append(_Span(where, float(edges[i]), float(edges[i + 1]), group))
    return spans


def _format_time_axis(ax, spans: list[_Span]) -> None:
    from matplotlib import dates

    locator = dates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator, show_offset=True))
    ax.set_xlabel("run start (UTC)")
    ax.set_xlim(spans[0].left, spans[-1].right)


def _when(t: datetime) -> str:
    return _utc(t).strftime("%Y-%m-%d %H:%M UTC")


def _new_figure(height: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH_IN, height), layout="constrained")


# ------------------------------------------------------------------------------------------ charts


def _drift_chart(drift: list[dict[str, Any]]) -> Chart:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    statistics = list(dict.fromkeys(str(d["statistic"]) for d in drift))
    per_stat = {s: [d for d in drift if str(d["statistic"]) == s] for s in statistics}
    heights = [max(len(items), 1) for items in per_stat.values()]
    fig = _new_figure(0.9 + sum(0.34 * h + 0.75 for h in heights))
    axes = fig.subplots(len(statistics), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, statistic in zip(axes, statistics):
        items = per_stat[statistic]
        y = np.arange(len(items))[::-1]
        values = np.array([_number(d["value"]) for d in items])
        thresholds = np.array([_number(d["threshold"]) for d in items])
        finite = np.concatenate([values, thresholds, [0.0]])
        top = float(np.max(finite[np.isfinite(finite)]))
        top = top if top > 0 else 1.0
        # An infinite value (PSI of a bin empty on one side) runs to the axis' end; none is drawn as 0.
        drawn = np.nan_to_num(values, nan=0.0, posinf=top * 1.45, neginf=0.0)
        ax.barh(y, drawn, height=0.62, color=[ALERT if d["drifted"] else CALM for d in items], zorder=2)
        for yi, value, end, threshold, item in zip(y, values, drawn, thresholds, items):
            label = "n/a" if math.isnan(value) else f"{value:.3g}" + ("  drifted" if item["drifted"] else "")
            ax.text(min(end, top * 1.2) + top * 0.015, yi, label, va="center", fontsize=9.5,
                    color=ALERT if item["drifted"] else INK, zorder=4,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1, "alpha": 0.85})
            if math.isfinite(threshold):
                ax.plot([threshold, threshold], [yi - 0.42, yi + 0.42], color=INK, linewidth=1.6,
                        linestyle=(0, (3, 2)), zorder=3)
        ax.set_yticks(y, [str(d["feature"]) for d in items])
        ax.set_ylim(-0.6, len(items) - 0.4)
        ax.set_xlim(0, top * 1.45)
        ax.set_xlabel(statistic)
        ax.grid(axis="x", color="#e3e3e3")
        ax.grid(axis="y", visible=False)
        ax.set_title(statistic, fontsize=11)
    handles = [Patch(color=CALM, label="within threshold"), Patch(color=ALERT, label="drifted"),
               Line2D([], [], color=INK, linewidth=1.6, linestyle=(0, (3, 2)), label="threshold")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3)
    fig.suptitle("Drift per feature", x=0.02, ha="left", fontweight="bold", fontsize=12)
    drifted = [d for d in drift if d["drifted"]]
    parts = [f"{d['feature']} ({d['statistic']} {_number(d['value']):.3g} over threshold "
             f"{_number(d['threshold']):.3g})" for d in drifted]
    description = (f"Drift per feature: {len(drifted)} of {len(drift)} results over their threshold"
                   + (": " + "; ".join(parts) if parts else "") + ".")
    return Chart("drift", "Drift and checks", "Drift per feature", description, fig)


def _checks_chart(runs: Sequence["QualityRun"]) -> Chart:
    names = list(dict.fromkeys(str(c.get("name")) for r in runs for c in r.checks))
    spans = [s for s in _timeline(runs, MAX_BARS) if s.runs]
    x = np.array([s.x for s in spans])
    width = min(s.right - s.left for s in spans) * 0.8
    failed = np.array([[sum(_failed_rows(r, name) for r in s.runs) for s in spans] for name in names])
    fig = _new_figure(3.4 + 0.22 * ((len(names) + 1) // 2))
    ax = fig.subplots()
    bottom = np.zeros(len(spans))
    for i, name in enumerate(names):
        ax.bar(x, failed[i], width=width, bottom=bottom, color=PALETTE[i % len(PALETTE)], label=name, zorder=2)
        bottom += failed[i]
    stopped = [i for i, s in enumerate(spans) if any(_stopped(r) for r in s.runs)]
    peak = bottom.max() if bottom.max() > 0 else 1.0
    if stopped:
        ax.scatter(x[stopped], bottom[stopped] + peak * 0.06, marker="v", s=48, color=ALERT, zorder=3,
                   label="run stopped (on_fail=fail)")
    if not bottom.any():
        ax.text(0.5, 0.5, f"no failing rows in {len(runs)} runs", transform=ax.transAxes, ha="center",
                color=MUTED)
    ax.set_ylim(0, peak * 1.2)
    ax.set_ylabel("failing rows (count)")
    ax.set_title("Rows failing each check")
    _format_time_axis(ax, spans)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    parts = []
    for name in names:
        per_run = [_failed_rows(r, name) for r in runs]
        actions = sorted({str(c.get("action")) for r in runs for c in r.checks if str(c.get("name")) == name}
                         - {"passed"})
        parts.append(f"{name}: {int(sum(per_run))} rows in {sum(1 for f in per_run if f > 0)} runs"
                     + (f" ({', '.join(actions)})" if actions else ""))
    runs_stopped = sum(1 for r in runs if _stopped(r))
    description = (f"Rows failing each check over {len(runs)} runs: " + "; ".join(parts)
                   + (f"; {runs_stopped} runs stopped by a failing check" if runs_stopped else "") + ".")
    return Chart("checks", "Drift and checks", "Rows failing each check", description, fig)


def _failed_rows(run: "QualityRun", name: str) -> float:
    value = sum(_number(c.get("rows_failed")) for c in run.checks if str(c.get("name")) == name)
    return 0.0 if math.isnan(value) else value


def _stopped(run: "QualityRun") -> bool:
    return any(c.get("action") == "failed" for c in run.checks)


def _sum(runs: Sequence["QualityRun"], feature: str, key: str) -> float:
    """The sum of a count over runs (NaN when no run has it)."""
    values = _series(runs, feature, key)
    return float(np.nansum(values)) if not np.all(np.isnan(values)) else math.nan


def _line_style(spans: list[_Span]) -> dict[str, Any]:
    return {"linewidth": 1.8, "zorder": 2, "marker": "o" if len(spans) <= 40 else None, "markersize": 3.5}


def _null_rate_chart(runs: Sequence["QualityRun"], features: list[str], colours: dict[str, str]) -> Chart:
    from matplotlib.ticker import PercentFormatter

    spans = [s for s in _timeline(runs, MAX_POINTS) if s.runs]
    x = np.array([s.x for s in spans])
    fig = _new_figure(3.4 + 0.22 * ((len(features) + 2) // 3))
    ax = fig.subplots()
    peak = 0.0
    latest = []
    worst: tuple[float, str, datetime] | None = None
    for feature in features:
        rows = np.array([_sum(s.runs, feature, "rows") for s in spans])
        nulls = np.array([_sum(s.runs, feature, "nulls") for s in spans])
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(rows > 0, nulls / rows * 100, np.nan)
        if np.all(np.isnan(rate)):
            continue
        ax.plot(x, rate, color=colours[feature], label=feature, **_line_style(spans))
        peak = max(peak, float(np.nanmax(rate)))
        i = int(np.nanargmax(rate))
        if worst is None or rate[i] > worst[0]:
            worst = (float(rate[i]), feature, spans[i].runs[0].started)
        latest.append(f"{feature} {rate[~np.isnan(rate)][-1]:.2f}%")
    ax.set_ylim(0, max(1.0, peak * 1.15))
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))
    ax.set_ylabel("null rate (% of rows)")
    ax.set_title("Null rate per feature")
    _format_time_axis(ax, spans)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)
    description = f"Null rate per feature over {len(runs)} runs."
    if worst is not None:
        description += (f" Highest: {worst[1]} {worst[0]:.2f}% ({_when(worst[2])})."
                        f" Latest: {', '.join(latest)}.")
    return Chart("null-rate", "Nulls and freshness", "Null rate per feature", description, fig)


def _freshness_unit(seconds: float) -> tuple[float, str]:
    for size, name in ((86400, "days"), (3600, "hours"), (60, "minutes")):
        if seconds >= 2 * size:
            return size, name
    return 1, "seconds"


def _freshness_chart(runs: Sequence["QualityRun"], features: list[str], colours: dict[str, str]) -> Chart | None:
    spans = [s for s in _timeline(runs, MAX_POINTS) if s.runs]
    series: dict[bytes, tuple[list[str], np.ndarray]] = {}
    for feature in features:
        per_span = [_series(s.runs, feature, "freshness_seconds") for s in spans]
        values = np.array([np.nan if np.all(np.isnan(v)) else np.nanmax(v) for v in per_span])  # the worst
        if np.all(np.isnan(values)):
            continue
        names, _ = series.setdefault(np.round(values, 3).tobytes(), ([], values))
        names.append(feature)
    if not series:
        return None
    x = np.array([s.x for s in spans])
    peak = max(float(np.nanmax(v)) for _, v in series.values())
    size, unit = _freshness_unit(peak)
    fig = _new_figure(3.4 + 0.22 * ((len(series) + 1) // 2))
    ax = fig.subplots()
    for names, values in series.values():
        label = "all features" if len(names) == len(features) and len(series) == 1 else ", ".join(names)
        ax.plot(x, values / size, color=colours[names[0]] if len(series) > 1 else CALM, label=label,
                **_line_style(spans))
    ax.set_ylim(0, peak / size * 1.15 if peak > 0 else 1)
    ax.set_ylabel(f"age of newest row ({unit})")
    ax.set_title("Freshness")
    _format_time_axis(ax, spans)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    latest = [f"{', '.join(names)} {values[~np.isnan(values)][-1] / size:.1f} {unit}"
              for names, values in series.values()]
    description = (f"Freshness (age of the newest row when each run ended) over {len(runs)} runs: worst "
                   f"{peak / size:.1f} {unit}; latest {'; '.join(latest)}.")
    return Chart("freshness", "Nulls and freshness", "Freshness", description, fig)


def _value_range(runs: Sequence["QualityRun"], feature: str, cells: list[list[tuple]]) -> tuple[float, float]:
    """The values the heat map shows: from the lowest 1st to the highest 99th percentile of the runs
    (a few outliers would otherwise squash the rest into one band), within the histograms' edges."""
    low = min(h[0][0] for cell in cells for h in cell)
    high = max(h[0][-1] for cell in cells for h in cell)
    p01 = [_quantile(r, feature, "p01") for r in runs]
    p99 = [_quantile(r, feature, "p99") for r in runs]
    if not all(math.isnan(v) for v in p01 + p99):
        inner_low, inner_high = np.nanmin(p01 + p99), np.nanmax(p01 + p99)
        margin = (inner_high - inner_low) * 0.05
        low, high = max(low, inner_low - margin), min(high, inner_high + margin)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return float(low), float(high)


def _quantile(run: "QualityRun", feature: str, key: str) -> float:
    return _number((((run.stats or {}).get(feature) or {}).get("quantiles") or {}).get(key))


def _histogram_chart(runs: Sequence["QualityRun"], feature: str) -> Chart:
    spans = _timeline([r for r in runs if _histogram_of(r, feature) is not None], MAX_COLUMNS)
    cells = [[h for r in s.runs if (h := _histogram_of(r, feature)) is not None] for s in spans]
    fig = _new_figure(3.6)
    ax = fig.subplots()
    title = f"Distribution of {feature} over time"
    if not spans:
        ax.text(0.5, 0.5, "no histogram recorded", transform=ax.transAxes, ha="center", color=MUTED)
        ax.set_title(title)
        return Chart(f"histogram-{feature}", "Distributions", title,
                     f"Distribution of {feature}: no histogram recorded in {len(runs)} runs.", fig)
    low, high = _value_range(runs, feature, cells)
    grid = np.linspace(low, high, HEATMAP_BINS + 1)
    share = np.full((HEATMAP_BINS, len(cells)), np.nan)
    for c, cell in enumerate(cells):
        total = sum(counts.sum() for _, counts in cell)  # rows outside the shown range count too
        if total > 0:
            share[:, c] = sum(rebin(edges, counts, grid) for edges, counts in cell) / total * 100
    time_edges = [s.left for s in spans] + [spans[-1].right]
    mesh = ax.pcolormesh(time_edges, grid, np.ma.masked_invalid(share), cmap="Blues", shading="flat",
                         vmin=0, zorder=1)
    fig.colorbar(mesh, ax=ax, label="rows in bin (%)", pad=0.02, fraction=0.05)
    drawn = [s for s in spans if s.runs]
    for key, style, label in (("p50", "-", "median"), ("p05", (0, (3, 2)), "5th / 95th percentile"),
                              ("p95", (0, (3, 2)), None)):
        per_span = [np.array([_quantile(r, feature, key) for r in s.runs]) for s in drawn]
        q = np.array([np.nan if np.all(np.isnan(v)) else np.nanmedian(v) for v in per_span])
        if not np.all(np.isnan(q)):
            ax.plot([s.x for s in drawn], q, color=ALERT, linestyle=style,
                    linewidth=1.6 if key == "p50" else 1.1, label=label, zorder=3)
    ax.set_ylim(low, high)
    ax.set_ylabel(feature)
    ax.set_title(title)
    ax.grid(False)
    _format_time_axis(ax, spans)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    p50 = [(r.started, _quantile(r, feature, "p50")) for r in runs]
    p50 = [(t, v) for t, v in p50 if not math.isnan(v)]
    description = (f"Distribution of {feature} over {len(runs)} runs from {_when(runs[0].started)} to "
                   f"{_when(runs[-1].started)}, as a heat map of the share of rows in each value bin; "
                   f"shown from {low:.4g} to {high:.4g} (1st to 99th percentile).")
    if p50:
        description += f" Median {p50[0][1]:.4g} in the first run and {p50[-1][1]:.4g} in the last."
    return Chart(f"histogram-{feature}", "Distributions", title, description, fig)


def _top_values_chart(runs: Sequence["QualityRun"], feature: str) -> Chart:
    per_span = []  # (span, counts of each value, non-null rows) of the spans with this feature's top list
    totals: dict[str, float] = {}
    for span in _timeline(runs, MAX_POINTS):
        counts: dict[str, float] = {}
        non_null = 0.0
        for run in span.runs:
            stats = (run.stats or {}).get(feature) or {}
            top = (stats.get("histogram") or {}).get("top")
            if top is None:
                continue
            listed = {str(v): _number(c) for v, c in top}
            for value, count in listed.items():
                counts[value] = counts.get(value, 0) + count
                totals[value] = totals.get(value, 0) + count
            present = _number(stats.get("rows")) - _number(stats.get("nulls") or 0)
            non_null += present if not math.isnan(present) else sum(listed.values())
        if non_null > 0:
            per_span.append((span, counts, non_null))
    shown = sorted(totals, key=lambda v: (-totals[v], v))[:TOP_VALUES]
    labels = shown + ["other"]  # values outside the top lists, or beyond the most frequent shown
    shares = np.zeros((len(labels), len(per_span)))
    for c, (_, counts, non_null) in enumerate(per_span):
        for i, value in enumerate(shown):
            shares[i, c] = counts.get(value, 0) / non_null * 100
        shares[-1, c] = max(0.0, 100 - shares[:-1, c].sum())
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(shown))] + ["#cfcfcf"]
    fig = _new_figure(3.4 + 0.22 * ((len(labels) + 2) // 3))
    ax = fig.subplots()
    title = f"Top values of {feature} over time"
    spans = [span for span, _, _ in per_span]
    if not spans:
        ax.text(0.5, 0.5, "no values recorded", transform=ax.transAxes, ha="center", color=MUTED)
        ax.set_title(title)
        return Chart(f"top-values-{feature}", "Distributions", title,
                     f"Top values of {feature}: none recorded in {len(runs)} runs.", fig)
    x = np.array([s.x for s in spans])
    if len(spans) == 1:
        bottom = np.zeros(1)
        for i, label in enumerate(labels):
            ax.bar(x, shares[i], bottom=bottom, width=(spans[0].right - spans[0].left) * 0.8, color=colours[i],
                   label=label, zorder=2)
            bottom += shares[i]
    else:
        ax.stackplot(x, shares, labels=labels, colors=colours, alpha=0.95, zorder=2)
    ax.set_ylim(0, 100)
    ax.set_ylabel("share of non-null rows (%)")
    ax.set_title(title)
    _format_time_axis(ax, spans)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)
    latest = ", ".join(f"{label} {shares[i, -1]:.1f}%" for i, label in enumerate(labels))
    description = (f"Share of the most frequent values of {feature} over {len(runs)} runs; "
                   f"latest: {latest}.")
    return Chart(f"top-values-{feature}", "Distributions", title, description, fig)


# ------------------------------------------------------------------------------------------ output


def _inline_svg(chart: Chart) -> str:
    """The chart as an ``<svg>`` element for the HTML body: ids prefixed so several charts on one page
    do not share (and clash over) clip paths and glyphs, sized by CSS from its view box, named by its
    title and described by the figure's caption for screen readers."""
    buffer = io.StringIO()
    chart.figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    prefix = f"{chart.key}-"
    svg = re.sub(r'(\bid="|url\(#|href="#)', lambda m: m.group(1) + prefix, svg)
    opening = re.match(r"<svg\b[^>]*>", svg)
    if opening is None:
        raise RuntimeError(f"matplotlib wrote no <svg> element for chart {chart.key}")
    attributes = re.sub(r'\s(?:width|height)="[^"]*"', "", opening.group(0)[len("<svg"):-1])
    return (f'<svg{attributes} role="img" aria-labelledby="{prefix}title" aria-describedby="{prefix}caption" '
            f'class="plot" data-chart="{chart.key}"><title id="{prefix}title">{html.escape(chart.title)}</title>'
            + svg[opening.end():])


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 "DejaVu Sans", system-ui, sans-serif; color: #222; background: #f6f7f9; }
header, main { max-width: 1400px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 20px; }
h1 { font-size: 1.5rem; margin: 0 0 4px; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 28px 0 10px; }
.period { color: #555; margin: 0 0 14px; }
.summary { display: flex; flex-wrap: wrap; gap: 10px; padding: 0; margin: 0; list-style: none; }
.summary li { background: #fff; border: 1px solid #e0e0e0; border-radius: 8px; padding: 8px 12px;
              min-width: 9rem; }
.summary b { display: block; font-size: 1.25rem; }
.summary .alert b { color: #b34700; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 380px), 1fr)); gap: 16px; }
figure.chart { margin: 0; background: #fff; border: 1px solid #e0e0e0; border-radius: 8px; padding: 8px;
               min-width: 0; }
svg.plot { display: block; width: 100%; height: auto; }
figcaption { font-size: 0.85rem; color: #555; padding: 6px 4px 2px; }
.empty { background: #fff; border: 1px dashed #bbb; border-radius: 8px; padding: 16px; }
footer { max-width: 1400px; margin: 24px auto; padding: 0 16px; font-size: 0.8rem; color: #777; }
"""


def _document(view_name: str, runs: Sequence["QualityRun"], drift: list[dict[str, Any]] | None,
              charts: list[Chart]) -> str:
    runs = sorted(runs, key=lambda r: _utc(r.started))
    name = html.escape(view_name)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Nothing may be fetched: the report is one file that works offline.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>Quality of {name}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        "<header>", f"<h1>Quality of <code>{name}</code></h1>",
    ]
    if runs:
        parts.append(f'<p class="period">{len(runs)} runs from {_when(runs[0].started)} to '
                     f"{_when(max(_utc(r.ended) for r in runs))}</p>")
        parts.append(_summary(runs, drift or []))
    parts.append("</header>")
    parts.append("<main>")
    if not runs:
        parts.append(f'<p class="empty">No quality runs recorded for {name} in this period.</p>')
    elif not charts:
        parts.append('<p class="empty">These runs recorded neither checks nor statistics.</p>')
    sections = list(dict.fromkeys(c.section for c in charts))
    for section in sections:
        slug = re.sub(r"[^a-z0-9]+", "-", section.lower()).strip("-")
        parts.append(f'<section aria-labelledby="h-{slug}"><h2 id="h-{slug}">{html.escape(section)}</h2>'
                     '<div class="grid">')
        for chart in (c for c in charts if c.section == section):
            parts.append(f'<figure class="chart" id="chart-{chart.key}">{_inline_svg(chart)}'
                         f'<figcaption id="{chart.key}-caption">{html.escape(chart.description)}</figcaption>'
                         "</figure>")
        parts.append("</div></section>")
    parts.append("</main>")
    parts.append(f"<footer>Written {_when(datetime.now(UTC))} by featurestore stats.</footer>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary(runs: Sequence["QualityRun"], drift: list[dict[str, Any]]) -> str:
    written = sum(int(r.rows_written or 0) for r in runs)
    failing = sum(1 for r in runs if any(_number(c.get("rows_failed")) > 0 for c in r.checks))
    stopped = sum(1 for r in runs if any(c.get("action") == "failed" for c in r.checks))
    drifted = sorted({str(d["feature"]) for d in drift if d["drifted"]})
    items = [("runs", f"{len(runs)}", False), ("rows written", f"{written:,}", False),
             ("runs with failing rows", f"{failing}", failing > 0), ("runs stopped", f"{stopped}", stopped > 0)]
    if drift:
        items.append(("features drifted", f"{len(drifted)}", bool(drifted)))
    cells = "".join(f'<li{" class=alert" if alert else ""}><b>{value}</b>{html.escape(label)}</li>'
                    for label, value, alert in items)
    return f'<ul class="summary" aria-label="summary">{cells}</ul>'


def _write_atomically(target: Path, data: bytes) -> None:
    """Write through a temporary file beside ``target`` (created with the usual umask-given mode), so a
    reader never sees half a report."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as out:
            out.write(data)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


__all__ = ["Chart", "build_charts", "rebin", "svg_charts", "write_html", "write_png"]
