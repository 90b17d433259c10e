"""The trainer's logprob forward: a GRPO group's shared prompt runs once (trainers/logprobs.py::
shared_prompt_hidden) and gives the values and gradients of one forward over whole rows, on both
model kinds, through the chunked LM-head path too, with gradients that do not depend on thread
timing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import reasonloop.trainers.logprobs as logprobs
from reasonloop.trainers.logprobs import can_share_prompts, completion_logprobs, full_vocab_logprobs, split_lm

QUESTIONS = ("12+7=", "3+45=", "60+1=", "8+8=", "21+30=")


def groups(vocab: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts of uneven lengths, three of them shared by 4 samples, one alone; completions of
    uneven lengths, one of them a single token."""
    g = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    distinct = [ids(n) for n in (7, 19, 12, 5)]
    prompts = [distinct[i] for i in (0, 1, 0, 2, 1, 0, 2, 1, 3, 2, 0, 1, 2)]
    completions = [ids(n) for n in (9, 1, 14, 6, 11, 3, 8, 13, 5, 2, 10, 7, 4)]
    return prompts, completions


@pytest.fixture
def model(base_model: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)


def scored_with_grads(model: torch.nn.Module, prompts, completions, *, share: bool):
    model.zero_grad(set_to_none=True)
    out = completion_logprobs(model, prompts, completions, pad_id=0, temperature=0.7, share_prompts=share)
    weights = torch.linspace(-1, 1, out.logprobs.numel()).view_as(out.logprobs)  # a loss that weights every token
    (out.logprobs * weights).sum().backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same(a, grads_a, b, grads_b) -> None:
    assert torch.equal(a.mask, b.mask)
    assert torch.allclose(a.logprobs, b.logprobs, atol=2e-5)
    assert torch.allclose(a.entropies, b.entropies, atol=2e-5)
    assert grads_a.keys() == grads_b.keys()
    for name, grad in grads_a.items():
        # Relative to the tensor's largest entry: an element that is a near-cancelling sum (the tied
        # embedding of a frequent token) differs in its own last bits by more than 1e-4 of itself.
        scale = grad.abs().max().item()
        assert (grad - grads_b[name]).abs().max().item() <= 1e-5 * scale, name


def test_shared_prompts_give_the_values_and_gradients_of_whole_rows(model: torch.nn.Module) -> None:
    prompts, completions = groups(model.config.vocab_size, seed=1)
    assert can_share_prompts(model, split_lm(model)[0])
    plain, plain_grads = scored_with_grads(model, prompts, completions, share=False)
    shared, shared_grads = scored_with_grads(model, prompts, completions, share=True)
    assert_same(plain, plain_grads, shared, shared_grads)
    with torch.no_grad():  # and both equal the plain full-vocabulary path
        reference = full_vocab_logprobs(model, prompts, completions, pad_id=0, temperature=0.7)
    assert torch.allclose(reference.logprobs, shared.logprobs, atol=2e-5)


def test_shared_prompts_through_the_chunked_checkpointed_head(
    model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large vocabulary's path: LM-head chunks over real tokens only, recomputed in backward."""
    prompts, completions = groups(model.config.vocab_size, seed=2)
    plain, plain_grads = scored_with_grads(model, prompts, completions, share=False)
    monkeypatch.setattr(logprobs, "RECOMPUTE_BYTES", 1024)  # every batch counts as large: chunks of 64 tokens
    shared, shared_grads = scored_with_grads(model, prompts, completions, share=True)
    assert_same(plain, plain_grads, shared, shared_grads)


def test_gradient_checkpointing_falls_back_to_whole_rows(tiny_model_dir: Path) -> None:
    """transformers turns the KV cache off under gradient checkpointing while training, so the
    shared path is not taken there; the values are the same either way."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompts, completions = groups(model.config.vocab_size, seed=3)
    expected, expected_grads = scored_with_grads(model, prompts, completions, share=False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    assert not can_share_prompts(model, split_lm(model)[0])
    with torch.no_grad():
        assert can_share_prompts(model, split_lm(model)[0])  # no gradient: the cache is kept
    got, got_grads = scored_with_grads(model, prompts, completions, share=True)
    assert_same(expected, expected_grads, got, got_grads)


def test_shared_prompt_gradients_are_bit_identical_run_to_run(tiny_model_dir: Path) -> None:
    """A step's samples come shuffled (a prompt's rows spread over the batch): the gradient that the
    shared prompt collects from them must not depend on thread timing, or one seed gives two runs."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(4)
    distinct = [torch.randint(3, model.config.vocab_size, (int(n),), generator=g).tolist() for n in range(40, 80, 5)]
    order = torch.randperm(64, generator=g).tolist()
    prompts = [distinct[i % len(distinct)] for i in order]
    completions = [torch.randint(3, model.config.vocab_size, (20 + i % 25,), generator=g).tolist() for i in range(64)]
    runs = [scored_with_grads(model, prompts, completions, share=True)[1] for _ in range(8)]
    for grads in runs[1:]:
        assert all(torch.equal(grads[name], runs[0][name]) for name in grads)
