"""Debian's headless Chromium driven by Selenium through chromium-driver, for the tests that look at
pages in a real browser (the quality report, the catalog). Host names never resolve: a page that wanted
anything from the network would show it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import _running_in_ci


def browser_binaries() -> tuple[str, str]:
    """(chromium, chromedriver); a skip without them, a failure in CI."""
    chromium = os.environ.get("FS_TEST_CHROMIUM") or shutil.which("chromium")
    driver = os.environ.get("FS_TEST_CHROMEDRIVER") or shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    message = "Debian's chromium and chromium-driver are not installed (.ci/services.sh install browser)"
    if _running_in_ci():
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


def headless_chromium(profile: Path, *, loopback: bool, console_log: bool = False):
    """A started headless Chromium whose profile and driver log live in ``profile``; ``loopback``
    lets it reach 127.0.0.1 (a local server), else no host at all resolves."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    rules = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" if loopback else "MAP * ~NOTFOUND"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", f"--host-resolver-rules={rules}", "--no-first-run",
                 f"--user-data-dir={profile / 'chromium-profile'}"):
        options.add_argument(flag)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path,
                                                             log_output=str(profile / "chromedriver.log")))
