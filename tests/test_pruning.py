"""File pruning by the commit log's per-file ranges: a sampler's window reads only the files whose
policy_version range can match, and gets exactly the rows of a scan over every file — with
duplicates across files, a compacted part, a file the log does not name yet and log lines written
before ranges existed."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reasonloop.storage import ReplayStore, commit_log
from reasonloop.storage.commit_log import COMMIT_LOG, file_ranges
from reasonloop.storage.compaction import CompactionPolicy
from reasonloop.storage.reader import may_match, snapshot
from reasonloop.storage.samplers import nonzero_std_groups, replay_groups, staleness_window
from tests.procs.common import rollout_batch

RUN = "run_id=run-a"


def with_rewards(table: pa.Table) -> pa.Table:
    """Rewards that differ within a group and advantages that are not 0, so every group counts."""
    n = table.num_rows
    table = table.set_column(table.column_names.index("reward"), "reward", pa.array([float(i % 3) for i in range(n)]))
    return table.append_column("advantage", pa.array([i % 3 - 0.5 for i in range(n)]))


def test_commit_log_keeps_each_files_version_range(store: ReplayStore) -> None:
    mixed = pa.concat_tables([rollout_batch("w", 3, 4, "run-a"), rollout_batch("w", 7, 4, "run-a")])
    store.write("rollouts", mixed)
    ranges = file_ranges(store.root / "rollouts")
    assert list(ranges.values()) == [{"policy_version": (3, 7)}]
    assert may_match({"policy_version": (3, 7)}, {"policy_version": (7, None)})
    assert not may_match({"policy_version": (3, 7)}, {"policy_version": (8, 9)})
    assert not may_match({"policy_version": (3, 7)}, {"policy_version": (None, 2)})
    assert may_match(None, {"policy_version": (8, 9)}), "a file without a logged range is always read"


def test_pruned_samplers_return_the_rows_of_a_full_scan(store: ReplayStore) -> None:
    for version in range(30):
        store.write("rollouts", with_rewards(rollout_batch("w", version, 8, "run-a")))
    store.write("rollouts", with_rewards(rollout_batch("w", 12, 8, "run-a")))  # the same batch again: no new file
    overlap = pa.concat_tables([rollout_batch("w", 20, 8, "run-a").slice(0, 4), rollout_batch("x", 21, 4, "run-a")])
    store.write("rollouts", with_rewards(overlap))  # ids of version 20 in a second file
    store.compact("rollouts", CompactionPolicy(min_files=1, grace_seconds=0))  # versions 0..21 now compacted
    for version in range(30, 40):
        store.write("rollouts", with_rewards(rollout_batch("w", version, 8, "run-a")))
    table_dir = store.root / "rollouts"
    # A file published but not logged (a writer killed between the two), and a line from before ranges.
    log = table_dir / COMMIT_LOG
    lines = log.read_text().splitlines()
    store.write("rollouts", with_rewards(rollout_batch("late", 35, 8, "run-a")))
    old_style = [json.loads(line) for line in lines]
    version_30 = next(i for i, r in enumerate(old_style) if r.get("ranges", {}).get("policy_version") == [30, 30])
    del old_style[version_30]["ranges"]
    log.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in old_style))
    commit_log._FOLLOWED.clear()  # as a reader process started after this rewrite (the log is append-only)

    every = snapshot(store.root, "rollouts", RUN)
    window = snapshot(store.root, "rollouts", RUN, bounds={"policy_version": (36, 39)})
    kept = {min(pc.unique(pq.read_table(f, columns=["policy_version"]).column(0)).to_pylist()) for f in window.deltas}
    assert len(every.deltas) == 11 and kept == {30, 35, 36, 37, 38, 39}, (
        "versions 36-39, the unlogged 35, the rangeless 30"
    )
    assert window.compacted == every.compacted

    def ids(table: pa.Table) -> list[str]:
        return sorted(table.column("id").to_pylist())

    with store.reader() as reader:
        for low, high in ((36, 39), (20, 33), (0, 5), (41, 50)):
            pruned = staleness_window(reader, "run-a", current_version=high, max_staleness=high - low)
            where = f"policy_version BETWEEN {low} AND {high}"
            full = reader.query(f"SELECT * FROM ({reader.scan('rollouts', where=where, partition=RUN)})")
            assert ids(pruned) == ids(full) and pruned.num_rows == full.num_rows
            assert pc.all(pc.greater_equal(pruned.column("policy_version"), low)).as_py() in (True, None)
        groups = nonzero_std_groups(reader, "run-a", min_version=34)
        assert set(groups.column("policy_version").to_pylist()) == set(range(34, 40))
        assert "late-35" in set(groups.column("group_id").to_pylist()), "the unlogged file is read"
        replay = replay_groups(reader, "run-a", low=18, high=31, groups=100, seed=0, stages=("single",))
        assert set(replay.column("policy_version").to_pylist()) == set(range(18, 32))
