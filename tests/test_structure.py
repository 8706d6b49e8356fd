"""The code's structure, checked: imports point down the layers, the plugin table has one meaning,
and importing the package is cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_imports_point_down_the_layers():
    """The layers contract in .importlinter (function-local imports included)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_builtin_plugins_are_the_entry_points_pyproject_declares():
    from featurestore import plugins

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert {kind: declared[group] for kind, group in plugins.GROUPS.items()} == plugins._BUILTIN


def test_import_featurestore_loads_no_store_engine_or_pydantic():
    code = ("import sys, featurestore, featurestore.types, transforms.ir; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('featurestore', 'connectors', 'serving', 'pydantic', 'yaml', 'duckdb', 'pyspark')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['featurestore', 'featurestore.errors', 'featurestore.timestamps', 'featurestore.types']"


def test_the_export_table_names_every_public_name():
    import featurestore

    assert sorted(featurestore._EXPORTS) == sorted(featurestore.__all__)
