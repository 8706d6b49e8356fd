"""Repairing one Delta table of the offline store that cannot be read (``DeltaOfflineStore.repair``).

In order, keeping as much as can be kept:

1. Checkpoints that cannot be read (or a ``_last_checkpoint`` naming a missing one) are set aside;
   readers then replay the JSON commits, and nothing is lost when those are all there.
2. If the latest version still cannot be read, the newest version that can is restored as a new
   table (its data files, its streams' application transactions and progress) and the old log is
   set aside. The commits after it are lost, and with them which rows they added or removed. The
   table gets a new identity, so an export recorded against the old one fails to reproduce instead
   of reading different rows under the same version number.
3. Data files the (now readable) latest version lists but that are missing, unreadable or hold fewer
   rows than their commit says are removed from the table in one commit; their rows are lost,
   their event-time range is reported.

Whatever is moved goes under ``aside``, with its path inside the table, for inspection.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from connectors import delta_log
from featurestore.ports.offline_store import REPLACE_TXN, TableRepair


def _load(uri: str, options: dict[str, str], version: int | None = None):
    from deltalake import DeltaTable

    return DeltaTable(uri, version=version, storage_options=options)


def _try_load(uri: str, options: dict[str, str]):
    try:
        return _load(uri, options)
    except Exception:  # noqa: BLE001 - deltalake names no narrower error for a log it cannot read
        return None


def repair(view: str, uri: str, fs: pafs.FileSystem, base: str, aside: str, options: dict[str, str],
           progress_key: str, display: Callable[[str], str]) -> TableRepair:
    """Repair the table at ``uri`` (``base`` inside ``fs``); see the module docs."""
    report = TableRepair(view, uri)
    log = delta_log.list_log(fs, base)
    if log.empty:
        return report
    table = _try_load(uri, options)
    if table is None:
        broken = delta_log.damaged_checkpoints(fs, log)
        if broken:
            delta_log.set_aside(fs, broken, base, aside)
            report.set_aside = display(aside)
            report.notes.append(f"set aside {len(broken)} checkpoint file(s) that could not be used ("
                                + ", ".join(display(p) for p in broken) + "); readers replay the commits instead")
            log = delta_log.list_log(fs, base)
            table = _try_load(uri, options)
    if table is None:
        table = _restore_readable(report, log, uri, fs, base, aside, options, progress_key, display)
    if table is not None:
        _drop_unreadable_files(report, table, fs, base, aside, display)
    return report


def _restore_readable(report: TableRepair, log: delta_log.LogFiles, uri: str, fs: pafs.FileSystem, base: str,
                      aside: str, options: dict[str, str], progress_key: str, display):
    """Step 2 of the module docs: the newest readable version as a new table (None: none is)."""
    damage = delta_log.find_damage(fs, log)
    found = delta_log.newest_loadable(fs, log, lambda v: _load(uri, options, v))
    if found is not None:  # read all of it before its log is moved (delta-rs reads some lazily)
        app_ids, progress = delta_log.stream_state(fs, log, found[0], progress_key)
        contents = _contents(found[1], app_ids)
    delta_log.set_aside(fs, log.all_files(), base, aside)
    report.set_aside = display(aside)
    report.lost_rows, report.lost_times = None, None
    where = f"{display(damage.path)} {damage.reason}" if damage else "its log cannot be read"
    if found is None:
        report.notes.append(f"{where}; no version of the table can be read: its log was set aside, the "
                            f"table is empty now and every row it held is lost")
        return None
    version = found[0]
    _recreate(uri, options, contents, progress, progress_key)
    table = _load(uri, options)
    rows = sum(n for n in pa.table(table.get_add_actions(flatten=True)).column("num_records").to_pylist() if n)
    lost, verb = _versions(version + 1, log.latest), "are" if log.latest > version + 1 else "is"
    report.notes.append(f"{where}; {lost} cannot be read and {verb} lost (which "
                        f"rows they added or removed is unknown): version {version} ({rows} rows) was restored as "
                        f"a new table, so exports recorded against the old table can no longer be reproduced")
    return table


def _versions(first: int, last: int) -> str:
    return f"version {first}" if first == last else f"versions {first}..{last}"


def _stats_json(action: dict[str, Any]) -> str:
    """An add action's statistics as the JSON a commit holds (what ``get_add_actions`` flattened)."""
    stats: dict[str, Any] = {"numRecords": action.get("num_records")}
    for prefix, key in (("min.", "minValues"), ("max.", "maxValues"), ("null_count.", "nullCount")):
        values = {}
        for name, value in action.items():
            if not name.startswith(prefix) or value is None:
                continue
            if isinstance(value, datetime):
                value = value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
            elif isinstance(value, float) and not math.isfinite(value):
                continue
            elif not isinstance(value, (int, float, str, bool)):
                continue
            values[name[len(prefix):]] = value
        if values:
            stats[key] = values
    return json.dumps(stats)


