"""SFT with loss masks, on both model kinds: masked spans contribute nothing, chat samples train on
the assistant turns only, unmasked targets are learned, gradient accumulation changes memory only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reasonloop.tasks.models.loading import load_tokenizer
from reasonloop.tasks.models.precision import pad_token_id
from reasonloop.tasks.recipes.arith import ArithConfig, generate
from reasonloop.tasks.recipes.chat import as_chat
from reasonloop.trainers.config import SFTConfig
from reasonloop.trainers.logprobs import completion_logprobs
from reasonloop.trainers.policy import load_policy
from reasonloop.trainers.sft import encode_plain, encode_sample, run_sft


def test_spans_map_to_tokens(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model_dir)
    prompt_ids, target_ids, keep = encode_plain(tokenizer, "q=", "abc#12", [{"start": 0, "end": 3}])
    assert len(target_ids) == 7 and target_ids[-1] == tokenizer.eos_token_id
    assert keep == [False, False, False, True, True, True, True]
    assert prompt_ids[0] == tokenizer.bos_token_id


def test_chat_sample_trains_on_assistant_turns_only(base_model: Path) -> None:
    """The prompt is the templated conversation up to the generation prompt; the target is the
    assistant's content and end-of-turn marker (not the newline after it); a span of the content
    is masked."""
    tokenizer = load_tokenizer(base_model)
    messages = [
        {"role": "system", "content": "Add."},
        {"role": "user", "content": "1+2="},
        {"role": "assistant", "content": "bad;#3"},
    ]
    sample = {"prompt": "1+2=", "target": "bad;#3", "messages": messages, "loss_mask_spans": [{"start": 0, "end": 3}]}
    prompt_ids, target_ids, keep = encode_sample(tokenizer, sample)
    expected_prompt = tokenizer.apply_chat_template(messages[:2], add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(prompt_ids) == expected_prompt
    end_of_turn = "<|im_end|>" if "<|im_end|>" in tokenizer.get_vocab() else "<|end|>"
    trained = tokenizer.decode([t for t, k in zip(target_ids, keep, strict=True) if k])
    assert trained == ";#3" + end_of_turn, trained
    assert tokenizer.decode(target_ids).startswith("bad;#3" + end_of_turn)


def test_loss_counts_only_unmasked_target_tokens(base_model: Path) -> None:
    """The first step's loss is the mean NLL over exactly the unmasked target tokens (+ eos)."""
    config = SFTConfig(steps=1, batch_size=1, warmup_steps=1, lr=1e-3, dtype="float32")
    policy = load_policy(base_model, config)
    sample = {"prompt": "1+1=", "target": "bad;#2", "loss_mask_spans": [{"start": 0, "end": 4}]}
    prompt_ids, target_ids, keep = encode_plain(
        policy.tokenizer, sample["prompt"], sample["target"], sample["loss_mask_spans"]
    )
    with torch.no_grad():
        scored = completion_logprobs(policy.model, [prompt_ids], [target_ids], pad_id=pad_token_id(policy.tokenizer))
    kept = torch.tensor(keep)
    expected = -scored.logprobs[0, : len(keep)][kept].mean().item()
    everything = -scored.logprobs[0, : len(keep)].mean().item()
    history = run_sft(config, model=policy.model, tokenizer=policy.tokenizer, samples=[sample])
    assert history[0]["loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - everything) > 1e-3, "the mask made a difference"


def test_grad_accum_changes_memory_only(tiny_model_dir: Path) -> None:
    _, samples = generate(ArithConfig(n=40, max_digits=3, seed=4))
    grads = []
    for accum in (1, 4):
        config = SFTConfig(steps=1, batch_size=8, grad_accum=accum, warmup_steps=1, lr=0.0, max_grad_norm=0.0, seed=3)
        policy = load_policy(tiny_model_dir, config)
        policy.model.double()
        run_sft(config, model=policy.model, tokenizer=policy.tokenizer, samples=samples)
        grads.append(torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-10, rtol=1e-8)


def test_sft_learns_arith_targets(base_model: Path, model_kind: str) -> None:
    problems, samples = generate(ArithConfig(n=500, max_digits=2, seed=0))
    if model_kind == "bpe":
        _, samples = as_chat(problems, samples)
    # bf16 compute over fp32 masters for the bf16 checkpoint (emulated on this CPU: fewer steps there)
    config = SFTConfig(
        steps=60 if model_kind == "char" else 25,
        batch_size=16,
        lr=1e-3,
        dtype="auto" if model_kind == "char" else "bfloat16",
    )
    policy = load_policy(base_model, config)
    history = run_sft(
        config, model=policy.model, tokenizer=policy.tokenizer, samples=samples, compute_dtype=policy.compute_dtype
    )
    first, last = history[0]["loss"], sum(h["loss"] for h in history[-5:]) / 5
    assert last < (0.5 if model_kind == "char" else 0.8) * first, (first, last)
    assert next(policy.model.parameters()).dtype == torch.float32, "fp32 master weights"
    assert policy.compute_dtype == (torch.float32 if model_kind == "char" else torch.bfloat16)
