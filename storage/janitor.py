"""`vacuum`: remove what crashes and compactions leave behind, never what a reader may still use.

- temp files whose writer process is gone (a process of this host; another host's temp is left
  until it is older than `temp_max_age`, since a pid means nothing across machines);
- obsolete files past the grace period (listed in a manifest's garbage);
- orphans of a crash between publishing a compacted file and switching the manifest, or between
  the switch and deleting what it made obsolete (unreferenced and older than the grace period).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from reasonloop.schemas import TABLES
from reasonloop.storage.commit_log import append_commits, read_commits
from reasonloop.storage.compaction import take_expired
from reasonloop.storage.layout import COMPACTED_DIR, host_name, iter_delta_files, iter_temp_files, temp_owner
from reasonloop.storage.manifest import Manifest, load_manifest, save_manifest, table_lock


@dataclass
class VacuumResult:
    temps_removed: int = 0
    obsolete_removed: int = 0
    orphans_removed: int = 0
    commits_logged: int = 0  # published files a crashed writer had not yet logged


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) holds its pid but writes nothing more
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return -1.0


def vacuum(root: Path, *, grace_seconds: float = 60.0, temp_max_age: float = 3600.0) -> VacuumResult:
    result = VacuumResult()
    now = time.time()
    here = host_name()
    for tmp in iter_temp_files(root):
        owner = temp_owner(tmp.name)
        local = owner is not None and owner.host in (None, here)
        # Another host's writer may be alive whatever its pid: only its age tells.
        dead = owner is None or (local and not pid_alive(owner.pid))
        if dead or _age(tmp, now) > temp_max_age:
            tmp.unlink(missing_ok=True)
            result.temps_removed += 1
    for name in TABLES:
        table_dir = root / name
        if not table_dir.is_dir():
            continue
        with table_lock(table_dir):
            manifest = load_manifest(table_dir)
            expired, forgotten = take_expired(manifest, table_dir, grace_seconds, now)
            pending = {rel for rel, _ in manifest.garbage} | set(manifest.compacted_files())
            orphans = [p for p in iter_delta_files(table_dir) if manifest.is_folded(p.parent.name, p.name)]
            compacted_dir = table_dir / COMPACTED_DIR
            if compacted_dir.is_dir():
                orphans += list(compacted_dir.glob("*/c-*.parquet"))
            orphans = [
                p for p in orphans if str(p.relative_to(table_dir)) not in pending and _age(p, now) >= grace_seconds
            ]
            for path in orphans:
                manifest.mark_deleted(str(path.relative_to(table_dir)), now)  # a folded delta: forget it later
            if expired or forgotten or orphans:
                manifest.version += 1
                save_manifest(table_dir, manifest)
            for rel in expired:
                (table_dir / rel).unlink(missing_ok=True)
            for path in orphans:
                path.unlink(missing_ok=True)
            result.obsolete_removed += len(expired)
            result.orphans_removed += len(orphans)
            result.commits_logged += _log_unlogged(table_dir, manifest, grace_seconds, now)
    return result


def _log_unlogged(table_dir: Path, manifest: Manifest, grace_seconds: float, now: float) -> int:
    """Append commit-log lines for published delta files the log does not name (a writer killed
    between publishing and logging); only files older than the grace period, so a live writer's
    own append is not raced."""
    logged = {e.file for e in read_commits(table_dir)}
    missing = [
        p for p in iter_delta_files(table_dir)
        if f"{p.parent.name}/{p.name}" not in logged and not manifest.is_folded(p.parent.name, p.name)
        and _age(p, now) >= grace_seconds
    ]  # fmt: skip
    append_commits(table_dir, [(f"{p.parent.name}/{p.name}", pq.ParquetFile(p).metadata.num_rows) for p in missing])
    return len(missing)
