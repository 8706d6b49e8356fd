"""The web catalog at ``/ui``, on a real ``featurestore serve`` over a repo applied twice and
materialized, driven in Debian's headless Chromium (Selenium with chromium-driver): navigation, search
as you type, the lineage graph, plots, the history diff and API keys. Every page visited is kept as a
screenshot under the test's output folder (printed)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from featurestore.streaming import manager
from tests.browser_helpers import headless_chromium
from tests.catalog_repo import build_catalog_repo
from tests.serve_helpers import serve

KEYS = "reader-key-1:read,writer-key-2:write"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "repo"
    store = build_catalog_repo(path)
    # The files a stream job of user_txn leaves when its process has ended (job.json, its counters):
    # the overview lists it as stopped, with its failure counters.
    job = manager.job_dir(store, "user_txn")
    (job / "status").mkdir(parents=True)
    ended = subprocess.Popen(["true"])
    ended.wait()
    (job / "job.json").write_text(json.dumps({"pid": ended.pid, "started": time.time() - 3600}))
    (job / "status" / "sink.json").write_text(json.dumps(
        {"dead_letters": 3, "late_events": 2, "online_written": 120, "check_dropped": 1, "updated": time.time()}))
    return path


@pytest.fixture(scope="module")
def server(repo):
    with serve(repo, env={"FEATURESTORE_API_KEYS": ""}) as served:
        yield served


@pytest.fixture(scope="module")
def keyed_server(repo):
    with serve(repo, env={"FEATURESTORE_API_KEYS": KEYS}) as served:
        yield served


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    print(f"screenshots in {folder}")
    return folder


@pytest.fixture
def chromium(tmp_path):
    driver = headless_chromium(tmp_path, loopback=True, console_log=True)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _shot(browser, folder: Path, name: str) -> None:
    """The whole page (the window stretched to its height) as ``<folder>/<name>.png``."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(max(height, 600) + 140, 6000))
    browser.save_screenshot(str(folder / f"{name}.png"))
    browser.set_window_size(1280, 1000)
    assert (folder / f"{name}.png").stat().st_size > 5000


