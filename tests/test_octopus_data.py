"""Octopus cold-start SFT data (tasks/recipes/octopus_data.py), on both test models: attempts from
the policy committed as rollouts, (o1, o2) picked by the mixed and in-distribution rules, the gold
chain or a teacher engine for o2, samples with lineage, and SFT masking o1; test-time corrections
and the whole flow."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from reasonloop.tasks.engines.fake import ScriptedEngine
from reasonloop.tasks.engines.transformers_engine import TransformersEngine
from reasonloop.tasks.recipes.octopus import SEPARATOR
from reasonloop.tasks.recipes.octopus_data import SOURCE, ColdStartConfig, cold_start, pick_in_distribution
from reasonloop.trainers.config import ModelOptions
from reasonloop.trainers.policy import load_policy
from reasonloop.trainers.sft import encode_sample
from tests.trainer_helpers import ScriptedTokens, arith_store


def test_in_distribution_picks() -> None:
    rng = random.Random(0)
    assert pick_in_distribution([False, False, False], rng) is None
    for _ in range(20):
        o1, o2 = pick_in_distribution([True, True, True, True], rng)
        assert o2 == 0 and o1 in (1, 2, 3), "all right: o2 is the best-of-N (the first), o1 another"
        o1, o2 = pick_in_distribution([False, True, False, True], rng)
        assert o1 in (0, 2) and o2 in (1, 3), "some right: o1 a wrong one, o2 a right one"


def test_config_refuses_a_teacher_for_in_distribution() -> None:
    with pytest.raises(ValueError, match="no teacher"):
        ColdStartConfig(mode="in_distribution", teacher="engine")


def test_mixed_with_the_gold_chain_from_the_policy(sft_model: Path, model_kind: str, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "store", n=60, chat=model_kind == "bpe")
    policy = load_policy(sft_model, ModelOptions())
    engine = TransformersEngine(policy.model, policy.tokenizer)
    config = ColdStartConfig(limit=12, max_new_tokens=24, seed=1, mask_o1=True)
    counts = cold_start(store, engine, policy.tokenizer, config)
    assert counts["attempts"] == 12 * 4 and counts["samples"] == counts["committed"] > 0
    samples = store.query(f"SELECT * FROM sft_samples WHERE source = '{SOURCE}'").to_pylist()
    gold = {
        r["prompt"]: r["target"] for r in store.query("SELECT * FROM sft_samples WHERE source = 'arith'").to_pylist()
    }
    attempts = {r["id"]: r for r in store.query("SELECT * FROM rollouts").to_pylist()}
    for s in samples:
        o1, o2 = s["target"].split(SEPARATOR)
        assert o2 == gold[s["prompt"]], "mixed with teacher gold: o2 is the recipe's gold chain"
        (source,) = s["source_ids"]
        assert attempts[source]["completion"].startswith(o1) and re.search(r"#\S*$", o1), "o1: an attempt, cut"
        assert s["loss_mask_spans"] == [{"start": 0, "end": len(o1)}]
        # SFT on it: the separator and o2 (and the end of the turn) carry loss, o1 none
        _, target_ids, keep = encode_sample(policy.tokenizer, s)
        kept = policy.tokenizer.decode(
            [t for t, k in zip(target_ids, keep, strict=True) if k], skip_special_tokens=True
        )
        assert kept.strip() == (SEPARATOR + o2).strip()
    assert {r["reward"] for r in attempts.values()} <= {0.0, 1.0}, "the attempts are scored by their verifier"


def right_or_wrong(prompt: str, i: int) -> str:
    """gold % 3 == 0: every attempt wrong; 1: every attempt right; 2: even attempts right."""
    a, b = re.findall(r"(\d+)\+(\d+)=", prompt)[-1]
    gold = int(a) + int(b)
    right = {0: False, 1: True, 2: i % 2 == 0}[gold % 3]
    return f"{i};#{gold if right else gold + 1}"


def test_in_distribution_from_scripted_attempts(sft_model: Path, model_kind: str, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "store", n=60, chat=model_kind == "bpe")
    policy = load_policy(sft_model, ModelOptions())
    engine = ScriptedTokens(policy.model, policy.tokenizer, right_or_wrong)
    counts = cold_start(store, engine, policy.tokenizer, ColdStartConfig(mode="in_distribution", limit=30))
    problems = {p["id"]: p for p in store.query("SELECT * FROM problems").to_pylist()}
    samples = store.query(f"SELECT * FROM sft_samples WHERE source = '{SOURCE}'").to_pylist()
    kinds = {int(problems[s["problem_id"]]["answer"]) % 3 for s in samples}
    assert kinds == {1, 2} and counts["samples"] == len(samples), "no sample when every attempt is wrong"
    for s in samples:
        gold = int(problems[s["problem_id"]]["answer"])
        o1, o2 = s["target"].split(SEPARATOR)
        assert o2.endswith(f"#{gold}"), "o2 is a right attempt"
        if gold % 3 == 1:
            assert o2 == f"0;#{gold}" and o1 != o2, "all right: o2 the first attempt, o1 another"
        else:
            assert o1.endswith(f"#{gold + 1}"), "some right: o1 a wrong attempt"
        assert len(s["source_ids"]) == 2


def test_mixed_with_a_teacher_engine(sft_model: Path, model_kind: str, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "store", n=40, chat=model_kind == "bpe")
    policy = load_policy(sft_model, ModelOptions())
    asked: list[str] = []

    def teacher_script(prompt: str, i: int) -> str:
        asked.append(prompt)
        return "worked it out;#" + re.search(r"Ground Truth: (\S+)", prompt).group(1) + " trailing words"

    engine = ScriptedTokens(policy.model, policy.tokenizer, right_or_wrong)
    config = ColdStartConfig(teacher="engine", limit=8)
    counts = cold_start(store, engine, policy.tokenizer, config, teacher=ScriptedEngine(teacher_script))
    samples = store.query(f"SELECT * FROM sft_samples WHERE source = '{SOURCE}'").to_pylist()
    assert counts["samples"] == len(samples) == len(asked) == 8
    assert all("Question: " in a and "Ground Truth: " in a and "Reference Answer: " in a for a in asked)
    answers = {p["id"]: p["answer"] for p in store.query("SELECT id, answer FROM problems").to_pylist()}
    for s in samples:
        assert s["target"].split(SEPARATOR)[1] == f"worked it out;#{answers[s['problem_id']]}", "cut after the answer"


def test_forced_corrections_continue_after_the_separator(sft_model: Path, model_kind: str) -> None:
    """Test-time scaling: each round appends the separator and continues from prompt + completion."""
    from reasonloop.tasks.rewards.self_correction import correction_stats
    from reasonloop.trainers.evaluate import with_corrections

    policy = load_policy(sft_model, ModelOptions())
    seen: list[str] = []

    def corrector(prompt: str, i: int) -> str:
        seen.append(prompt)
        return "#5" if prompt.rstrip().endswith("</self-correction>") else "#4"

    engine = ScriptedTokens(policy.model, policy.tokenizer, corrector)
    prompt_ids = [policy.tokenizer("2+3=", add_special_tokens=False)["input_ids"]] * 2
    texts = with_corrections(engine, policy.tokenizer, prompt_ids, ["#4", "#5"], 2, 8)
    assert texts == [f"#4{SEPARATOR}#5{SEPARATOR}#5", f"#5{SEPARATOR}#5{SEPARATOR}#5"]
    assert seen[0].endswith("#4" + SEPARATOR.rstrip()) or seen[0].rstrip().endswith("</self-correction>")
    stats = correction_stats(texts, ["5", "5"], ["exact", "exact"])
    assert stats == {"n": 2.0, "first_accuracy": 0.5, "final_accuracy": 1.0, "w_to_c": 0.5, "c_to_w": 0.0}


def test_the_octopus_flow_runs_end_to_end(harness, sft_model: Path, model_kind: str, tmp_path: Path) -> None:
    """cold start -> SFT -> stage I -> stage II -> evaluation, every step through the store."""
    from reasonloop.flows.octopus import octopus

    store = arith_store(tmp_path / "store", n=300, chat=model_kind == "bpe")
    stage = {"steps": 2, "group_size": 4, "prompts_per_step": 4, "max_completion_length": 96, "lr": 2e-5}
    result = octopus(
        str(store.root), str(sft_model), str(tmp_path / "out"), cold={"limit": 64, "max_new_tokens": 24},
        sft={"steps": 200, "batch_size": 16, "lr": 1e-3}, stage1=stage, eval_limit=32, max_new_tokens=96,
    )  # fmt: skip
    assert result["cold_start"]["samples"] > 0
    stages = store.query(
        "SELECT run_id, stage, count(*) AS n, count(kl_mask_spans) AS kl FROM rollouts "
        "WHERE run_id LIKE 'octopus-stage%' GROUP BY ALL ORDER BY ALL"
    ).to_pylist()  # fmt: skip
    recombined = {r["run_id"]: r for r in stages if r["stage"] == "recombined"}
    assert recombined["octopus-stage1"]["n"] == recombined["octopus-stage2"]["n"] == 2 * 4 * 8
    assert recombined["octopus-stage2"]["kl"] == 0, "stage II has no KL term"
    metrics = store.query("SELECT run_id, metrics FROM train_metrics WHERE run_id LIKE 'octopus-stage%'").to_pylist()
    separator = max(dict(m["metrics"])["octopus/separator_frac"] for m in metrics)
    assert separator > 0, "after the cold-start SFT the policy writes the self-correction separator"
    assert recombined["octopus-stage1"]["kl"] > 0, "stage I's rows with a separator carry the KL span"
    for evaluation in result["evals"].values():
        assert evaluation["corrections"]["k"] == 1 and evaluation["n"] > 0
