"""The code's structure, checked: imports point down the layers, the plugin table has one meaning,
and importing the package is cheap."""

from __future__ import annotations

import ast
import json
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


# Every function-local import of the project's own code, and why it is deferred: each one keeps a heavy
# or optional library out of the importing module until the function runs. The test below finds them
# all (a new one must be listed here) and checks that each still defers at least one such library.
DEFERRED_IMPORTS = {
    # `featurestore --help` and `init` start without pyarrow, pydantic or the stores
    ("featurestore.cli", "featurestore.config"),
    ("featurestore.cli", "featurestore.drift"),  # numpy, pyarrow and scipy's statistics
    ("featurestore.cli", "featurestore.drift_records"),  # pyarrow, for `stats --plot`
    ("featurestore.cli", "featurestore.quality_report"),  # matplotlib, for `stats --plot`
    ("featurestore.cli", "featurestore.materialize"),
    ("featurestore.cli", "featurestore.quality_table"),  # rich, for `stats` only
    ("featurestore.cli", "featurestore.quality_runs"),  # pyarrow (describe's latest quality run)
    ("featurestore.cli", "featurestore.registry_tables"),  # rich, and pyarrow through quality_runs
    ("featurestore.cli", "featurestore.scaffold"),
    ("featurestore.cli", "featurestore.store"),
    ("featurestore.cli", "featurestore.streaming.manager"),
    ("featurestore.cli", "serving.auth"),  # FastAPI: the optional "serving" extra
    ("featurestore.cli", "serving.limits"),  # numpy and pyarrow (the plan cache's default size)
    # confluent_kafka (and its pydantic config) only where a Kafka client is made
    ("featurestore.push", "connectors.kafka"),
    ("featurestore.streaming.env", "connectors.kafka"),
    ("featurestore.streaming.writers", "connectors.kafka"),
    # SQLAlchemy, when the registry is first used
    ("featurestore.store", "featurestore.registry"),
    # uvicorn workers import the app themselves; the parent needs only the server loop
    ("serving.server", "serving.app"),
    ("serving.server", "serving.balanced_accept"),
    ("serving.server", "serving.http_protocol"),
    ("serving.server", "serving.limits"),
}
HEAVY = {"pyspark", "pyflink", "duckdb", "pandas", "fastapi", "starlette", "uvicorn", "uvloop", "httptools",
         "redis", "confluent_kafka", "sqlalchemy", "pyarrow", "pydantic", "yaml", "numpy", "prometheus_client",
         "deltalake", "scipy", "rich"}
OWN = ("featurestore", "connectors", "transforms", "serving")


def _function_local_imports() -> set[tuple[str, str]]:
    """(importing module, imported module) for each import of the project's code inside a function."""
    found = set()
    for package in OWN:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for fn in ast.walk(ast.parse(path.read_text())):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import):
                        found |= {(module, a.name) for a in node.names if a.name.split(".")[0] in OWN}
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                            and node.module.split(".")[0] in OWN:
                        for a in node.names:  # `from package import submodule` imports the submodule
                            sub = ROOT.joinpath(*node.module.split("."), a.name)
                            is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                            found.add((module, f"{node.module}.{a.name}" if is_module else node.module))
    return found


def test_function_local_imports_are_the_listed_ones_and_each_defers_a_heavy_library():
    assert _function_local_imports() == DEFERRED_IMPORTS
    code = ("import importlib, json, sys\n"
            "importlib.import_module(sys.argv[1]); before = {m.split('.')[0] for m in sys.modules}\n"
            "importlib.import_module(sys.argv[2]); after = {m.split('.')[0] for m in sys.modules}\n"
            "print(json.dumps(sorted(after - before)))")
    for importer, target in sorted(DEFERRED_IMPORTS):
        out = subprocess.run([sys.executable, "-c", code, importer, target], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        deferred = set(json.loads(out.stdout)) & HEAVY
        assert deferred, f"{importer} imports {target} inside a function, but that defers no heavy library"
