"""Engines compute joins, transforms and materialization reads; ``local`` is the embedded default."""
