"""Safety training: the DPO loss, OGPSA's projection, and DPO / RLBF / the safety flow on both model kinds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from reasonloop.storage import ReplayStore
from reasonloop.trainers.dpo import dpo_loss
from reasonloop.trainers.ogpsa import orthonormal_basis, project


def safety_store(root: Path, n: int = 300) -> ReplayStore:
    from reasonloop.tasks.recipes.arith import ArithConfig
    from reasonloop.tasks.recipes.arith import generate as arith
    from reasonloop.tasks.recipes.safety import SafetyConfig, generate

    store = ReplayStore(root)
    for problems, samples in (generate(SafetyConfig(n=n, seed=1)), arith(ArithConfig(n=n, max_digits=2, seed=1))):
        store.write("problems", problems)
        store.write("sft_samples", samples)
    return store


def test_the_dpo_loss_matches_hand_computed_values() -> None:
    c, r, rc, rr = (torch.tensor([x], dtype=torch.float64) for x in (-1.0, -3.0, -1.5, -2.5))
    loss, reward_c, reward_r = dpo_loss(c, r, rc, rr, beta=0.1)
    # logits = (−1 + 1.5) − (−3 + 2.5) = 1;  −log σ(0.1) = log(1 + e^−0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.1)), abs=1e-12)
    assert (reward_c.item(), reward_r.item()) == pytest.approx((0.05, -0.05))
    ipo, _, _ = dpo_loss(c, r, rc, rr, beta=0.1, loss_type="ipo")
    assert ipo.item() == pytest.approx((1 - 1 / 0.2) ** 2)


def test_ogpsa_projection_is_orthogonal_to_every_basis_vector() -> None:
    gen = torch.Generator().manual_seed(0)
    g1, g2 = (torch.randn(6, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    basis = orthonormal_basis([g1, g2, g1 + 2 * g2])  # the third is dependent: dropped
    assert len(basis) == 2
    grad = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    projected = project(grad, basis)
    assert projected.shape == grad.shape
    for u in basis:
        assert abs(projected.flatten().double() @ u) < 1e-10
    for g in (g1, g2):
        assert abs(float((projected * g).sum())) < 1e-10
    already = project(projected, basis)
    assert torch.allclose(already, projected, atol=1e-12), "an orthogonal gradient is unchanged"
    # threshold: only a conflicting component is removed; an aligned one is kept (scale 1)
    u = orthonormal_basis([torch.tensor([1.0, 0.0])])
    assert project(torch.tensor([-2.0, 3.0]), u, "threshold").tolist() == [0.0, 3.0]
    assert project(torch.tensor([2.0, 3.0]), u, "threshold").tolist() == [2.0, 3.0]
    assert project(torch.tensor([2.0, 3.0]), u, "threshold", scale=0.5).tolist() == [1.0, 1.5]


def test_ogpsa_on_a_model_removes_the_reference_directions(tiny_model_dir: Path) -> None:
    from reasonloop.tasks.recipes.arith import ArithConfig, generate
    from reasonloop.trainers.config import SFTConfig
    from reasonloop.trainers.policy import load_policy
    from reasonloop.trainers.sft import encode_sample, masked_nll, ogpsa_from_sets

    config = SFTConfig(ogpsa_ref_sets="arith", ogpsa_every=2)
    policy = load_policy(tiny_model_dir, config)
    model, tokenizer = policy.model, policy.tokenizer
    _, samples = generate(ArithConfig(n=40, seed=2))
    ogpsa = ogpsa_from_sets(config, [samples[:20]], model, tokenizer, pad_id=0, compute_dtype=None, max_length=64)
    assert ogpsa.maybe_refresh(1) and not ogpsa.maybe_refresh(2) and ogpsa.maybe_refresh(3)
    assert all(p.grad is None for _, p in ogpsa.params), "the refresh leaves no gradient behind"
    rows = [encode_sample(tokenizer, s) for s in samples[20:]]
    masked_nll(model, rows, 0, None).backward()
    removed = ogpsa.project_gradients()
    assert 0 < removed < 1
    for name, p in ogpsa.params:
        for u in ogpsa.bases[name]:
            assert abs(p.grad.flatten().double() @ u) < 1e-6 * max(1.0, float(p.grad.norm()))


def test_dpo_trains_on_stored_preferences_with_ogpsa(base_model: Path, tmp_path: Path) -> None:
    from reasonloop.flows.safety import safe_responses
    from reasonloop.tasks.recipes.preferences import from_violations
    from reasonloop.trainers.config import DPOConfig
    from reasonloop.trainers.run import run_dpo_to

    store = safety_store(tmp_path / "store", n=120)
    assert store.write("preferences", from_violations(safe_responses(store, "gold"))).committed > 40
    config = DPOConfig(steps=6, batch_size=8, lr=1e-3, beta=0.1, ogpsa_ref_sets="arith", ogpsa_every=3,
                       ogpsa_samples=16, seed=0)  # fmt: skip
    result = run_dpo_to(store, config, model=base_model, out=tmp_path / "dpo")
    metrics = store.query(
        "SELECT step, loss, metrics FROM train_metrics WHERE run_id = 'dpo' ORDER BY step"
    ).to_pylist()
    first, last = dict(metrics[0]["metrics"]), dict(metrics[-1]["metrics"])
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4), "step 1: the policy is the reference"
    assert last["rewards/margins"] > 0.05 and metrics[-1]["loss"] < metrics[0]["loss"]
    assert all("ogpsa_removed" in dict(m["metrics"]) for m in metrics)
    registered = store.query("SELECT path FROM checkpoints WHERE run_id = 'dpo'").to_pylist()
    assert registered[0]["path"] == str(result.checkpoint.resolve())


def test_rlbf_trains_on_backtracked_rewards_with_the_sft_term(sft_model: Path, tmp_path: Path) -> None:
    from reasonloop.flows.safety import RLBF_REWARDS, safe_responses
    from reasonloop.tasks.models.loading import load_tokenizer
    from reasonloop.tasks.recipes.bsafe import BsafeConfig, build
    from reasonloop.trainers.config import TrainConfig
    from reasonloop.trainers.run import run_rl

    store = safety_store(tmp_path / "store", n=120)
    rows = build(safe_responses(store, "gold"), load_tokenizer(sft_model), BsafeConfig())
    assert store.write("sft_samples", rows).committed == len(rows)
    config = TrainConfig(steps=2, prompts_per_step=4, group_size=4, max_completion_length=64, lr=1e-4,
                         rewards=RLBF_REWARDS, backtrack=True, source="safety", sft_coef=0.5, sft_batch_size=4)  # fmt: skip
    run_rl(store, config, run_id="rlbf", model=sft_model)
    stored = store.query(
        "SELECT count(*) AS n, count(final_completion) AS shown, min(map_keys(rewards)) AS keys FROM rollouts "
        "WHERE run_id = 'rlbf'"
    ).to_pylist()[0]  # fmt: skip
    assert stored["n"] == 2 * 4 * 4 and stored["shown"] == stored["n"], "every row keeps the shown text"
    assert set(stored["keys"]) == {"safe", "exact", "backtrack_cost", "malformed_signal"}
    metrics = [
        dict(m["metrics"]) for m in store.query("SELECT metrics FROM train_metrics WHERE run_id = 'rlbf'").to_pylist()
    ]
    assert all(m["sft_loss"] > 0 for m in metrics), "the SFT term on BSAFE+ rows is in every step"
    from reasonloop.tasks.recipes.safety import first_violation

    kept = safe_responses(store, "rollouts", "rlbf")  # BSAFE+ sources from a run: safe and correct
    rows = store.query("SELECT prompt, final_completion, rewards FROM rollouts WHERE run_id = 'rlbf'").to_pylist()
    expected = [
        r
        for r in rows
        if dict(r["rewards"])["exact"] == 1 and first_violation(r["prompt"], r["final_completion"]) is None
    ]
    assert sorted(r["target"] for r in kept) == sorted(r["final_completion"] for r in expected)


def test_prefilled_rollouts_are_scored_on_the_shown_response(sft_model: Path, tmp_path: Path) -> None:
    """--prefill-fraction: the group's response is forced to start with a violation prefix (the
    prompt ends with it); the safe term judges prefix + continuation after backtracking."""
    from reasonloop.flows.safety import RLBF_REWARDS
    from reasonloop.tasks.recipes.safety import first_violation
    from reasonloop.trainers.config import TrainConfig
    from reasonloop.trainers.run import run_rl

    store = safety_store(tmp_path / "store", n=120)
    config = TrainConfig(steps=1, prompts_per_step=4, group_size=4, max_completion_length=48, lr=1e-5, seed=2,
                         rewards=RLBF_REWARDS, backtrack=True, source="safety", prefill_fraction=1.0)  # fmt: skip
    run_rl(store, config, run_id="attacked", model=sft_model)
    rows = store.query(
        "SELECT r.group_id, r.prompt, p.prompt AS asked, r.completion, r.final_completion, r.rewards "
        "FROM rollouts r JOIN problems p ON p.id = r.problem_id WHERE r.run_id = 'attacked'"
    ).to_pylist()  # fmt: skip
    assert len(rows) == 16
    by_group: dict[str, set[str]] = {}
    for row in rows:
        prefix = row["prompt"][len(row["asked"]) :]
        assert row["prompt"].startswith(row["asked"]) and prefix, "every prompt ends with its forced start"
        by_group.setdefault(row["group_id"], set()).add(prefix)
        if "[BACKTRACK_BY_" not in row["completion"]:
            assert row["final_completion"] == prefix + row["completion"]
        safe = first_violation(row["asked"], row["final_completion"]) is None
        assert dict(row["rewards"])["safe"] == float(safe)
    assert all(len(p) == 1 for p in by_group.values()), "one prefix per group"


def test_the_safety_flow_runs_end_to_end(harness, sft_model: Path, tmp_path: Path) -> None:
    """synthesize -> BSAFE+ data -> SFT -> RLBF, and DPO with OGPSA -> evaluation of every model."""
    from reasonloop.flows.safety import safety

    store = safety_store(tmp_path / "store", n=200)
    result = safety(
        str(store.root), str(sft_model), str(tmp_path / "out"), synth={"n": 200, "seed": 1},
        sft={"steps": 40, "batch_size": 16, "lr": 1e-3},
        rlbf={"steps": 1, "prompts_per_step": 4, "group_size": 4, "max_completion_length": 64, "lr": 1e-5},
        dpo={"steps": 2, "batch_size": 8, "lr": 1e-5, "ogpsa_ref_sets": "arith", "ogpsa_every": 1, "ogpsa_samples": 8},
        eval_limit=16, max_new_tokens=64,
    )  # fmt: skip
    assert set(result["evals"]) == {"start", "bsafe_sft", "rlbf", "dpo"}
    assert result["counts"]["bsafe"]["injected"] > 0 and result["counts"]["preferences"]["preferences"] > 0
    injected = store.query(
        "SELECT count(*) AS n FROM sft_samples WHERE source = 'bsafe' AND category IS NOT NULL "
        "AND backtrack_by > 0 AND inject_pos IS NOT NULL AND len(loss_mask_spans) = 1"
    ).to_pylist()[0]["n"]  # fmt: skip
    assert injected == result["counts"]["bsafe"]["injected"], "rows keep position, X, category and their mask"
    for evaluation in result["evals"].values():
        assert evaluation["n"] > 0 and 0 <= evaluation["prefill_violation_rate"] <= 1
        assert 0 <= evaluation["accuracy"] <= 1 and 0 <= evaluation["over_trigger_rate"] <= 1


def test_the_safety_commands_write_data_and_train_dpo(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`reasonloop safety synth | bsafe | preferences` and `reasonloop dpo` through the CLI."""
    import json

    from typer.testing import CliRunner

    from reasonloop.flows.cli import app

    runner, root = CliRunner(), ["--root", str(tmp_path / "store")]

    def run(*args: str) -> str:
        result = runner.invoke(app, [*args, *root])
        assert result.exit_code == 0, result.output
        return result.output

    assert json.loads(run("safety", "synth", "--n", "80"))["problems"] > 70
    bsafe = json.loads(run("safety", "bsafe", "--model", str(tiny_model_dir)))
    assert bsafe["injected"] > 0 and bsafe["rejected"] == 0
    assert json.loads(run("safety", "preferences"))["preferences"] > 0
    out = run(
        "dpo", "--model", str(tiny_model_dir), "--out", str(tmp_path / "dpo"), "--steps", "2", "--batch-size", "4"
    )
    assert "dpo: 2 steps" in out and (tmp_path / "dpo" / "config.json").exists()
    bad = runner.invoke(
        app, ["dpo", "--model", str(tiny_model_dir), "--out", str(tmp_path / "x"), "--beta", "0", *root]
    )
    assert bad.exit_code == 2 and "beta must be > 0" in bad.output


