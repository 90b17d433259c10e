"""Contextual Rollout Bandits: context features by SQL on a hand-built store, the delayed reward,
selection (top-K per fresh group, best stale rows), the online update on a scripted reward, and
GRPO with --scheduler cbs on both model kinds (decisions in `schedule`, lineage in `consumed`)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import torch

from reasonloop.schemas import row_id
from reasonloop.trainers.cbs import FEATURES, CBSScheduler, candidate_features, delayed_reward
from reasonloop.trainers.config import TrainConfig
from tests.trainer_helpers import arith_store, make_trainer


def rollout(version: int, group: str, k: int, *, reward: float, advantage: float, n: int = 4,
            finish: str = "stop", entropy: float = 0.5, logprob: float = -1.0) -> dict:  # fmt: skip
    return {
        "id": row_id("rollouts", ("r", version, group, k)), "run_id": "r", "problem_id": f"p-{group}",
        "group_id": group, "sample_idx": k, "stage": "single", "policy_version": version, "prompt": "1+1=",
        "completion": "x" * n, "prompt_ids": [1, 2], "completion_ids": list(range(n)), "logprobs": [logprob] * n,
        "entropy": entropy, "finish_reason": finish, "reward": reward, "advantage": advantage,
    }  # fmt: skip


def test_features_by_sql_on_a_hand_built_store(store) -> None:
    old = [
        rollout(0, "g0", 0, reward=1.0, advantage=0.5, n=8, entropy=0.2, logprob=-0.5),
        rollout(0, "g0", 1, reward=0.0, advantage=-0.5, n=4, finish="length"),
        rollout(0, "g1", 0, reward=1.0, advantage=0.0),
    ]  # zero advantage, stale: nothing to teach
    fresh = [rollout(2, "g2", 0, reward=0.0, advantage=0.0), rollout(2, "g2", 1, reward=0.0, advantage=0.0)]
    store.write("rollouts", old + fresh)
    consumed = [{"step": s, "attempt": 0, "rollout_id": old[0]["id"], "group_id": "g0", "policy_version": 0,
                 "status": "trained", "use": u, "weight": 1.0} for s, u in ((1, 1), (2, 2))]  # fmt: skip
    store.write("consumed", consumed, run_id="r")
    store.write("train_metrics", [{"step": 1, "loss": 0.0, "metrics": {"clip_ratio_low": 0.1, "clip_ratio_high": 0.0}},
                                  {"step": 2, "loss": 0.0, "metrics": {"clip_ratio_low": 0.05, "clip_ratio_high": 0.2}}],
                run_id="r")  # fmt: skip
    candidates, x = candidate_features(store.reader(threads=1), "r", step=2, staleness=2, max_length=8)
    ids = candidates.column("id").to_pylist()
    got = {i: dict(zip(FEATURES, row, strict=True)) for i, row in zip(ids, x.tolist(), strict=True)}
    assert set(got) == {old[0]["id"], old[1]["id"], fresh[0]["id"], fresh[1]["id"]}
    first = got[old[0]["id"]]
    expected = {"reward": 1.0, "advantage": 0.5, "entropy": 0.2, "clip_ratio": 0.25, "length": 1.0, "truncated": 0.0,
                "age": 1.0, "uses": 2.0, "group_reward": 0.5, "mean_logprob": -0.5}  # fmt: skip
    assert first == pytest.approx(expected)  # clip ratio: the last step that trained it (2)
    second = got[old[1]["id"]]
    assert second["truncated"] == 1.0 and second["length"] == 0.5 and second["uses"] == 0.0
    assert second["clip_ratio"] == 0.0 and got[fresh[0]["id"]]["age"] == 0.0


def test_delayed_reward_by_hand() -> None:
    assert delayed_reward((0.2, 1.0), (0.5, 1.5), weight=1.0, e_min=0.5) == pytest.approx(0.3 - 0.5)
    assert delayed_reward((0.2, 0.4), (0.5, 1.5), weight=1.0, e_min=0.5) == pytest.approx(0.3)  # below e_min
    assert delayed_reward((0.5, 1.0), (0.4, 0.8), weight=2.0, e_min=0.0) == pytest.approx(-0.1 + 0.4)


def test_selection_top_k_per_fresh_group_plus_best_stale() -> None:
    scheduler = CBSScheduler(explore=0.0, seed=0)
    candidates = pa.table({"id": [f"r{i}" for i in range(7)], "group_id": ["a", "a", "a", "b", "b", "s", "s"],
                           "policy_version": [5, 5, 5, 5, 5, 3, 4]})  # fmt: skip
    x = torch.zeros(7, len(FEATURES))
    predicted = scheduler.score(x)[0]
    assert torch.allclose(predicted, predicted[0])  # same context, same score: ties go to the earlier row
    selected, _, bonus = scheduler.select(candidates, x, 5, keep=2, replay_rows=1)
    assert selected == [True, True, False, True, True, True, False] and bonus.abs().max() == 0


def test_the_scheduler_learns_which_context_pays_and_explores_less_where_it_has_been() -> None:
    torch.manual_seed(0)
    scheduler = CBSScheduler(explore=0.5, entropy_weight=0.0, seed=0, lr=1e-2)
    candidates = pa.table({"id": [f"r{i}" for i in range(16)], "group_id": ["s"] * 16, "policy_version": [0] * 16})
    value, picked = 0.0, []
    for _ in range(150):  # scripted: a batch's gain is the mean reward feature of what it trained on
        x = torch.rand(16, len(FEATURES))
        selected, _, _ = scheduler.select(candidates, x, 1, keep=0, replay_rows=4)
        scheduler.remember(x, selected, value, 0.0)
        picked.append(float(x[torch.tensor(selected), 0].mean()))
        value += picked[-1] - 0.5
        scheduler.observe(value, 0.0)
    probe = torch.rand(256, len(FEATURES))
    predicted, bonus = scheduler.score(probe)
    assert torch.corrcoef(torch.stack([predicted, probe[:, 0]]))[0, 1] > 0.6
    assert sum(picked[-50:]) / 50 > 0.65  # the top 4 of 16 by x0 average ~0.88; a blind pick 0.5
    assert len(scheduler.history) == 150 and scheduler.pending is None
    fresh = CBSScheduler(explore=0.5, seed=0)
    assert bonus.mean() < fresh.score(probe)[1].mean()  # A grew along the directions it selected


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="uniform or cbs"):
        TrainConfig(scheduler="thompson")
    with pytest.raises(ValueError, match="replay-groups"):
        TrainConfig(scheduler="cbs", replay_groups=2)


def test_grpo_with_cbs_on_both_model_kinds(tmp_path: Path, sft_model: Path, model_kind: str) -> None:
    """Three steps: every candidate of every step is in `schedule` with its features; each fresh
    group keeps its 2 best rollouts, stale picks come from earlier versions within the staleness
    window; `consumed` has exactly the selected rows as trained and the rest as unselected."""
    store = arith_store(tmp_path / "store", chat=model_kind == "bpe")
    trainer = make_trainer(sft_model, store, tmp_path, scripted=False, rewards="exact", scheduler="cbs",
                           cbs_keep=2, cbs_replay_rows=3, max_staleness=1, prompts_per_step=3, group_size=4,
                           max_completion_length=12)  # fmt: skip
    metrics = [trainer.train_step() for _ in range(3)]
    assert "cbs/reward" not in metrics[0] and "cbs/reward" in metrics[1] and "cbs/reward" in metrics[2]
    decisions = store.query("SELECT step, policy_version, fresh, selected, len(features) AS d, rollout_id, group_id "
                            "FROM schedule WHERE run_id = 't'").to_pylist()  # fmt: skip
    assert {d["step"] for d in decisions} == {0, 1, 2} and all(d["d"] == len(FEATURES) for d in decisions)
    for step in range(3):
        mine = [d for d in decisions if d["step"] == step]
        fresh = [d for d in mine if d["fresh"]]
        assert all(d["policy_version"] == step for d in fresh)
        for group in {d["group_id"] for d in fresh}:
            assert sum(d["selected"] for d in fresh if d["group_id"] == group) == min(2, sum(d["group_id"] == group
                                                                                     for d in fresh))  # fmt: skip
        stale = [d for d in mine if not d["fresh"]]
        assert all(step - 1 <= d["policy_version"] < step for d in stale) and sum(d["selected"] for d in stale) <= 3
        trained = store.query("SELECT rollout_id FROM consumed WHERE run_id = 't' AND step = $s AND status = 'trained'",
                              {"s": step + 1}).column("rollout_id").to_pylist()  # fmt: skip
        assert sorted(trained) == sorted(d["rollout_id"] for d in mine if d["selected"])
        assert metrics[step]["cbs/selected_stale"] == sum(d["selected"] for d in stale)
    unselected = store.query("SELECT count(*) AS n FROM consumed WHERE run_id = 't' AND status = 'unselected'")
    assert unselected.column("n")[0].as_py() > 0