def _names(browser, selector: str) -> list[str]:
    """The names (first line of text) of the links ``selector`` finds, read in one go."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(a => a.innerText.split('\\n')[0])",
        selector)


def _page_is_sound(browser, origin: str) -> None:
    """Loaded completely from the server (no CDN), no script or policy error, every form control
    labelled, one h1, and the skip link first."""
    assert browser.execute_script("return document.readyState") == "complete"
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
    assert all(r.startswith(origin) or r.startswith("data:") for r in resources), resources
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    unlabelled = browser.execute_script("""
        return Array.from(document.querySelectorAll('input:not([type=hidden]), select')).filter(el =>
            !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map(el => el.outerHTML);""")
    assert not unlabelled, unlabelled
    assert browser.execute_script("return document.querySelectorAll('h1').length") == 1
    assert browser.execute_script("return document.querySelector('body a').className") == "skip"


# ------------------------------------------------------------------------------------------ navigation


@pytest.mark.browser
def test_navigation_keyboard_and_phone_layout(server, chromium, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser = chromium
    browser.get(server.url + "/ui")
    _page_is_sound(browser, server.url)
    counts = {a.text.split("\n")[1]: int(a.text.split("\n")[0])
              for a in browser.find_elements(By.CSS_SELECTOR, ".counts a")}
    assert counts == {"Entities": 2, "Sources": 2, "Feature views": 2, "On-demand views": 1, "Feature services": 2}
    attention = browser.find_element(By.ID, "h-attention").find_element(By.XPATH, "..").text
    assert re.search(r"merchant_profile\s+stale: data 2\.\d h old, TTL 1 h", attention), attention
    assert "check known_country warned" in attention and "drifted: amount" in attention
    runs = browser.find_element(By.ID, "h-runs").find_element(By.XPATH, "..").text
    assert "user_txn" in runs and "merchant_profile" in runs and "rating_non_negative warned" in runs
    assert runs.count("materialize") == 6  # three runs of each view with checks, newest first
    jobs = browser.find_element(By.ID, "h-jobs").find_element(By.XPATH, "..").text
    assert re.search(r"user_txn stopped unknown never check_dropped=1, dead_letters=3, late_events=2", jobs), jobs
    _shot(browser, shots, "overview")

    # The skip link is the first stop of the keyboard and moves the focus to the content.
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("class") == "skip"
    outline = browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    top = browser.execute_script("return document.activeElement.getBoundingClientRect().top")
    assert top >= 0, "the focused skip link is not on the screen"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"
    assert outline == "solid", "no visible focus on the skip link"

    # Navigation: the list of views, a view, what uses it, back up to its source.
    browser.find_element(By.LINK_TEXT, "Feature views").click()
    _wait(lambda: browser.current_url.endswith("/ui/views"), what="the views list")
    assert browser.find_element(By.CSS_SELECTOR, "nav a[aria-current=page]").text == "Feature views"
    _shot(browser, shots, "views")
    browser.find_element(By.LINK_TEXT, "user_txn").click()
    _wait(lambda: browser.current_url.endswith("/ui/views/user_txn"), what="the view page")
    _page_is_sound(browser, server.url)
    text = browser.find_element(By.TAG_NAME, "main").text
    for expected in ("(col('status') == 'settled')", "col('amount').cast(Float64).alias('amount')",
                     "sum of amount over 1 h", "mean of amount over 7 d", "risk-team@example.com",
                     "domain=payments", "30 d", "(col('amount') >= 0)", "known_country", "warned"):
        assert expected in text, expected
    schema = browser.find_element(By.ID, "h-schema").find_element(By.XPATH, "..").text
    assert re.search(r"user_id Int64 join key", schema) and re.search(r"amount_sum_1h Float64 feature", schema)
    used_by = browser.find_element(By.ID, "h-used-by").find_element(By.XPATH, "..").text
    assert "spend_ratio" in used_by and "fraud_model" in used_by and "merchant_risk" in used_by
    _shot(browser, shots, "view")
    browser.find_element(By.CSS_SELECTOR, "#h-used-by + .scroll a[href='/ui/services/fraud_model']").click()
    _wait(lambda: browser.current_url.endswith("/ui/services/fraud_model"), what="the service page")
    assert "every feature" in browser.find_element(By.TAG_NAME, "main").text
    _shot(browser, shots, "service")
    for path, name in (("/ui/sources/transactions", "source"), ("/ui/entities/user", "entity"),
                       ("/ui/on-demand-views/spend_ratio", "on-demand-view")):
        browser.get(server.url + path)
        _page_is_sound(browser, server.url)
        _shot(browser, shots, name)
    assert "amount_now" in browser.find_element(By.TAG_NAME, "main").text

    # An unknown object is a 404 page that says what is missing.
    browser.get(server.url + "/ui/views/no_such_view")
    assert "feature view 'no_such_view' is not in the registry" in browser.find_element(By.TAG_NAME, "main").text

    # On a phone: no page scrolls sideways (wide tables and graphs scroll inside their own box).
    browser.set_window_size(390, 844)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    for path, name in (("/ui", "phone-overview"), ("/ui/views/user_txn", "phone-view"),
                       ("/ui/lineage", "phone-lineage"), ("/ui/views/merchant_profile/diff?a=1&b=2", "phone-diff")):
        browser.get(server.url + path)
        inner = browser.execute_script("return window.innerWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= inner, path
        browser.save_screenshot(str(shots / f"{name}.png"))


# ------------------------------------------------------------------------------------------ search


@pytest.mark.browser
def test_search_as_you_type_and_with_filters(server, chromium, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser = chromium
    browser.get(server.url + "/ui/lineage")
    # "/" focuses the search box from anywhere on the page.
    browser.find_element(By.TAG_NAME, "body").send_keys("/")
    assert browser.switch_to.active_element.get_attribute("id") == "q"
    started = time.monotonic()
    browser.switch_to.active_element.send_keys("rati")
    suggestions = _wait(lambda: _names(browser, "#suggestions:not([hidden]) a"), what="suggestions")
    assert time.monotonic() - started < 3
    # spend_ratio by its name; merchant_profile and merchant_risk by their feature "rating".
    assert suggestions[0] == "spend_ratio" and {"merchant_profile", "merchant_risk"} <= set(suggestions), suggestions
    assert browser.find_element(By.ID, "q").get_attribute("aria-expanded") == "true"
    _shot(browser, shots, "suggestions")
    browser.find_element(By.ID, "q").send_keys(Keys.ARROW_DOWN)
    assert browser.switch_to.active_element.text.startswith("spend_ratio")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    _wait(lambda: browser.current_url.endswith("/ui/on-demand-views/spend_ratio"), what="the suggestion's page")

    # The search page: results follow the words and filters as they change, without submitting.
    browser.get(server.url + "/ui/search")
    box = browser.find_element(By.ID, "sq")
    box.send_keys("merchant")
    _wait(lambda: browser.find_element(By.ID, "found").text == "4 found", what="4 results")
    Select(browser.find_element(By.ID, "sowner")).select_by_visible_text("merchant-team@example.com")
    names = _wait(lambda: (lambda n: n if len(n) == 2 else None)(_names(browser, "#results > li > a")),
                  what="the owner's objects")
    assert names == ["merchant_profile", "merchant_risk"]
    assert "owner=merchant-team" in browser.current_url  # the address can be shared
    _shot(browser, shots, "search")

    # Without JavaScript the same form is a GET: tags, kinds, owners and descriptions are searched.
    status, page, _ = server.request("GET", "/ui/search?q=&tag=domain%3Dpayments")
    assert status == 200 and re.findall(r'<li><a href="/ui/([a-z-]+/[a-z_]+)"', page) == [
        "entities/user", "views/user_txn"]
    status, page, _ = server.request("GET", "/ui/search?q=authorised&kind=on-demand-views")
    assert re.findall(r'<li><a href="/ui/([a-z-]+/[a-z_]+)"', page) == ["on-demand-views/spend_ratio"]
    status, page, _ = server.request("GET", "/ui/search?kind=widgets")
    assert status == 400 and "kind=&#x27;widgets&#x27; is not one of" in page
    status, body, _ = server.request("GET", "/ui/search.json?q=reviews")
    assert status == 200 and [(r["kind"], r["name"], r["matched"]) for r in body["results"]] == [
        ("views", "merchant_profile", "feature"), ("services", "merchant_risk", "feature")]


# ------------------------------------------------------------------------------------------ lineage


_EDGES = {("sources/transactions", "views/user_txn"), ("sources/merchant_events", "views/merchant_profile"),
          ("views/user_txn", "on-demand-views/spend_ratio"), ("views/user_txn", "services/fraud_model"),
          ("on-demand-views/spend_ratio", "services/fraud_model"), ("views/merchant_profile", "services/merchant_risk"),
          ("views/user_txn", "services/merchant_risk")}


@pytest.mark.browser
def test_lineage_graph_is_drawn_and_clickable(server, chromium, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser = chromium
    browser.get(server.url + "/ui/lineage")
    _page_is_sound(browser, server.url)
    nodes = browser.execute_script("""
        return Array.from(document.querySelectorAll('svg.lineage a.node')).map(a => {
            const b = a.querySelector('rect').getBoundingClientRect();
            return {href: a.getAttribute('href'), label: a.getAttribute('aria-label'),
                    x: b.left, y: b.top, w: b.width, h: b.height};});""")
    assert {n["href"] for n in nodes} == {"/ui/sources/transactions", "/ui/sources/merchant_events",
                                          "/ui/views/user_txn", "/ui/views/merchant_profile",
                                          "/ui/on-demand-views/spend_ratio", "/ui/services/fraud_model",
                                          "/ui/services/merchant_risk"}
    column = {"sources": 0, "views": 1, "on-demand-views": 2, "services": 3}
    xs = {}
    for n in nodes:
        assert n["w"] > 100 and n["h"] > 20 and n["label"], n
        xs.setdefault(column[n["href"].split("/")[2]], set()).add(n["x"])
    assert all(len(v) == 1 for v in xs.values()) and sorted(xs) == [0, 1, 2, 3]
    assert min(xs[0]) < min(xs[1]) < min(xs[2]) < min(xs[3])  # sources left of views left of ...
    for a in nodes:  # no two nodes overlap
        for b in nodes:
            if a is not b:
                assert a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"] or \
                    a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"], (a, b)
    edges = browser.execute_script("""
        return Array.from(document.querySelectorAll('svg.lineage .edges path')).map(p =>
            [p.dataset.from, p.dataset.to, p.getTotalLength()]);""")
    assert {(f, t) for f, t, _ in edges} == _EDGES and len(edges) == len(_EDGES)
    assert all(length > 50 for _, _, length in edges)
    # No edge runs through a node it does not join (an edge passing a column takes a lane between nodes).
    crossings = browser.execute_script("""
        const nodes = Array.from(document.querySelectorAll('svg.lineage a.node')).map(a =>
            ({href: a.getAttribute('href'), box: a.querySelector('rect').getBBox()}));
        const out = [];
        for (const path of document.querySelectorAll('svg.lineage .edges path')) {
          const ends = ['/ui/' + path.dataset.from, '/ui/' + path.dataset.to];
          for (let t = 0; t <= path.getTotalLength(); t += 3) {
            const p = path.getPointAtLength(t);
            for (const n of nodes) {
              const b = n.box;
              if (!ends.includes(n.href) && p.x > b.x && p.x < b.x + b.width && p.y > b.y && p.y < b.y + b.height)
                out.push([path.dataset.from, path.dataset.to, n.href]);
            }
          }
        }
        return out;""")
    assert not crossings, crossings
    _shot(browser, shots, "lineage")

    # A node is a link: by mouse, and by keyboard (focus it, Enter).
    browser.find_element(By.CSS_SELECTOR, "svg.lineage a[href='/ui/on-demand-views/spend_ratio']").click()
    _wait(lambda: browser.current_url.endswith("/ui/on-demand-views/spend_ratio"), what="the node's page")
    browser.get(server.url + "/ui/lineage")
    node = browser.find_element(By.CSS_SELECTOR, "svg.lineage a[href='/ui/views/merchant_profile']")
    browser.execute_script("arguments[0].focus()", node)
    assert browser.switch_to.active_element == node
    node.send_keys(Keys.ENTER)
    _wait(lambda: browser.current_url.endswith("/ui/views/merchant_profile"), what="the keyboard's page")

    # The view page draws its neighbourhood: what it reads and what reads it, nothing else.
    around = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.lineage a.node')).map(a => a.getAttribute('href'))")
    assert sorted(around) == ["/ui/services/merchant_risk", "/ui/sources/merchant_events", "/ui/views/merchant_profile"]
    assert browser.execute_script("return document.querySelector('svg.lineage a.focus').getAttribute('href')") \
        == "/ui/views/merchant_profile"
    browser.get(server.url + "/ui/lineage/sources/transactions")
    downstream = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.lineage a.node')).map(a => a.getAttribute('href'))")
    assert sorted(downstream) == ["/ui/on-demand-views/spend_ratio", "/ui/services/fraud_model",
                                  "/ui/services/merchant_risk", "/ui/sources/transactions", "/ui/views/user_txn"]
    _shot(browser, shots, "lineage-of-transactions")


# ------------------------------------------------------------------------------------------ plots


_MEASURE = """
return Array.from(document.querySelectorAll('figure.chart svg')).map(svg => {
  const box = svg.getBoundingClientRect();
  const drawn = Array.from(svg.querySelectorAll('path, rect, use'))
      .filter(e => !e.closest('defs')).filter(e => { const b = e.getBBox(); return b.width > 0 || b.height > 0; });
  return {key: svg.dataset.chart, width: box.width, height: box.height, drawn: drawn.length,
          title: document.getElementById(svg.getAttribute('aria-labelledby')).textContent,
          caption: document.getElementById(svg.getAttribute('aria-describedby')).textContent};
});
"""


@pytest.mark.browser
def test_view_page_plots_checks_drift_and_freshness(server, chromium, shots):
    from selenium.webdriver.common.by import By

    browser = chromium
    browser.get(server.url + "/ui/views/user_txn")
    _page_is_sound(browser, server.url)
    charts = {c["key"]: c for c in browser.execute_script(_MEASURE)}
    assert {"drift", "checks"} <= set(charts), charts.keys()
    for key, chart in charts.items():
        assert chart["width"] > 300 and chart["height"] > 150, chart
        assert chart["drawn"] > 20, f"{key}: only {chart['drawn']} shapes drawn"
        assert chart["title"] and chart["caption"], key
    assert "3 runs" in charts["checks"]["caption"] and "known_country" in charts["checks"]["caption"]
    assert "amount" in charts["drift"]["caption"]
    plots = browser.find_element(By.ID, "h-plots").find_element(By.XPATH, "..")
    assert re.search(r"amount psi [\d.]+ 0\.2 drifted", plots.text), plots.text
    plots.screenshot(str(shots / "plots.png"))
    fresh = browser.find_element(By.ID, "h-freshness").find_element(By.XPATH, "..").text
    assert re.search(r"State\s+fresh", fresh) and re.search(r"Age\s+2\.\d h", fresh), fresh
    _shot(browser, shots, "view-plots")

    browser.get(server.url + "/ui/views/merchant_profile")
    fresh = browser.find_element(By.ID, "h-freshness").find_element(By.XPATH, "..").text
    assert re.search(r"State\s+stale", fresh) and re.search(r"TTL\s+1 h", fresh), fresh
    checks = browser.find_element(By.ID, "h-checks").find_element(By.XPATH, "..").text
    assert re.search(r"rating_non_negative \(col\('rating'\) >= 0\) warn warned \d+ of \d+", checks), checks
    assert re.search(r"category_not_null col\('category'\)\.is_not_null\(\) warn passed 0 of", checks), checks
    _shot(browser, shots, "view-stale")


# ------------------------------------------------------------------------------------------ history


def _diff_lines(browser, tag: str, spoken: str) -> list[str]:
    """The diff's lines marked ``tag``, each after the words a screen reader says first."""
    lines = browser.execute_script(
        "return Array.from(document.querySelectorAll('pre.diff ' + arguments[0])).map(e => e.textContent)", tag)
    assert all(line.startswith(spoken) for line in lines), lines
    return [line[len(spoken):] for line in lines]


@pytest.mark.browser
def test_history_and_diff_between_versions(server, chromium, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser = chromium
    browser.get(server.url + "/ui/views/merchant_profile")
    browser.find_element(By.PARTIAL_LINK_TEXT, "Versions of this feature view").click()
    _wait(lambda: browser.current_url.endswith("/ui/views/merchant_profile/history"), what="the history")
    _page_is_sound(browser, server.url)
    rows = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == ["2", "1"]
    _shot(browser, shots, "history")
    Select(browser.find_element(By.ID, "da")).select_by_value("1")
    Select(browser.find_element(By.ID, "db")).select_by_value("2")
    browser.find_element(By.CSS_SELECTOR, "form[aria-label='Compare two versions'] button").click()
    _wait(lambda: "/diff?a=1&b=2" in browser.current_url, what="the diff")
    _page_is_sound(browser, server.url)
    added = _diff_lines(browser, "ins", "added: ")
    removed = _diff_lines(browser, "del", "removed: ")
    assert '+  "ttl_seconds": 3600.0' in added and '-  "ttl_seconds": 172800.0' in removed
    assert any('"name": "category_not_null"' in line for line in added)
    assert any("Category, rating and reviews" in line for line in added)
    assert any("Category and rating of each merchant" in line for line in removed)
    assert not any("schema" in line for line in added + removed)  # unchanged parts are not marked
    assert f"{len(added)} lines added, {len(removed)} removed" in browser.find_element(By.TAG_NAME, "main").text
    _shot(browser, shots, "diff")
    # The other way round swaps the sides; a version that does not exist is named.
    browser.get(server.url + "/ui/views/merchant_profile/diff?a=2&b=1")
    assert '+  "ttl_seconds": 172800.0' in _diff_lines(browser, "ins", "added: ")
    status, page, _ = server.request("GET", "/ui/views/merchant_profile/diff?a=1&b=7")
    assert status == 400 and "b=7: there is no such version (1..2)" in page
    status, page, _ = server.request("GET", "/ui/views/user_txn/history")
    assert status == 200 and page.count("<tr><td><b>") == 1  # applied the same both times: one version


# ------------------------------------------------------------------------------------------ API keys


@pytest.mark.browser
def test_api_keys_refuse_pages_without_a_key(keyed_server, chromium, shots):
    from selenium.webdriver.common.by import By

    server = keyed_server
    for path in ("/ui", "/ui/views/user_txn", "/ui/lineage", "/ui/views/user_txn/history",
                 "/ui/views/merchant_profile/diff?a=1&b=2", "/ui/search?q=a"):
        status, page, _ = server.request("GET", path)
        assert status == 401 and 'name="key"' in page and "Spending of each card holder" not in page, path
        assert server.request("GET", path, headers={"X-API-Key": "reader-key-1"})[0] == 200, path
        assert server.request("GET", path, headers={"Authorization": "Bearer reader-key-1"})[0] == 200, path
        assert server.request("GET", path, headers={"X-API-Key": "writer-key-2"})[0] == 403, path
        assert server.request("GET", path, headers={"X-API-Key": "wrong"})[0] == 401, path
    status, body, _ = server.request("GET", "/ui/search.json?q=user")
    assert status == 401 and "results" not in body
    assert server.request("GET", "/ui/static/catalog.css")[0] == 200  # the login page needs its style

    browser = chromium
    browser.get(server.url + "/ui/views/user_txn")
    assert browser.title.startswith("Sign in") and "Spending of each card holder" not in browser.page_source
    _shot(browser, shots, "login")
    browser.find_element(By.ID, "key").send_keys("writer-key-2")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    _wait(lambda: "lacks the 'read' scope" in browser.page_source, what="the scope refusal")
    browser.find_element(By.ID, "key").send_keys("reader-key-1")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    _wait(lambda: browser.current_url.endswith("/ui/views/user_txn") and "Spending of each card holder"
          in browser.page_source, what="the page after signing in")
    cookie = browser.get_cookie("featurestore_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    # The cookie carries the key for the script's searches too.
    browser.find_element(By.ID, "q").send_keys("merch")
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#suggestions:not([hidden]) a"), what="suggestions")
    _shot(browser, shots, "signed-in")
    # A sign-in never sends the browser to another site.
    for target, lands in (("https://evil.example/", "/ui"), ("//evil.example/ui", "/ui"),
                          ("/ui/views/user_txn", "/ui/views/user_txn")):
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("POST", "/ui/login", body=urlencode({"key": "reader-key-1", "next": target}),
                     headers={"content-type": "application/x-www-form-urlencoded"})
        answer = conn.getresponse()
        assert answer.status == 303 and answer.getheader("location") == lands, target
        assert "featurestore_key=reader-key-1" in answer.getheader("set-cookie")
        conn.close()


# ------------------------------------------------------------------------------------------ featurestore ui


def test_featurestore_ui_starts_a_server_and_opens_the_browser(repo, tmp_path):
    opened = tmp_path / "opened.txt"
    fake_browser = tmp_path / "browser.sh"
    fake_browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    fake_browser.chmod(fake_browser.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "BROWSER": str(fake_browser), "FEATURESTORE_API_KEYS": "", "DISPLAY": ""}
    proc = subprocess.Popen([sys.executable, "-m", "featurestore.cli", "--repo", str(repo), "ui"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = _wait(lambda: opened.exists() and opened.read_text().strip(), timeout=60, what="the browser call")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/ui", url), url
        import urllib.request

        with urllib.request.urlopen(url, timeout=10) as answer:
            page = answer.read().decode()
        assert "<h1>Overview</h1>" in page and "Feature views" in page
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert f"Catalog: {url}" in output


# ------------------------------------------------------------------------------------------ staying current


def test_pages_follow_a_new_apply_and_new_runs(tmp_path):
    """The index is rebuilt when the registry's version moves; the health board reads new runs in the
    background (here at every page: FEATURESTORE_UI_REFRESH_SECONDS=0)."""
    from datetime import datetime, timedelta, timezone

    from featurestore import FeatureStore

    repo = tmp_path / "repo"
    build_catalog_repo(repo)
    with serve(repo, env={"FEATURESTORE_API_KEYS": "", "FEATURESTORE_UI_REFRESH_SECONDS": "0"}) as server:
        status, page, _ = server.request("GET", "/ui")
        assert status == 200 and page.count("<td>materialize</td>") == 6
        assert server.request("GET", "/ui/views/card_country")[0] == 404

        features = (repo / "features.py").read_text() + (
            "\ncard_country = FeatureView(name='card_country', entities=[user], source=transactions,\n"
            "                            schema=[Field('country', String)], owner='risk-team@example.com')\n")
        (repo / "features.py").write_text(features)
        store = FeatureStore(repo_path=repo)
        store.apply()
        now = datetime.now(timezone.utc)
        store.materialize(now - timedelta(hours=2), now, feature_views=["user_txn"], progress=False)

        status, page, _ = server.request("GET", "/ui/views/card_country")
        assert status == 200 and "risk-team@example.com" in page
        status, body, _ = server.request("GET", "/ui/search.json?q=card_country")
        assert [r["name"] for r in body["results"]] == ["card_country"]

        def seven_runs():
            status, page, _ = server.request("GET", "/ui")
            return page.count("<td>materialize</td>") == 7 and page
        page = _wait(seven_runs, timeout=20, what="the new run on the overview")
        assert "<b>3</b> Feature views" in page
        status, page, _ = server.request("GET", "/ui/views/user_txn")
        assert re.search(r"<dt>Age</dt><dd>\d+ s</dd>", page), "the new materialization made it fresh"
