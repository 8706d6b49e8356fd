"""The quality record of a view round-trips through the offline store's quality area."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from connectors.offline_delta import DeltaOfflineStore, DeltaOfflineStoreConfig
from featurestore.quality_runs import QualityRun, record, runs

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_runs_are_appended_and_read_back_oldest_first(tmp_path):
    store = SimpleNamespace(offline_store=DeltaOfflineStore(DeltaOfflineStoreConfig(path="offline"), tmp_path, "p"))
    assert runs(store, "v") == []
    second = QualityRun("stream", T0 + timedelta(hours=1), T0 + timedelta(hours=1, seconds=2), rows_in=5,
                        rows_written=4, checks=[{"name": "c", "on_fail": "drop", "rows_checked": 5,
                                                 "rows_failed": 1, "action": "dropped"}])
    first = QualityRun("materialize", T0, T0 + timedelta(seconds=3), rows_in=10, rows_written=10,
                       stats={"x": {"rows": 10, "nulls": 0}})
    record(store, "v", second)
    record(store, "v", first)
    assert runs(store, "v") == [first, second]
    assert runs(store, "v", since=T0 + timedelta(minutes=30)) == [second]
    assert store.offline_store.views() == []  # the quality area is not a view's table
    assert store.offline_store.quality.views() == ["v"]
    store.offline_store.delete_view("v")
    assert runs(store, "v") == []
