"""Importing a user's Python file (a repo's definitions, an on-demand view's function) as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def import_file(path: Path, module_name: str, repo: Path):
    """Import one Python file of a repo as ``module_name``, with the repo importable for its own
    imports (``from features import driver``)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    added_path = str(repo) not in sys.path
    if added_path:
        sys.path.insert(0, str(repo))
    try:
        spec.loader.exec_module(module)
    finally:
        if added_path:
            sys.path.remove(str(repo))
    return module
