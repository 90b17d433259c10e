"""The per-table manifest: the pointer that compaction switches atomically.

A reader lists the delta files *first* and reads the manifest *second*; it then sees the manifest's
compacted files plus the listed deltas the manifest does not mark as folded. Whichever side of a
switch the manifest read lands on, every committed row is seen exactly once:
- before the switch: old compacted files + all deltas it listed;
- after the switch: new compacted files (which include the folded deltas) + the rest.
Files a switch makes obsolete are kept for a grace period (so a reader that planned with the old
manifest can still open them), then deleted by the next compaction or `vacuum`.

`folded` names the absorbed delta files that may still be on disk: a name stays while its file
exists and for one more grace period after the file is deleted (so a reader that listed the file
just before the deletion still excludes it), then it is forgotten — the manifest stays bounded as
a run grows. A re-commit of a batch whose file is long gone is recognized by the commit log, which
names every file ever published (storage.writer).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from reasonloop.storage.layout import MANIFEST, fsync_dir, temp_path


@dataclass
class PartitionState:
    files: list[str] = field(default_factory=list)  # live compacted files, relative to table dir
    folded: dict[str, float | None] = field(default_factory=dict)  # absorbed delta -> when deleted (None: not yet)


@dataclass
class Manifest:
    version: int = 0
    partitions: dict[str, PartitionState] = field(default_factory=dict)
    garbage: list[tuple[str, float]] = field(default_factory=list)  # (relative path, obsolete since)

    def partition(self, name: str) -> PartitionState:
        return self.partitions.setdefault(name, PartitionState())

    def compacted_files(self, partition: str | None = None) -> list[str]:
        if partition is not None:
            state = self.partitions.get(partition)
            return list(state.files) if state else []
        return [f for state in self.partitions.values() for f in state.files]

    def is_folded(self, partition: str, name: str) -> bool:
        state = self.partitions.get(partition)
        return state is not None and name in state.folded

    def mark_deleted(self, rel: str, now: float) -> None:
        """An obsolete file is about to be deleted: if it is a folded delta, start the countdown
        after which its name is forgotten."""
        partition, _, name = rel.rpartition("/")
        state = self.partitions.get(partition)
        if state is not None and name in state.folded:
            state.folded[name] = now

    def forget_deleted(self, table_dir: Path, grace_seconds: float, now: float) -> int:
        """Forget folded names deleted more than a grace period ago. A file still on disk by then
        (a crash between saving the manifest and deleting) is deleted now and forgotten later."""
        forgotten = 0
        for partition, state in self.partitions.items():
            for name, deleted_at in list(state.folded.items()):
                if deleted_at is None or now - deleted_at < grace_seconds:
                    continue
                leftover = table_dir / partition / name
                if leftover.exists():
                    leftover.unlink(missing_ok=True)
                    state.folded[name] = now
                else:
                    del state.folded[name]
                    forgotten += 1
        return forgotten

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "partitions": {
                p: {"files": s.files, "folded": dict(sorted(s.folded.items()))}
                for p, s in sorted(self.partitions.items())
            },
            "garbage": [list(g) for g in self.garbage],
        }

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        def folded(value: dict | list) -> dict[str, float | None]:  # a list: the format before names were forgotten
            return dict(value) if isinstance(value, dict) else dict.fromkeys(value)

        return cls(
            version=int(data["version"]),
            partitions={
                p: PartitionState(list(s["files"]), folded(s["folded"])) for p, s in data["partitions"].items()
            },
            garbage=[(str(g[0]), float(g[1])) for g in data.get("garbage", [])],
        )


def load_manifest(table_dir: Path) -> Manifest:
    path = table_dir / MANIFEST
    try:
        with open(path, encoding="utf-8") as fh:
            return Manifest.from_json(json.load(fh))
    except FileNotFoundError:
        return Manifest()


def save_manifest(table_dir: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically (temp, fsync, rename, fsync dir). Hold `table_lock`."""
    tmp = temp_path(table_dir)
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest.to_json(), fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, table_dir / MANIFEST)
    fsync_dir(table_dir)


@contextmanager
def table_lock(table_dir: Path) -> Iterator[None]:
    """Serialize manifest writers (compaction, vacuum) of one table across processes.
    Committing writers never take it: they only add new delta files."""
    table_dir.mkdir(parents=True, exist_ok=True)
    with open(table_dir / ".lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
