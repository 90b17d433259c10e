"""Octopus through the store and the trainer (trainers/octopus.py), on both test models: a step
commits the sampled group, recombines it into an augmented group of N with pair types, sources,
correctness labels, r_sc rewards, advantages over the N and recomputed logprobs, and the update
honours the stage's masks (o1 and the separator carry no policy gradient in stage I; the KL term
touches o1 only)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from reasonloop.tasks.recipes.octopus import SEPARATOR, correction_reward, split_correction
from reasonloop.tasks.rewards.self_correction import part_verifier
from reasonloop.trainers.algos import kl_k3
from reasonloop.trainers.logprobs import batched_logprobs
from reasonloop.trainers.policy import load_policy
from tests.trainer_helpers import ScriptedTokens, arith_store, make_trainer


def sums(prompt: str) -> tuple[str, str]:
    a, b = re.findall(r"(\d+)\+(\d+)=", prompt)[-1]
    gold = int(a) + int(b)
    return str(gold), str(gold + 1)


def script(prompt: str, i: int) -> str:
    """n = 4: w→c, c→c (identical parts), c→w, and one answer with no correction."""
    gold, wrong = sums(prompt)
    return [f"#{wrong}{SEPARATOR}#{gold}", f"#{gold}{SEPARATOR}#{gold}", f"#{gold}{SEPARATOR}#{wrong}", f"#{wrong}"][i]


def octopus_trainer(sft_model: Path, model_kind: str, tmp_path: Path, **overrides):
    store = arith_store(tmp_path / "store", chat=model_kind == "bpe")
    config = {"algo": "octopus", "group_size": 4, "prompts_per_step": 2, "max_completion_length": 64, **overrides}
    trainer = make_trainer(sft_model, store, tmp_path, scripted=False, **config)
    trainer.engine = ScriptedTokens(trainer.model, trainer.tokenizer, script)
    return trainer, store


@pytest.mark.parametrize("stage", [1, 2])
def test_a_step_recombines_its_groups_through_the_store(
    stage: int, sft_model: Path, model_kind: str, tmp_path: Path
) -> None:
    trainer, store = octopus_trainer(sft_model, model_kind, tmp_path, octopus_stage=stage)
    assert (trainer.updater.reference is not None) == (stage == 1), "stage I's KL on o1 needs the reference"
    initial = load_policy(sft_model, trainer.config)  # the weights that sampled and recombined step 0
    metrics = trainer.train_step()
    raw = store.query("SELECT * FROM rollouts WHERE stage = 'self_correct'").to_pylist()
    rows = store.query("SELECT * FROM rollouts WHERE stage = 'recombined' ORDER BY group_id, sample_idx").to_pylist()
    assert len(raw) == 2 * 4 and len(rows) == 2 * 8, "n = 4 sampled, N = 8 trained per prompt"
    raw_ids = {r["id"]: r for r in raw}
    problems = {p["id"]: p for p in trainer.problems}
    tok = trainer.tokenizer
    sep_len = len(tok(SEPARATOR, add_special_tokens=False)["input_ids"])
    for group in {r["group_id"] for r in rows}:
        members = [r for r in rows if r["group_id"] == group]
        originals = [r for r in members if len(r["source_ids"]) == 1]
        pairs = [r for r in members if len(r["source_ids"]) == 2]
        assert [r["pair_type"] for r in originals] == ["wc", "cc", "cw", None]
        # the code's rule with k = 2 correct originals: quota 1 w→c, 1 c→c, then one c→w, one w→w
        assert Counter(r["pair_type"] for r in pairs) == {"wc": 1, "cc": 1, "cw": 1, "ww": 1}
        assert sum(r["advantage"] for r in members) == pytest.approx(0.0, abs=1e-9), "normalized over the N"
        gold = str(problems[members[0]["problem_id"]]["answer"])
        verify = part_verifier("exact")
        for r in members:
            assert r["reward"] == pytest.approx(correction_reward(split_correction(r["completion"]), gold, verify))
            assert all(s in raw_ids for s in r["source_ids"])
        for r in pairs:
            o1_row, o2_row = raw_ids[r["source_ids"][0]], raw_ids[r["source_ids"][1]]
            parts = split_correction(r["completion"])
            assert parts.o1 == split_correction(o1_row["completion"]).o1
            assert parts.o2 == split_correction(o2_row["completion"]).o2
            assert r["pair_type"] == "".join("c" if ok else "w" for ok in r["part_correct"])
            o1_len = len(tok(parts.o1, add_special_tokens=False)["input_ids"])
            if stage == 1 or r["pair_type"] in ("wc", "cw"):
                assert r["loss_mask_spans"] == [{"start": 0, "end": o1_len + sep_len}]
            else:
                assert r["loss_mask_spans"] is None, "stage II trains cc and ww pairs whole"
            assert r["kl_mask_spans"] == ([{"start": 0, "end": o1_len}] if stage == 1 else None)
        for r in originals[:3]:  # sampled with a separator: masked at the separator's token boundary
            end = r["loss_mask_spans"][0]["end"] if r["loss_mask_spans"] else 0
            kept = tok.decode(r["completion_ids"][end:], skip_special_tokens=True)
            assert kept.strip() == (split_correction(r["completion"]).o2 if end else r["completion"])
        assert originals[3]["loss_mask_spans"] is None and originals[3]["kl_mask_spans"] is None
    # spliced sequences: π_old's logprobs, recomputed (a fresh forward of the weights that sampled)
    pairs = [r for r in rows if len(r["source_ids"]) == 2]
    fresh = batched_logprobs(
        initial.model, [r["prompt_ids"] for r in pairs], [r["completion_ids"] for r in pairs],
        pad_id=trainer.pad_id, temperature=1.0, micro_batch=64,
    )  # fmt: skip
    for k, r in enumerate(pairs):
        assert r["logprobs"] == pytest.approx(fresh.logprobs[k, : len(r["completion_ids"])].tolist(), abs=1e-4)
    assert metrics["octopus/pairs_wc"] == 2 and metrics["octopus/separator_frac"] == pytest.approx(0.75)


def batch_of(trainer, spans: list, kl: list) -> tuple[pa.Table, int, int]:
    """Two hand-built rows of one group: o1 ⊕ separator ⊕ o2 with the given masks, and the policy's
    own logprobs (an importance weight of 1); also o1's and the separator's end in tokens."""
    tok = trainer.tokenizer
    prompt = tok("12+3=", add_special_tokens=False)["input_ids"]
    o1, sep, o2 = (tok(t, add_special_tokens=False)["input_ids"] for t in ("#14", SEPARATOR, "#15"))
    completion = o1 + sep + o2
    completions = [completion, completion[:-1]]
    own = trainer.updater.no_grad_logprobs(trainer.model, [prompt] * 2, completions, 2)
    rows = [{
        "problem_id": "p", "stage": "recombined", "group_id": "g", "sample_idx": i, "prompt_ids": prompt,
        "completion_ids": completions[i], "logprobs": own[i, : len(completions[i])].tolist(),
        "advantage": [1.0, -1.0][i], "loss_mask_spans": spans[i], "kl_mask_spans": kl[i],
    } for i in range(2)]  # fmt: skip
    return pa.Table.from_pylist(rows), len(o1), len(o1) + len(sep)


def grads(trainer) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in trainer.model.parameters() if p.requires_grad]


def manual(trainer, batch: pa.Table, keep: torch.Tensor, kl_on: torch.Tensor, kl_coef: float) -> list[torch.Tensor]:
    """The gradient of GSPO over `keep` plus kl_coef · k3 over `kl_on`, normalized by kept tokens."""
    trainer.model.zero_grad(set_to_none=True)
    prompts, completions = batch.column("prompt_ids").to_pylist(), batch.column("completion_ids").to_pylist()
    scored = trainer.updater.forward(trainer.model, prompts, completions, grad=True)
    t = scored.logprobs.shape[1]
    mask = scored.mask & keep[:, :t]
    tokens = float(mask.sum())
    adv = torch.tensor(batch.column("advantage").to_pylist())
    loss = trainer.updater.loss_fn(
        scored.logprobs, scored.logprobs.detach(), adv, mask, clip=trainer.updater.clip, batch_tokens=tokens,
        batch_seqs=2.0, max_len=trainer.config.max_completion_length,
    ).loss  # fmt: skip
    with trainer.updater.reference() as ref_model:
        ref = trainer.updater.no_grad_logprobs(ref_model, prompts, completions, 2)
    loss = loss + kl_coef * (kl_k3(scored.logprobs, ref) * (kl_on[:, :t] & scored.mask)).sum() / tokens
    loss.backward()
    return grads(trainer)


def test_masked_tokens_carry_no_policy_gradient_and_the_kl_covers_o1(
    sft_model: Path, model_kind: str, tmp_path: Path
) -> None:
    trainer, _ = octopus_trainer(sft_model, model_kind, tmp_path, lr=0.0, max_grad_norm=0.0, span_kl_coef=0.5)
    with torch.no_grad():  # the policy moves away from the reference, so the KL term has a gradient
        gen = torch.Generator().manual_seed(0)
        for p in trainer.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    _, o1_end, sep_end = batch_of(trainer, [None, None], [None, None])
    spans = [[{"start": 0, "end": sep_end}]] * 2
    kls = [[{"start": 0, "end": o1_end}]] * 2
    batch, _, _ = batch_of(trainer, spans, kls)
    width = max(len(c) for c in batch.column("completion_ids").to_pylist())
    o1_and_sep = torch.zeros((2, width), dtype=torch.bool)
    o1_and_sep[:, :sep_end] = True
    o1 = torch.zeros_like(o1_and_sep)
    o1[:, :o1_end] = True
    trainer.updater(batch, 0, {})
    update = grads(trainer)
    expected = manual(trainer, batch, ~o1_and_sep, o1, 0.5)
    for a, b in zip(update, expected, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    # the masks matter: the whole-row loss, or a KL over every token, gives another gradient
    whole = manual(trainer, batch, torch.ones_like(o1), o1, 0.5)
    everywhere = manual(trainer, batch, ~o1_and_sep, torch.ones_like(o1), 0.5)
    for other in (whole, everywhere):
        assert max((a - b).abs().max().item() for a, b in zip(update, other, strict=True)) > 1e-6
    # no span KL: o1 and the separator change nothing (only o2's tokens carry a gradient)
    trainer.updater(batch_of(trainer, spans, [None, None])[0], 0, {})
    no_kl = grads(trainer)
    for a, b in zip(no_kl, manual(trainer, batch, ~o1_and_sep, o1, 0.0), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
