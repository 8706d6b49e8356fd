"""The README's pictures of the web catalog: builds the payments example in a temporary folder, serves
it with ``featurestore serve`` and photographs pages in Debian's headless Chromium (chromium and
chromium-driver; Selenium drives it).

    python examples/catalog/screenshots.py [OUT_DIR]     # default: docs/
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from examples.catalog.payments import build  # noqa: E402

PAGES = {"catalog-overview.png": ("/ui", 1280), "catalog-view.png": ("/ui/views/user_txn", 1280),
         "catalog-lineage.png": ("/ui/lineage", 1280)}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _up(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        conn.getresponse().read()
        return True
    except OSError:
        return False


def main(out: str = "docs") -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "payments"
        build(repo, seed=7)
        port = _port()
        server = subprocess.Popen([sys.executable, "-m", "featurestore.cli", "--repo", str(repo), "serve",
                                   "--port", str(port), "--log-level", "warning"],
                                  env={**os.environ, "FEATURESTORE_API_KEYS": "", "PYTHONPATH": str(ROOT)},
                                  start_new_session=True)
        options = webdriver.ChromeOptions()
        options.binary_location = os.environ.get("FS_TEST_CHROMIUM") or shutil.which("chromium")
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--force-device-scale-factor=1"):
            options.add_argument(flag)
        driver = None
        try:
            deadline = time.monotonic() + 60
            while not _up(port):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            driver = webdriver.Chrome(options=options, service=Service(
                executable_path=os.environ.get("FS_TEST_CHROMEDRIVER") or shutil.which("chromedriver")))
            for name, (path, width) in PAGES.items():
                driver.set_window_size(width, 900)
                driver.get(f"http://127.0.0.1:{port}{path}")
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(width, min(height, 1400))
                driver.save_screenshot(str(target / name))
                print(f"wrote {target / name}")
        finally:
            if driver is not None:
                driver.quit()
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main(*sys.argv[1:2])
