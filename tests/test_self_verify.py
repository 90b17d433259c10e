"""Learning to Self-Verify: verification rows from hand-built groups (pairs, pools, balancing), the
prompts and warm-start rows, the schedule, and verification steps inside GRPO on both model kinds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from reasonloop.tasks.recipes.self_verify import (
    Judged,
    corrupt_answer,
    label_target,
    verification_pairs,
    verify_prompt,
    warm_start_rows,
)
from reasonloop.tasks.rewards.answers import exact
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.self_verify import is_verify_step
from tests.trainer_helpers import arith_store, make_trainer


def group(name: str, *rights: bool) -> list[Judged]:
    return [Judged(f"{name}{i}", name, r) for i, r in enumerate(rights)]


def test_pairs_from_mixed_groups_pools_and_skips() -> None:
    responses = [*group("m", False, True, True, False, False), *group("a", True, True), *group("w", False, False)]
    pairs = verification_pairs(responses, per_class=2, rng=random.Random(0))
    yes = [j.rollout_id for j, label in pairs if label]
    no = [j.rollout_id for j, label in pairs if not label]
    # The mixed group gives its first right (m1) and first wrong (m0); a second Yes comes from the
    # pool (m2, or a response of the all-right group), the second No from the pool (m3 only).
    assert yes[0] == "m1" and yes[1] in {"m2", "a0", "a1"} and no == ["m0", "m3"]
    assert not {"w0", "w1"} & set(yes + no)  # all-wrong groups are skipped


def test_balancing_trims_fills_with_replacement_and_leaves_an_empty_class_empty() -> None:
    mixed = [r for k in range(5) for r in group(f"g{k}", True, False)]
    trimmed = verification_pairs(mixed, per_class=3, rng=random.Random(1))
    assert [label for _, label in trimmed] == [True] * 3 + [False] * 3
    assert [j.rollout_id for j, label in trimmed if label] == ["g00", "g10", "g20"]  # group order, no pool needed
    filled = verification_pairs(group("x", True, False), per_class=4, rng=random.Random(1))
    assert sum(label for _, label in filled) == 4 and sum(not label for _, label in filled) == 4
    assert {j.rollout_id for j, label in filled if not label} == {"x1"}  # sampled with replacement
    only_right = verification_pairs(group("r", True, True), per_class=2, rng=random.Random(1))
    assert [label for _, label in only_right] == [True, True]  # no wrong response anywhere: no No rows
    assert verification_pairs(group("w", False), per_class=2, rng=random.Random(1)) == []


def test_prompts_targets_and_warm_start_rows() -> None:
    assert verify_prompt("12+7=", "2+7=9;1+0=1;#19", "short") == "12+7=2+7=9;1+0=1;#19\nverify:"
    assert verify_prompt("12+7=", "2+7=9;1+0=1;#19", "short", "answer") == "12+7=19\nverify:"
    teacher = verify_prompt("q?", "work #5", "teacher")
    assert "Question: q?" in teacher and "Student's Answer: work #5" in teacher and "\\boxed{Yes}" in teacher
    assert verify_prompt("q", "r", "Q={question} R={response}") == "Q=q R=r"
    with pytest.raises(ValueError, match="question"):
        verify_prompt("q", "r", "no fields")
    with pytest.raises(ValueError, match="mode"):
        verify_prompt("q", "r", "short", "half")
    assert exact(["p"], [label_target(True, "teacher")], answer=["Yes"]) == [1.0]
    assert exact(["p"], [label_target(False, "short")], answer=["No"]) == [1.0]
    rng = random.Random(0)
    assert corrupt_answer("1+2=3;#37", rng) != "1+2=3;#37" and corrupt_answer("x;#37", rng).startswith("x;#3")
    samples = [{"prompt": f"{a}+1=", "target": f"{a % 10}+1={a % 10 + 1};#{a + 1}", "source": "arith", "split": "train"}
               for a in range(200)]  # fmt: skip
    rows = warm_start_rows(samples, "short", seed=3)
    for row, sample in zip(rows, samples, strict=True):
        response = row["prompt"][len(sample["prompt"]) : -len("\nverify:")]
        right = exact([""], [response], answer=[sample["target"].rsplit("#", 1)[1]])[0] == 1.0
        assert row["target"] == ("#Yes" if right else "#No") and row["source"] == "arith_verify"
    assert 0.4 < sum(r["target"] == "#Yes" for r in rows) / len(rows) < 0.6


def test_schedule_and_config_checks() -> None:
    assert [s for s in range(12) if is_verify_step(s, 2)] == [2, 5, 8, 11]
    assert not any(is_verify_step(s, 0) for s in range(10))
    with pytest.raises(ValueError, match="question"):
        TrainConfig(verify_every=2, verify_template="nothing")
    with pytest.raises(ValueError, match="igrpo"):
        TrainConfig(verify_every=2, algo="igrpo")


def test_verification_steps_in_grpo_both_model_kinds(tmp_path: Path, sft_model: Path, model_kind: str) -> None:
    """Steps 0-1 solve, step 2 judges: its rows (stage verify) each judge a response of steps 0-1,
    labelled by that response's reward, rewarded by label match; the step trains on them."""
    store = arith_store(tmp_path / "store", chat=model_kind == "bpe")
    trainer = make_trainer(sft_model, store, tmp_path, scripted=False, rewards="exact", verify_every=2,
                           verify_template="short", prompts_per_step=6, group_size=4,
                           max_completion_length=12)  # fmt: skip
    for _ in range(2):
        trainer.train_step()
    metrics = trainer.train_step()
    judged = store.query(
        "SELECT p.policy_version AS parent_version, p.stage AS parent_stage, p.completion, v.prompt, "
        "v.rewards['verify'] AS verify, coalesce(v.final_completion, v.completion) AS said, p.rewards['exact'] AS parent "
        "FROM rollouts v JOIN rollouts p ON p.id = v.parent_rollout_id WHERE v.run_id = 't' AND v.stage = 'verify'"
    ).to_pylist()  # fmt: skip
    assert "verify/skipped" not in metrics  # the seeded start solves some problems in two steps
    assert len(judged) == 4 * (metrics["verify/rows_yes"] + metrics["verify/rows_no"]) > 0
    for row in judged:
        assert (
            row["parent_stage"] == "single" and row["parent_version"] in (0, 1) and row["completion"] in row["prompt"]
        )
        # The reward is label match: Yes for a right response, No for a wrong one.
        said = exact([""], [row["said"]], answer=["Yes" if row["parent"] == 1.0 else "No"])[0]
        assert row["verify"] == said
    versions = store.query("SELECT DISTINCT stage FROM rollouts WHERE run_id = 't' AND policy_version = 2")
    assert versions.column("stage").to_pylist() == ["verify"]


