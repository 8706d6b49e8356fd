"""The examples run end to end (the README points users at them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "exported a point-in-time-correct training set: 100 rows" in out.stdout
    assert (tmp_path / "demo" / "data" / "training.parquet.manifest.json").exists()


def test_fraud_detection_example(tmp_path):
    repo = tmp_path / "fraud_detection"
    shutil.copytree(ROOT / "examples" / "fraud_detection", repo, ignore=shutil.ignore_patterns("data"))
    out = subprocess.run([sys.executable, str(repo / "run.py")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ratio_to_7d_mean" in out.stdout and "'amount_count_lifetime': 51" in out.stdout
