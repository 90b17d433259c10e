"""Store maintenance that is safe beside other machines and runs: host-aware vacuum, per-run
compaction, first-copy-by-commit-order deduplication, and a manifest that stays bounded."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from reasonloop.storage import ReplayStore, StoreConfig
from reasonloop.storage.compaction import CompactionPolicy
from reasonloop.storage.layout import TMP_PREFIX, TMP_SUFFIX, host_name, temp_owner, temp_path
from reasonloop.storage.manifest import load_manifest


def problems(n: int, start: int = 0, source: str = "user") -> list[dict]:
    return [
        {"prompt": f"{i}+1=", "answer": str(i + 1), "answer_type": "exact", "source": source}
        for i in range(start, start + n)
    ]


def test_temp_names_carry_host_and_pid(tmp_path: Path) -> None:
    owner = temp_owner(temp_path(tmp_path).name)
    assert owner is not None and owner.host == host_name() and owner.pid == os.getpid()
    assert temp_owner(".tmp-123-abc.inprogress") == temp_owner(".tmp-123-abc.inprogress")  # the older format
    assert temp_owner(".tmp-123-abc.inprogress").host is None


def test_vacuum_leaves_another_hosts_temp_until_it_is_old(store: ReplayStore) -> None:
    part = store.root / "problems" / "source=user"
    part.mkdir(parents=True)
    # A pid that is dead here may be a live writer on the machine that owns the name.
    foreign = part / f"{TMP_PREFIX}other_host-{os.getpid() + 10**6}-abc{TMP_SUFFIX}"
    local_dead = part / f"{TMP_PREFIX}{host_name()}-999999999-abc{TMP_SUFFIX}"
    foreign.write_bytes(b"partial")
    local_dead.write_bytes(b"partial")
    assert store.vacuum().temps_removed == 1
    assert foreign.exists() and not local_dead.exists()
    old = time.time() - 7200
    os.utime(foreign, (old, old))
    assert store.vacuum(temp_max_age=3600).temps_removed == 1 and not foreign.exists()


def test_compaction_of_one_partition_leaves_the_others(store: ReplayStore) -> None:
    for k in range(3):
        store.write("problems", problems(2, 2 * k, source="mine"))
        store.write("problems", problems(2, 2 * k, source="theirs"))
    [result] = store.compact("problems", partition="source=mine")
    assert result.partitions == 1
    assert store.delta_file_count("problems", "source=mine") == 0
    assert store.delta_file_count("problems", "source=theirs") == 3


def test_trainer_compacts_only_its_own_run(store: ReplayStore, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasonloop.trainers.config import TrainConfig
    from reasonloop.trainers.rl import RLTrainer

    store.write("problems", problems(8))
    other = [
        {"problem_id": "p", "group_id": f"g{i}", "sample_idx": 0, "policy_version": 0, "prompt": "x", "completion": "y",
         "prompt_ids": [1], "completion_ids": [2], "logprobs": [-1.0], "finish_reason": "stop", "reward": 0.0}
        for i in range(3)
    ]  # fmt: skip
    for row in other:
        store.write("rollouts", [row], run_id="someone-else")
    config = TrainConfig(steps=2, prompts_per_step=2, group_size=2, max_completion_length=4, compact_files=1)
    trainer = RLTrainer(
        config, model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir), store=store, run_id="mine", output_dir=store.root / "ck",
    )  # fmt: skip
    trainer.train(2)
    assert store.delta_file_count("rollouts", "run_id=someone-else") == 3
    assert load_manifest(store.root / "rollouts").compacted_files("run_id=mine")


def test_first_copy_by_commit_order_wins_not_created_at(store: ReplayStore) -> None:
    """The same id committed twice with different content: readers and compaction keep the copy
    committed first, even when a writer's clock stamped it later."""
    later = datetime.now(timezone.utc) + timedelta(days=1)
    row = {**problems(1)[0], "metadata": "first committed"}
    store.write("problems", [{**row, "created_at": later.isoformat()}])
    store.write("problems", [{**row, "metadata": "second committed", "created_at": "2020-01-01T00:00:00+00:00"},
                             *problems(1, 5)])  # fmt: skip
    query = "SELECT metadata FROM problems WHERE prompt = '0+1='"
    assert store.query(query).to_pylist() == [{"metadata": "first committed"}]
    store.compact("problems", CompactionPolicy(min_files=2, grace_seconds=0))
    assert store.query(query).to_pylist() == [{"metadata": "first committed"}]
    assert store.query("SELECT count(*) AS n FROM problems").to_pylist() == [{"n": 2}]


def test_manifest_stays_bounded_and_old_batches_stay_duplicates(tmp_path: Path) -> None:
    """Compaction forgets absorbed file names once their files are long gone; a re-commit of a
    batch from the first commits is still recognized (the commit log remembers every file)."""
    store = ReplayStore(tmp_path, StoreConfig(compaction=CompactionPolicy(min_files=8, grace_seconds=0.05)))
    sizes = []
    for k in range(240):
        store.write("problems", problems(2, 2 * k), sync=False)
        if k % 8 == 7:
            store.compact("problems")
            time.sleep(0.06)
            sizes.append((store.root / "problems" / "_manifest.json").stat().st_size)
    folded = json.loads((store.root / "problems" / "_manifest.json").read_text())["partitions"]["source=user"]["folded"]
    assert len(folded) <= 16, "only names of files deleted within the last grace period stay"
    assert max(sizes[-10:]) <= 2 * min(sizes[:5]) + 512, sizes
    again = store.write("problems", problems(2, 0))  # the very first batch
    assert (again.committed, again.duplicates, again.folded) == (0, 2, 2)
    assert store.query("SELECT count(*) AS n FROM problems").to_pylist() == [{"n": 480}]


def test_killed_writer_file_is_logged_when_compaction_folds_it(
    store: ReplayStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file published but never logged (writer killed in between) is logged by the compaction
    that absorbs it, so a later re-commit of it is a duplicate, not new rows."""
    import reasonloop.storage.writer as writer

    with monkeypatch.context() as m:
        m.setattr(writer, "append_commits", lambda *a, **k: None)  # as if killed before logging
        result = store.write("problems", problems(2))
    store.write("problems", problems(2, 2))
    log = store.root / "problems" / "_commits.jsonl"
    assert result.files[0].name not in log.read_text()
    store.compact("problems", CompactionPolicy(min_files=2, grace_seconds=0))
    rel = f"{result.files[0].parent.name}/{result.files[0].name}"
    assert rel in log.read_text()
    assert store.write("problems", problems(2)).committed == 0
