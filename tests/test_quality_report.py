"""The quality report (`featurestore stats VIEW --plot stats.html`): charts of per-feature distributions
over time, null rate and freshness, failing checks and drift, as one offline HTML file and as PNG.

The browser test opens the report in Debian's Chromium (headless, driven by chromedriver through
Selenium) with the network switched off and checks every chart is laid out and drawn."""

from __future__ import annotations

import dataclasses
import io
import random
import re
import warnings
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image as mpimage
import numpy as np
import pytest

from connectors.offline_delta import DeltaOfflineStore, DeltaOfflineStoreConfig
from featurestore import quality_runs
from featurestore.quality_report import HEATMAP_BINS, MAX_COLUMNS, build_charts, rebin, write_html, write_png
from featurestore.quality_runs import QualityRun
from tests.browser_helpers import headless_chromium
from tests.quality_synthetic import synthetic_drift, synthetic_runs

CHART_KEYS = {"drift", "checks", "null-rate", "freshness", "histogram-amount", "histogram-score",
              "top-values-country", "top-values-is_fraud"}


@pytest.fixture
def rng() -> np.random.Generator:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[list[QualityRun], list[dict], Path]:
    """One report on random runs, shared by the tests that read the HTML file."""
    seed = random.randrange(2**32)
    print(f"report seed {seed}")
    rng = np.random.default_rng(seed)
    runs, drift = synthetic_runs(rng), synthetic_drift(rng)
    return runs, drift, write_html("user_txn", runs, tmp_path_factory.mktemp("report") / "stats.html", drift=drift)


