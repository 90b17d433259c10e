"""The per-table commit log: the order in which batches were committed.

    <root>/<table>/_commits.jsonl      one line per published file:
        {"file": <relative path>, "rows": n, "ranges": {<column>: [min, max], ...}}

`ranges` holds the file's min/max of the table's `range_columns` (rollouts: policy_version;
train_metrics, checkpoints: step), so readers can leave out files no filter on them can match
without opening them (`file_ranges`, storage.reader.snapshot). Lines without it (older logs,
files `vacuum` logs late) are never pruned.

A line's position (1-based) is the commit's sequence number. Writers append after publishing, under
an exclusive lock on the log, so positions follow commit order across processes; wall-clock
timestamps would not (clocks differ between writers, and a batch is written long before it is
published). "Rows committed after position p" is what a data-triggered retrain counts.

Crash windows: a writer killed mid-append leaves a torn line (skipped; the next writer starts a new
line). A writer killed between publishing its file and appending the line leaves a visible
file the log does not name yet; counts undercount it, never double count. `vacuum` appends such
files (older than the grace period, so a live writer is not raced), and readers keep the first
line per file, so a line written twice counts once. Compaction writes no lines: it adds no rows.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

COMMIT_LOG = "_commits.jsonl"


@dataclass(frozen=True)
class CommitEntry:
    seq: int  # 1-based position in commit order
    file: str  # relative to the table directory
    rows: int


Ranges = dict[str, tuple[int, int]]  # column -> (min, max) of one file


def _line(file: str, rows: int, ranges: Ranges | None = None) -> str:
    record: dict = {"file": file, "rows": rows}
    if ranges:
        record["ranges"] = {col: [int(lo), int(hi)] for col, (lo, hi) in ranges.items()}
    return json.dumps(record, separators=(",", ":")) + "\n"


def append_commits(
    table_dir: Path, files: Iterable[tuple[str, int] | tuple[str, int, Ranges | None]], *, sync: bool = False
) -> None:
    """Append (relative file, rows[, ranges]) lines in one locked write."""
    text = "".join(_line(*entry) for entry in files)
    if not text:
        return
    fd = os.open(table_dir / COMMIT_LOG, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a writer died mid-line: don't extend its line
            text = "\n" + text
        os.write(fd, text.encode())
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def read_commits(table_dir: Path) -> list[CommitEntry]:
    """All commits in order; a torn last line (a writer killed mid-append) is skipped, and a file
    named twice keeps its first position."""
    path = table_dir / COMMIT_LOG
    if not path.exists():
        return []
    entries: list[CommitEntry] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record["file"] in seen:
                continue
            seen.add(record["file"])
            entries.append(CommitEntry(len(entries) + 1, record["file"], int(record["rows"])))
    return entries


def head(table_dir: Path) -> int:
    """The newest sequence number (0 for an empty table)."""
    return len(read_commits(table_dir))


def rows_after(table_dir: Path, seq: int) -> tuple[int, int]:
    """(rows committed after position `seq`, the newest position)."""
    entries = read_commits(table_dir)
    return sum(e.rows for e in entries[seq:]), len(entries)


def tail_commits(table_dir: Path, offset: int = 0) -> tuple[list[tuple[str, int]], int]:
    """(file, rows) of the complete lines after byte `offset`, and the offset after them: a reader
    that follows the log (a consumer of new batches) reads only what is new since its last call.
    A file may appear twice (see read_commits); consumers must be idempotent per file."""
    records, end = _tail_records(table_dir, offset)
    return [(record["file"], int(record["rows"])) for record in records], end


def _tail_records(table_dir: Path, offset: int) -> tuple[list[dict], int]:
    path = table_dir / COMMIT_LOG
    if not path.exists():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1  # a torn last line waits for the next call
    out = []
    for line in data[:end].splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out, offset + end


@dataclass
class _Positions:
    ident: tuple[int, int] = (0, 0)  # (device, inode) of the log followed
    offset: int = 0
    positions: dict[str, int] = field(default_factory=dict)
    ranges: dict[str, Ranges] = field(default_factory=dict)  # files logged with ranges only


_FOLLOWED: dict[Path, _Positions] = {}
_FOLLOW_LOCK = threading.Lock()


def positions(table_dir: Path) -> dict[str, int]:
    """file (relative to the table directory) -> its commit position, for every file ever logged,
    kept current by following the log from the last byte read (the log only grows, so a process
    that commits or reads often pays only for what is new). The dict is live: do not modify it."""
    return _follow(table_dir).positions


def file_ranges(table_dir: Path) -> dict[str, Ranges]:
    """file (relative to the table directory) -> its logged min/max per range column, followed
    like `positions`. Files logged without ranges are absent. Live: do not modify it."""
    return _follow(table_dir).ranges


def _follow(table_dir: Path) -> _Positions:
    path = table_dir / COMMIT_LOG
    with _FOLLOW_LOCK:
        state = _FOLLOWED.setdefault(path, _Positions())
        try:
            stat = path.stat()
        except FileNotFoundError:
            state.ident, state.offset, state.positions, state.ranges = (0, 0), 0, {}, {}
            return state
        ident = (stat.st_dev, stat.st_ino)
        if ident != state.ident or stat.st_size < state.offset:  # replaced or truncated: start over
            state.ident, state.offset, state.positions, state.ranges = ident, 0, {}, {}
        if stat.st_size > state.offset:
            records, state.offset = _tail_records(table_dir, state.offset)
            for record in records:
                file = record["file"]
                if file in state.positions:  # a file logged twice keeps its first line
                    continue
                state.positions[file] = len(state.positions) + 1
                if record.get("ranges"):
                    state.ranges[file] = {col: (int(lo), int(hi)) for col, (lo, hi) in record["ranges"].items()}
        return state
