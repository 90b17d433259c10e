"""SFT with loss masks: masked spans contribute nothing; unmasked targets are learned."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasonloop.tasks.recipes.arith import ArithConfig, generate
from reasonloop.trainers.config import SFTConfig
from reasonloop.trainers.logprobs import completion_logprobs
from reasonloop.trainers.sft import encode_sample, run_sft


def test_spans_map_to_tokens(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt_ids, target_ids, keep = encode_sample(tokenizer, "q=", "abc#12", [{"start": 0, "end": 3}])
    assert len(target_ids) == 7 and target_ids[-1] == tokenizer.eos_token_id
    assert keep == [False, False, False, True, True, True, True]
    assert prompt_ids[0] == tokenizer.bos_token_id


def test_loss_counts_only_unmasked_target_tokens(tiny_model_dir: Path) -> None:
    """The first step's loss is the mean NLL over exactly the unmasked target tokens (+ eos)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sample = {"prompt": "1+1=", "target": "bad;#2", "loss_mask_spans": [{"start": 0, "end": 4}]}
    prompt_ids, target_ids, keep = encode_sample(
        tokenizer, sample["prompt"], sample["target"], sample["loss_mask_spans"]
    )
    with torch.no_grad():
        scored = completion_logprobs(model, [prompt_ids], [target_ids], pad_id=tokenizer.pad_token_id)
    kept = torch.tensor(keep)
    expected = -scored.logprobs[0, : len(keep)][kept].mean().item()
    everything = -scored.logprobs[0, : len(keep)].mean().item()
    history = run_sft(
        SFTConfig(steps=1, batch_size=1, warmup_steps=1), model=model, tokenizer=tokenizer, samples=[sample]
    )
    assert history[0]["loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - everything) > 1e-3, "the mask made a difference"


def test_sft_learns_arith_targets(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    _, samples = generate(ArithConfig(n=500, max_digits=2, seed=0))
    history = run_sft(SFTConfig(steps=60, batch_size=16), model=model, tokenizer=tokenizer, samples=samples)
    first, last = history[0]["loss"], sum(h["loss"] for h in history[-5:]) / 5
    assert last < 0.5 * first, (first, last)