class _Elements(HTMLParser):
    """Every start tag of a document with its attributes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _parse(path: Path) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Elements()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tags


def _drawn_pixels(image: np.ndarray) -> tuple[float, int]:
    """Share of pixels that are not white, and the number of distinct colours."""
    rgb = image[..., :3]
    if rgb.dtype != np.uint8:
        rgb = np.round(rgb * 255).astype(np.uint8)
    not_white = np.any(rgb < 245, axis=-1).mean()
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    return float(not_white), len(np.unique(packed))


# ------------------------------------------------------------------------------------------ data path


def test_rebin_spreads_each_bin_evenly_and_keeps_the_total(rng):
    assert rebin([0, 1, 2], [10, 20], np.array([0, 0.5, 1, 1.5, 2])).tolist() == [5, 5, 10, 10]
    assert rebin([3, 3], [7], np.array([0, 2, 4, 6])).tolist() == [0, 7, 0]  # a constant column
    edges = np.sort(rng.uniform(-50, 50, 12))
    counts = rng.integers(0, 1000, 11)
    grid = np.linspace(edges[0], edges[-1], 37)
    moved = rebin(edges, counts, grid)
    assert moved.sum() == pytest.approx(counts.sum())
    assert np.all(moved >= 0)


def test_heatmap_columns_are_each_runs_share_of_rows_per_bin(rng):
    # Runs whose histograms already sit on the heat map's grid: each column must be that run's counts
    # as a percentage of its rows, in run order.
    edges = np.linspace(0, 10, HEATMAP_BINS + 1).tolist()
    start = datetime(2026, 12, 1, tzinfo=timezone.utc)
    counts = [rng.integers(0, 500, HEATMAP_BINS) for _ in range(5)]
    runs = [QualityRun(kind="stream", started=start + timedelta(hours=6 * h), ended=start + timedelta(hours=6 * h, minutes=1),
                       stats={"x": {"rows": int(c.sum()), "nulls": 0, "histogram": {"edges": edges,
                                                                                    "counts": c.tolist()}}})
            for h, c in zip(rng.permutation(5).tolist(), counts)]
    chart = next(c for c in build_charts(runs) if c.key == "histogram-x")
    mesh = chart.figure.axes[0].collections[0].get_array().reshape(HEATMAP_BINS, 5)
    in_time_order = [c for _, c in sorted(zip([r.started for r in runs], counts))]
    for column, c in enumerate(in_time_order):
        np.testing.assert_allclose(mesh[:, column], c / c.sum() * 100)


@pytest.mark.parametrize("count, spacing", [(1, timedelta(hours=1)), (2, timedelta(seconds=5)),
                                            (3, timedelta(days=45)), (700, timedelta(seconds=50))])
def test_one_run_to_a_week_of_stream_commits_draws_cleanly(tmp_path, rng, count, spacing):
    # Runs beyond what a chart can show one by one are summed into equal stretches of time: the heat
    # map has at most MAX_COLUMNS columns, and the counts add up to every run's.
    template = synthetic_runs(rng, count=min(count, 8))
    runs = [dataclasses.replace(template[i % len(template)], started=template[0].started + i * spacing,
                                ended=template[0].started + i * spacing + timedelta(seconds=2), run_id=str(i))
            for i in range(count)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        charts = {c.key: c for c in build_charts(runs)}
        html = write_html("user_txn", runs, tmp_path / "stats.html")
    assert set(charts) == CHART_KEYS - {"drift"}
    mesh = charts["histogram-amount"].figure.axes[0].collections[0].get_array()
    assert mesh.shape == (HEATMAP_BINS, min(count, MAX_COLUMNS))
    bars = charts["checks"].figure.axes[0].containers
    assert sum(b.get_height() for c in bars for b in c) == sum(c["rows_failed"] for r in runs for c in r.checks)
    assert html.stat().st_size < 3_000_000


def test_captions_say_what_the_data_says(rng):
    runs = synthetic_runs(rng)
    drift = synthetic_drift(rng)
    charts = {c.key: c for c in build_charts(runs, drift)}
    assert set(charts) == CHART_KEYS
    rates = {f: [r.stats[f]["nulls"] / r.stats[f]["rows"] * 100 for r in runs] for f in runs[0].stats}
    worst = max(rates, key=lambda f: max(rates[f]))
    assert f"Highest: {worst} {max(rates[worst]):.2f}%" in charts["null-rate"].description
    drifted = [d for d in drift if d["drifted"]]
    assert f"{len(drifted)} of {len(drift)} results over their threshold" in charts["drift"].description
    for d in drifted:
        assert f"{d['feature']} ({d['statistic']} {d['value']:.3g}" in charts["drift"].description
    negative = sum(c["rows_failed"] for r in runs for c in r.checks if c["name"] == "amount_non_negative")
    assert f"amount_non_negative: {negative} rows" in charts["checks"].description
    assert "1 runs stopped by a failing check" in charts["checks"].description
    peak = max(r.stats["amount"]["freshness_seconds"] for r in runs) / 3600
    assert f"worst {peak:.1f} hours" in charts["freshness"].description


def test_bad_records_are_named_in_the_error(tmp_path, rng):
    runs = synthetic_runs(rng, count=3)
    runs[1].stats["score"]["histogram"]["counts"].pop()
    with pytest.raises(ValueError, match=rf"quality run {runs[1].run_id}: stats\['score'\]\['histogram'\] has 19 counts for 21 edges"):
        write_html("user_txn", runs, tmp_path / "r.html")
    with pytest.raises(ValueError, match=r"drift\[1\] lacks threshold"):
        write_html("user_txn", synthetic_runs(rng, count=2), tmp_path / "r.html",
                   drift=[{"feature": "a", "statistic": "psi", "value": 0.1, "threshold": 0.2, "drifted": False},
                          {"feature": "b", "statistic": "psi", "value": 0.1, "drifted": False}])
    assert not (tmp_path / "r.html").exists()


def test_drift_values_that_are_missing_or_infinite_are_drawn_and_labelled(rng):
    drift = [{"feature": "a", "statistic": "psi", "value": float("inf"), "threshold": 0.2, "drifted": True},
             {"feature": "b", "statistic": "psi", "value": None, "threshold": 0.2, "drifted": False},
             {"feature": "c", "statistic": "psi", "value": 0.05, "threshold": 0.2, "drifted": False}]
    [chart] = build_charts([], drift)
    ax = chart.figure.axes[0]
    widths = [bar.get_width() for bar in ax.containers[0]]
    assert widths[0] == pytest.approx(ax.get_xlim()[1]) and widths[1] == 0 and widths[2] == 0.05
    assert [t.get_text() for t in ax.texts] == ["inf  drifted", "n/a", "0.05"]
    assert "a (psi inf over threshold 0.2)" in chart.description


def test_runs_without_statistics_or_at_all_still_make_a_report(tmp_path, rng):
    runs = synthetic_runs(rng, count=4)
    for run in runs:
        run.stats = None
    only_checks = write_html("user_txn", runs, tmp_path / "checks.html")
    keys = {a.get("data-chart") for tag, a in _parse(only_checks) if tag == "svg"}
    assert keys == {"checks"}
    empty = write_html("user_txn", [], tmp_path / "empty.html")
    assert "No quality runs recorded for user_txn" in empty.read_text()
    assert write_png("user_txn", [], tmp_path / "png") == []


def test_runs_read_back_from_the_offline_store_make_the_same_report(tmp_path, rng):
    # The path `featurestore stats VIEW --plot` takes: runs recorded in the offline store's quality
    # area (JSON stats, timestamps through Delta), read back for a period, drawn.
    store = SimpleNamespace(offline_store=DeltaOfflineStore(DeltaOfflineStoreConfig(path="offline"), tmp_path, "p"))
    runs = synthetic_runs(rng, count=6)
    for run in runs:
        quality_runs.record(store, "user_txn", run)
    since = runs[2].started
    read = quality_runs.runs(store, "user_txn", since=since)
    assert read == runs[2:]
    path = write_html("user_txn", read, tmp_path / "stats.html")
    keys = {a.get("data-chart") for tag, a in _parse(path) if tag == "svg"}
    assert keys == CHART_KEYS - {"drift"}
    assert f"4 runs from {since:%Y-%m-%d %H:%M} UTC" in path.read_text()


# ------------------------------------------------------------------------------------------ the file


def test_report_is_one_file_with_labelled_charts_and_nothing_to_fetch(report):
    _, _, path = report
    tags = _parse(path)
    svgs = [a for tag, a in tags if tag == "svg"]
    assert {a["data-chart"] for a in svgs} == CHART_KEYS
    ids = [a["id"] for _, a in tags if a.get("id")]
    assert len(ids) == len(set(ids)), "ids repeat across charts (clip paths would point into another chart)"
    for svg in svgs:
        assert svg["role"] == "img"
        assert svg["aria-labelledby"] in ids and svg["aria-describedby"] in ids
        assert "width" not in svg and "viewbox" in svg  # sized by CSS from its view box
    for tag, attrs in tags:
        for name in ("src", "href", "xlink:href", "data", "action", "poster"):
            value = attrs.get(name)
            assert value is None or value.startswith(("#", "data:")), f"<{tag} {name}={value}> points outside"
    assert not any(tag in {"script", "link", "iframe", "object", "embed"} for tag, _ in tags)
    csp = next(a["content"] for tag, a in tags if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp
    assert ("viewport", "width=device-width, initial-scale=1") in {(a.get("name"), a.get("content")) for _, a in tags}


def test_png_files_decode_and_show_drawn_charts(tmp_path, rng):
    runs, drift = synthetic_runs(rng), synthetic_drift(rng)
    files = write_png("user_txn", runs, tmp_path / "png", drift=drift)
    assert {f.stem for f in files} == CHART_KEYS
    for file in files:
        image = mpimage.imread(file)
        assert image.shape[0] > 300 and image.shape[1] > 600, file.name
        drawn, colours = _drawn_pixels(image)
        assert drawn > 0.03 and colours > 16, f"{file.name}: {drawn:.1%} drawn, {colours} colours"
    heatmap = _drawn_pixels(mpimage.imread(tmp_path / "png" / "histogram-amount.png"))
    assert heatmap[1] > 200  # the shades of the heat map
    [combined] = write_png("user_txn", runs, tmp_path / "all.png", drift=drift, dpi=60)
    image = mpimage.imread(combined)
    assert image.shape[0] > sum(mpimage.imread(f).shape[0] for f in files) * 60 / 150 * 0.9
    assert _drawn_pixels(image)[0] > 0.03


# ------------------------------------------------------------------------------------------ a real browser


@pytest.fixture
def offline_chromium(tmp_path):
    driver = headless_chromium(tmp_path, loopback=False)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
        yield driver
    finally:
        driver.quit()


_MEASURE = """
return Array.from(document.querySelectorAll('figure.chart svg')).map(svg => {
  const box = svg.getBoundingClientRect();
  const drawn = Array.from(svg.querySelectorAll('path, rect, use, image'))
      .filter(e => !e.closest('defs'))
      .filter(e => { const b = e.getBBox(); return b.width > 0 || b.height > 0; });
  const mesh = svg.querySelector('[id$="-QuadMesh_1"]');
  return {key: svg.dataset.chart, width: box.width, height: box.height, drawn: drawn.length,
          cells: mesh ? mesh.querySelectorAll('path').length : 0,
          label: ['aria-labelledby', 'aria-describedby']
                   .map(a => document.getElementById(svg.getAttribute(a)).textContent).join(' | ')};
});
"""


@pytest.mark.browser
def test_report_draws_every_chart_in_headless_chromium_offline(tmp_path, report, offline_chromium):
    runs, _, path = report
    browser = offline_chromium
    browser.get(path.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.title == "Quality of user_txn"
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

    charts = {c["key"]: c for c in browser.execute_script(_MEASURE)}
    assert set(charts) == CHART_KEYS
    for key, chart in charts.items():
        assert chart["width"] > 300 and chart["height"] > 200, chart
        assert chart["drawn"] > 20, f"{key}: only {chart['drawn']} shapes drawn"
        title, caption = chart["label"].split(" | ")
        assert title and caption, f"{key}: no text alternative"
    # Each heat map draws one cell per value bin and run.
    assert charts["histogram-amount"]["cells"] == HEATMAP_BINS * len(runs)
    assert charts["histogram-score"]["cells"] == HEATMAP_BINS * len(runs)

    browser.save_screenshot(str(tmp_path / "report-desktop.png"))
    for key in CHART_KEYS:  # the pixels of each chart, as the browser painted them
        element = browser.find_element("css selector", f"#chart-{key} svg")
        drawn, colours = _drawn_pixels(mpimage.imread(io.BytesIO(element.screenshot_as_png), format="png"))
        assert drawn > 0.03 and colours > 16, f"{key}: {drawn:.1%} drawn, {colours} colours"
    for name in ("report-desktop.png",):
        assert _drawn_pixels(mpimage.imread(tmp_path / name))[0] > 0.05

    # On a phone the charts take the screen's width, one under another, and nothing scrolls sideways.
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    browser.get(path.as_uri())
    phone = browser.execute_script(_MEASURE)
    inner = browser.execute_script("return window.innerWidth")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= inner
    for chart in phone:
        assert inner * 0.75 < chart["width"] <= inner, chart
    browser.save_screenshot(str(tmp_path / "report-phone.png"))
    assert _drawn_pixels(mpimage.imread(tmp_path / "report-phone.png"))[0] > 0.05
    assert re.search(r"\d+ runs from", browser.find_element("css selector", ".period").text)