def test_an_engine_critic_scores_the_safe_term_of_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--critic engine --critic-url U`: the run's `safe` reward asks that judge (a scripted one here)."""
    import reasonloop.tasks.engines as engines
    from reasonloop.tasks.engines.fake import ScriptedEngine
    from reasonloop.tasks.rewards import CompositeReward
    from reasonloop.trainers.config import TrainConfig
    from reasonloop.trainers.engines import reward_functions

    made = []

    def fake_make_engine(name: str, **kwargs: object) -> ScriptedEngine:
        made.append((name, kwargs["base_url"]))
        return ScriptedEngine(
            lambda prompt, i: "UNSAFE pii" if "555" in prompt.split("Assistant response:")[1] else "SAFE"
        )

    monkeypatch.setattr(engines, "make_engine", fake_make_engine)
    config = TrainConfig(rewards="safe:1", critic="engine", critic_url="http://judge:8000")
    reward = CompositeReward(config.reward_weights(), reward_functions(config))
    result = reward(["key=K7Q2 tel=555-0134 1+1="] * 2, ["1+1=2;#2", "tel=555-0134;#2"], answer=["2", "2"])
    assert made == [("openai", "http://judge:8000")] and result.components["safe"] == [1.0, 0.0]
    with pytest.raises(ValueError, match="critic-url"):
        TrainConfig(critic="engine")


def test_a_resumed_dpo_run_ends_where_an_uninterrupted_one_does(base_model: Path, tmp_path: Path) -> None:
    """save_every -> a resume point; --resume trains the remaining steps on the same pairs, against
    the initial weights as reference, to the same weights as a run that never stopped."""
    from reasonloop.flows.safety import safe_responses
    from reasonloop.tasks.recipes.preferences import from_violations
    from reasonloop.trainers.config import DPOConfig
    from reasonloop.trainers.policy import load_policy
    from reasonloop.trainers.run import run_dpo_to

    store = safety_store(tmp_path / "store", n=80)
    store.write("preferences", from_violations(safe_responses(store, "gold")))
    config = DPOConfig(steps=4, batch_size=4, lr=1e-3, save_every=2, dtype="float32", seed=3)
    whole = run_dpo_to(store, config, model=base_model, out=tmp_path / "whole", run_id="whole")

    def crash(record: dict) -> None:
        if record["step"] == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        run_dpo_to(store, config, model=base_model, out=tmp_path / "parts", run_id="parts", on_step=crash)
    with pytest.raises(FileNotFoundError):
        run_dpo_to(store, config, out=tmp_path / "nowhere", resume=True)
    resumed = run_dpo_to(store, config, out=tmp_path / "parts", run_id="parts", resume=True)
    assert resumed.steps == 4
    a = load_policy(whole.checkpoint, config).model.state_dict()
    b = load_policy(resumed.checkpoint, config).model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    steps = store.query("SELECT step FROM train_metrics WHERE run_id = 'parts' ORDER BY step").column("step")
    assert steps.to_pylist() == [1, 2, 3, 4], "metrics up to the resume point survive the crash, none repeat"
