"""The catalog's test repo: the payments example (examples/catalog/payments.py)."""

from __future__ import annotations

from examples.catalog.payments import build as build_catalog_repo

__all__ = ["build_catalog_repo"]
