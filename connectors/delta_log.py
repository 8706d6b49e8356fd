"""A Delta table's commit log read file by file, for when delta-rs cannot read it: which file is
damaged, which version still loads, and moving damaged files out of the table.

A reader of a table's latest version starts from its newest checkpoint (``_last_checkpoint`` names
it) and replays every JSON commit after it, so a missing or unreadable checkpoint, a gap in the
commits or a commit that is not JSON lines stops it. Versions before the damage still load.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow.parquet as pq
from pyarrow import fs as pafs

LOG_DIR = "_delta_log"
LAST_CHECKPOINT = "_last_checkpoint"
_VERSIONED = re.compile(r"^(\d{20})\.")
_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(\.\d+\.\d+)?\.parquet$")


def commit_name(version: int) -> str:
    return f"{version:020d}.json"


@dataclass(frozen=True)
class Damage:
    """The first damaged file a reader meets: its path and what is wrong with it."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} {self.reason}"


@dataclass
class LogFiles:
    """The files of one table's ``_delta_log``, by version."""

    directory: str
    commits: dict[int, str] = field(default_factory=dict)
    checkpoints: dict[int, list[str]] = field(default_factory=dict)
    versioned: dict[int, list[str]] = field(default_factory=dict)  # every file named by a version
    last_checkpoint: str | None = None
    others: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.commits and not self.checkpoints

    @property
    def latest(self) -> int:
        return max([*self.commits, *self.checkpoints], default=-1)

    def all_files(self) -> list[str]:
        files = [p for paths in self.versioned.values() for p in paths] + self.others
        return sorted(files + ([self.last_checkpoint] if self.last_checkpoint else []))


