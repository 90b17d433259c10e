"""Lineage in tables: `consumed` says which rollouts each step trained on (and which it drew and
left), so "which rollouts trained checkpoint N" is one SQL query, for sync, replay and resumed runs."""

from __future__ import annotations

from pathlib import Path

from reasonloop.storage.lineage import checkpoint_lineage
from reasonloop.trainers.checkpoint import checkpoint_dir
from tests.trainer_helpers import arith_store, make_trainer


def consumed(store, status: str | None = None) -> list[dict]:
    where = f"AND status = '{status}'" if status else ""
    return store.query(f"SELECT * FROM consumed WHERE run_id = 't' {where} ORDER BY step, rollout_id").to_pylist()


def test_dynamic_sampling_steps_record_trained_overflow_and_zero_variance(sft_model_dir: Path, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "s")
    trainer = make_trainer(sft_model_dir, store, tmp_path, algo="dapo", max_refill_rounds=2, scripted=False)
    trainer.train(3)
    rows = consumed(store)
    rollouts = store.query("SELECT id, group_id, policy_version, reward FROM rollouts WHERE run_id = 't'").to_pylist()
    by_id = {r["id"]: r for r in rollouts}
    assert sorted(r["rollout_id"] for r in rows) == sorted(by_id), "every committed rollout is accounted for once"
    for r in rows:
        assert r["policy_version"] == by_id[r["rollout_id"]]["policy_version"] == r["step"] - 1
    groups: dict[str, set] = {}
    for r in rollouts:
        groups.setdefault(r["group_id"], set()).add(r["reward"])
    for r in rows:
        spread = len(groups[r["group_id"]]) > 1
        assert (r["status"] == "zero_variance") == (not spread), r
    metrics = store.query("SELECT step, metrics['batch_rows'] AS n FROM train_metrics ORDER BY step").to_pylist()
    for m in metrics:
        assert sum(r["status"] == "trained" and r["step"] == m["step"] for r in rows) == m["n"]
    with store.reader() as reader:
        lineage = checkpoint_lineage(reader, "t", 3).to_pylist()
    assert sorted(r["rollout_id"] for r in lineage) == sorted(r["rollout_id"] for r in rows if r["status"] == "trained")


def test_replayed_groups_count_their_uses(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "s")
    trainer = make_trainer(tiny_model_dir, store, tmp_path, replay_groups=2, max_staleness=2)
    trainer.train(4)
    trained = consumed(store, "trained")
    uses: dict[str, list[int]] = {}
    for r in trained:
        if r["rollout_id"] == min(x["rollout_id"] for x in trained if x["group_id"] == r["group_id"]):
            uses.setdefault(r["group_id"], []).append(r["use"])  # one row per group and step
    assert any(len(u) > 1 for u in uses.values()), "some group was replayed"
    assert all(u == list(range(1, len(u) + 1)) for u in uses.values()), "use counts 1, 2, ... per group"
    replayed = [r for r in trained if r["use"] > 1]
    assert all(r["step"] - 1 - r["policy_version"] <= 2 for r in replayed), "within the staleness bound"


def test_lineage_of_a_resumed_run_follows_the_attempts(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Attempt 0 trains to step 4 (checkpoint at 2) and dies; attempt 1 resumes from 2 and trains to
    5. Checkpoint 5's lineage: steps 1-2 of attempt 0, steps 3-5 of attempt 1; checkpoint 2's: steps
    1-2 of attempt 0 only."""
    store = arith_store(tmp_path / "s")
    first = make_trainer(tiny_model_dir, store, tmp_path)
    first.train(2)  # steps 1-2 and a checkpoint at 2
    first.train_step()
    first.train_step()  # steps 3-4, then the process "dies" before its next checkpoint
    resumed = make_trainer(checkpoint_dir(tmp_path / "ckpt", 2), store, tmp_path, save_every=2)
    resumed.restore(checkpoint_dir(tmp_path / "ckpt", 2))
    resumed.train(5)
    rows = consumed(store, "trained")
    assert {(r["attempt"], r["step"]) for r in rows} == {(0, s) for s in range(1, 5)} | {(1, s) for s in (3, 4, 5)}
    assert sum(r["attempt"] == 0 and r["step"] == 3 for r in rows) == 4 * 6, "the killed attempt's rows stay"
    with store.reader() as reader:
        five = checkpoint_lineage(reader, "t", 5).to_pylist()
        two = checkpoint_lineage(reader, "t", 2).to_pylist()
    assert {(r["attempt"], r["step"]) for r in five} == {(0, 1), (0, 2), (1, 3), (1, 4), (1, 5)}
    assert {(r["attempt"], r["step"]) for r in two} == {(0, 1), (0, 2)}
    per_step = {s: sum(r["step"] == s for r in five) for s in range(1, 6)}
    assert set(per_step.values()) == {4 * 6}, "each step: 4 prompts x 6 samples, once"