def _millis(value: Any) -> int:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value or 0)


def _contents(old, app_ids: set[str]) -> tuple[pa.Schema, list[str], list, list]:
    """What a new table needs to hold what ``old`` (one readable version) holds: its schema, partition
    columns, data files (add actions) and the versions of its streams' application transactions."""
    from deltalake import Transaction
    from deltalake.transaction import AddAction

    partitions = list(old.metadata().partition_columns)
    adds = []
    for action in pa.table(old.get_add_actions(flatten=True)).to_pylist():
        values = {c: None if action.get(f"partition.{c}") is None else str(action[f"partition.{c}"])
                  for c in partitions}
        adds.append(AddAction(action["path"], action["size_bytes"], values, _millis(action["modification_time"]),
                              True, _stats_json(action)))
    # The replace claims start again with the new table (they must grow with its versions, see REPLACE_TXN).
    txns = [Transaction(app, v) for app in sorted(app_ids - {REPLACE_TXN})
            if (v := old.transaction_version(app)) is not None]
    return pa.schema(old.schema().to_arrow()), partitions, adds, txns


def _recreate(uri: str, options: dict[str, str], contents: tuple[pa.Schema, list[str], list, list],
              progress: str | None, progress_key: str) -> None:
    """A new table at ``uri`` holding ``contents`` (``_contents``), with the streams' ``progress``."""
    from deltalake import CommitProperties, Schema
    from deltalake.transaction import create_table_with_add_actions

    schema, partitions, adds, txns = contents
    props = CommitProperties(custom_metadata={progress_key: progress} if progress else None,
                             app_transactions=txns or None)
    create_table_with_add_actions(uri, Schema.from_arrow(schema), adds, mode="append",
                                  partition_by=partitions or None, storage_options=options,
                                  commit_properties=props)


def _file_problem(fs: pafs.FileSystem, path: str, rows: int | None) -> str | None:
    """Why a data file cannot serve its rows, or None when it can."""
    try:
        with fs.open_input_file(path) as f:
            found = pq.read_metadata(f).num_rows
    except FileNotFoundError:
        return "is missing"
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        return f"cannot be read ({exc})"
    if rows is not None and found != rows:
        return f"holds {found} rows where its commit says {rows}"
    return None


def _drop_unreadable_files(report: TableRepair, table, fs: pafs.FileSystem, base: str, aside: str,
                           display) -> None:
    """Step 3 of the module docs."""
    from deltalake import CommitProperties
    from deltalake.transaction import RemoveAction

    now_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    removes, present, lost_rows, lost_times = [], [], 0, []
    schema = pa.schema(table.schema().to_arrow())
    ts_col = "event_timestamp" if "event_timestamp" in schema.names else next(
        (f.name for f in schema if pa.types.is_timestamp(f.type)), None)
    for action in pa.table(table.get_add_actions(flatten=True)).to_pylist():
        path = f"{base}/{action['path']}"
        rows = action.get("num_records")
        problem = _file_problem(fs, path, rows)
        if problem is None:
            continue
        removes.append(RemoveAction(action["path"], True, now_ms, size=action["size_bytes"]))
        if problem != "is missing":
            present.append(path)
        lo, hi = action.get(f"min.{ts_col}"), action.get(f"max.{ts_col}")
        if lo is not None and hi is not None and lost_times is not None:
            lost_times.append((lo, hi + timedelta(milliseconds=1)))  # statistics may be cut to milliseconds
        else:
            lost_times = None
        lost_rows = None if rows is None or lost_rows is None else lost_rows + rows
        span = f", event times {lo.isoformat()} .. {hi.isoformat()}" if lo is not None and hi is not None else ""
        report.notes.append(f"data file {display(path)} {problem}: removed from the table with its "
                            f"{'unknown number of' if rows is None else rows} rows{span}")
    if not removes:
        return
    table.create_write_transaction(removes, "append", schema, commit_properties=CommitProperties(max_commit_retries=20))
    if present:
        delta_log.set_aside(fs, present, base, aside)
        report.set_aside = display(aside)
    if report.lost_times is not None:
        report.lost_times = None if lost_times is None else report.lost_times + lost_times
    if report.lost_rows is not None:
        report.lost_rows = None if lost_rows is None else report.lost_rows + lost_rows