def list_log(fs: pafs.FileSystem, table_path: str) -> LogFiles:
    """The table's log files (none when it has no ``_delta_log``)."""
    log = LogFiles(f"{table_path}/{LOG_DIR}")
    for info in fs.get_file_info(pafs.FileSelector(log.directory, allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        name = info.path.rsplit("/", 1)[-1]
        versioned = _VERSIONED.match(name)
        if name == LAST_CHECKPOINT:
            log.last_checkpoint = info.path
        elif versioned:
            version = int(versioned.group(1))
            log.versioned.setdefault(version, []).append(info.path)
            if _COMMIT.match(name):
                log.commits[version] = info.path
            elif _CHECKPOINT.match(name):
                log.checkpoints.setdefault(version, []).append(info.path)
        else:
            log.others.append(info.path)
    return log


def _read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as f:
        return f.read().decode("utf-8")


def commit_actions(fs: pafs.FileSystem, path: str) -> list[dict[str, Any]]:
    """The actions of one JSON commit; ValueError when it is not JSON lines of objects."""
    actions = []
    for number, line in enumerate(_read_text(fs, path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(action, dict):
            raise ValueError(f"line {number} is not a JSON object")
        actions.append(action)
    if not actions:
        raise ValueError("is empty")
    return actions


def _checkpoint_readable(fs: pafs.FileSystem, path: str) -> bool:
    try:
        with fs.open_input_file(path) as f:
            pq.read_metadata(f)
        return True
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return False


def _hinted_checkpoint(fs: pafs.FileSystem, log: LogFiles) -> tuple[int | None, Damage | None]:
    """The version ``_last_checkpoint`` names, or the damage of that hint."""
    if log.last_checkpoint is None:
        return None, None
    try:
        version = json.loads(_read_text(fs, log.last_checkpoint))["version"]
        if not isinstance(version, int):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return None, Damage(log.last_checkpoint, "is not a valid checkpoint hint")
    if version not in log.checkpoints:
        return version, Damage(f"{log.directory}/{version:020d}.checkpoint.parquet",
                               f"is missing (named by {log.last_checkpoint})")
    return version, None


def find_damage(fs: pafs.FileSystem, log: LogFiles, upto: int | None = None) -> Damage | None:
    """The first damaged file a reader of version ``upto`` (default: the latest) meets, else None."""
    if log.empty:
        return Damage(log.directory, "holds no commits")
    upto = log.latest if upto is None else upto
    if upto == log.latest:
        _, damage = _hinted_checkpoint(fs, log)
        if damage is not None:
            return damage
    start = 0
    usable = [v for v in log.checkpoints if v <= upto]
    if usable:
        start = max(usable)
        for part in log.checkpoints[start]:
            if not _checkpoint_readable(fs, part):
                return Damage(part, "is not a readable Parquet checkpoint")
        start += 1
    for version in range(start, upto + 1):
        path = log.commits.get(version)
        if path is None:
            return Damage(f"{log.directory}/{commit_name(version)}", "is missing")
        try:
            actions = commit_actions(fs, path)
        except (ValueError, UnicodeDecodeError) as exc:
            return Damage(path, f"is damaged: {exc}")
        if version == 0 and not any("metaData" in a for a in actions):
            return Damage(path, "lacks the table's metadata")
    return None


def damaged_checkpoints(fs: pafs.FileSystem, log: LogFiles) -> list[str]:
    """Checkpoint files a reader would trip on: unreadable ones, and a ``_last_checkpoint`` naming a
    checkpoint that is missing or unreadable. Without them, readers replay the JSON commits."""
    out = [p for paths in log.checkpoints.values() for p in paths if not _checkpoint_readable(fs, p)]
    hinted, damage = _hinted_checkpoint(fs, log)
    if damage is not None or (hinted is not None and any(p in out for p in log.checkpoints.get(hinted, []))):
        out.append(log.last_checkpoint)
    return sorted(out)


def newest_loadable(fs: pafs.FileSystem, log: LogFiles, load: Callable[[int], Any]) -> tuple[int, Any] | None:
    """(version, table) of the newest version that ``load`` opens, looking below each damage found."""
    upto = log.latest
    while upto >= 0:
        damage = find_damage(fs, log, upto)
        if damage is not None:
            found = _VERSIONED.match(damage.path.rsplit("/", 1)[-1])
            if found is None or int(found.group(1)) > upto:
                upto -= 1
            else:
                upto = int(found.group(1)) - 1
            continue
        try:
            return upto, load(upto)
        except Exception:  # noqa: BLE001 - delta-rs names no narrower error; an older version may load
            upto -= 1
    return None


def stream_state(fs: pafs.FileSystem, log: LogFiles, upto: int, progress_key: str
                 ) -> tuple[set[str], str | None]:
    """The application transaction ids committed up to ``upto`` (from the JSON commits still there),
    and the newest commit metadata under ``progress_key`` among them."""
    app_ids: set[str] = set()
    progress = None
    for version in sorted(v for v in log.commits if v <= upto):
        try:
            actions = commit_actions(fs, log.commits[version])
        except (ValueError, UnicodeDecodeError):
            continue
        for action in actions:
            if "txn" in action:
                app_ids.add(action["txn"].get("appId"))
            info = action.get("commitInfo")
            if isinstance(info, dict) and info.get(progress_key):
                progress = info[progress_key]
    for paths in (log.checkpoints[v] for v in log.checkpoints if v <= upto):
        for path in paths:
            try:
                with fs.open_input_file(path) as f:
                    txns = pq.read_table(f, columns=["txn"]).column("txn").to_pylist()
            except (OSError, ValueError, KeyError):
                continue
            app_ids |= {t["appId"] for t in txns if t}
    app_ids.discard(None)
    return app_ids, progress


def set_aside(fs: pafs.FileSystem, paths: list[str], table_path: str, destination: str) -> None:
    """Move ``paths`` (inside the table at ``table_path``) under ``destination``, keeping their
    relative paths: out of every reader's way, kept for inspection."""
    for path in paths:
        target = f"{destination}/{path[len(table_path) + 1:]}"
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        fs.move(path, target)