def test_a_verification_step_with_nothing_to_judge_solves_instead(tmp_path: Path, tiny_model_dir: Path) -> None:
    """An untrained model gets nothing right: no mixed or right group, so step 1 generates."""
    store = arith_store(tmp_path / "store")
    trainer = make_trainer(tiny_model_dir, store, tmp_path, scripted=False, rewards="exact", verify_every=1,
                           verify_template="short", prompts_per_step=2, group_size=2)  # fmt: skip
    trainer.train_step()
    metrics = trainer.train_step()
    assert metrics["verify/skipped"] == 1.0 and metrics["verify/rows_yes"] == metrics["verify/rows_no"] == 0.0
    stages = store.query("SELECT DISTINCT stage FROM rollouts WHERE run_id = 't' AND policy_version = 1")
    assert stages.column("stage").to_pylist() == ["single"]


def test_best_of_n_by_self_verification(tmp_path: Path, sft_model: Path, model_kind: str) -> None:
    from reasonloop.trainers.verify_eval import evaluate_self_verify, pick_verified

    assert pick_verified([False, True, False, False, False, True, True, False], 4) == [1, 5]
    assert pick_verified([False, False], 2) == [0]  # nothing judged right: the first sample
    store = arith_store(tmp_path / "store", chat=model_kind == "bpe")
    out = evaluate_self_verify(store, sft_model, n=3, limit=12, template="short", max_new_tokens=12)
    assert out["n"] == 12 and out["samples"] == 3
    for key in ("solve_accuracy", "first_sample_accuracy", "majority_accuracy", "verified_best_of_n_accuracy",
                "verify_accuracy", "verify_balanced_accuracy", "yes_rate", "sample_accuracy"):  # fmt: skip
        assert 0.0 <= out[key] <= 1.0
    # An arith-only model never writes a verdict: every sample is judged "not right", so the
    # verifier agrees exactly with the wrong samples and best-of-n falls back to the first sample.
    assert out["yes_rate"] == 0.0 and out["verify_accuracy"] == pytest.approx(1 - out["sample_accuracy"])
    assert out["verified_best_of_n_accuracy"] == out["first_sample_accuracy"]
