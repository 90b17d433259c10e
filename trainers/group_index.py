"""An in-memory index of a run's rollout groups, kept current by following the store's commit log.

The async trainer polls for eligible groups many times a step; re-running a GROUP BY over every
file of the run on each poll costs more as the run grows (0.4-0.7 s a step at 60 steps in
benchmarks/async_bench.py). Following `rollouts/_commits.jsonl` from a byte offset reads only the
files committed since the last poll. Rebuilt from the run's live files on start (and if a logged
file was compacted away before it was read). Idempotent per file: a file read twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from reasonloop.storage import ReplayStore
from reasonloop.storage.commit_log import tail_commits

COLUMNS = ["group_id", "policy_version", "sample_idx", "reward", "stage"]


@dataclass
class GroupInfo:
    version: int
    before_start: bool = False  # committed before this index (this trainer process) started
    files: set[Path] = field(default_factory=set)
    rewards: dict[int, float | None] = field(default_factory=dict)  # sample_idx -> reward (None: unscored)

    @property
    def size(self) -> int:
        return len(self.rewards)

    @property
    def spread(self) -> bool:
        return len({r for r in self.rewards.values() if r is not None}) > 1


class GroupIndex:
    def __init__(self, store: ReplayStore, run_id: str, stage: str = "single") -> None:
        self.store, self.run_id, self.stage = store, run_id, stage
        self.table_dir = store.root / "rollouts"
        self.prefix = f"run_id={run_id}/"
        self.groups: dict[str, GroupInfo] = {}
        self.offset = 0
        self.rebuild(at_start=True)

    def rebuild(self, at_start: bool = False) -> None:
        """Everything committed so far: every live file of the run's partition."""
        _, self.offset = tail_commits(self.table_dir, 0)  # position first: later commits are re-read, harmlessly
        started = {g for g, info in self.groups.items() if not info.before_start}
        self.groups = {}
        for path in self._run_files():
            self._add_file(path)
        for g, info in self.groups.items():
            info.before_start = at_start or g not in started

    def _run_files(self) -> list[Path]:
        snap = self.store.live_files("rollouts")
        return [f for f in snap.files if f.parent.name == f"run_id={self.run_id}"]  # deltas and compacted

    def _add_file(self, path: Path) -> None:
        table = pq.read_table(path, columns=COLUMNS)
        for g, v, i, r, s in zip(*(table.column(c).to_pylist() for c in COLUMNS), strict=True):
            if s != self.stage:
                continue
            info = self.groups.setdefault(g, GroupInfo(v))
            info.rewards[i] = r
            info.files.add(path)

    def refresh(self) -> int:
        """Read the run's files committed since the last call; returns how many were read."""
        entries, offset = tail_commits(self.table_dir, self.offset)
        mine = [f for f, _ in entries if f.startswith(self.prefix)]
        try:
            for rel in mine:
                self._add_file(self.table_dir / rel)
        except FileNotFoundError:  # compacted (and vacuumed) before we read it: start over
            self.rebuild()
            return len(mine)
        self.offset = offset
        return len(mine)
