"""The trainer's shared-prompt forward for Llama-shaped models (trainers/llama_forward.py) scores
what transformers' forward scores — logprobs, entropies and gradients — on both model kinds (the
BPE one has grouped-query attention and q/k/v biases), with a LoRA adapter, and the models or
settings it does not cover keep transformers' forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from reasonloop.trainers import llama_forward
from reasonloop.trainers.logprobs import completion_logprobs, split_lm


def _batch(vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    """Three prompts of different lengths (left padding), each sampled 3 times, with completions
    of different lengths (right padding), one of them empty."""
    generator = torch.Generator().manual_seed(0)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [4]]
    rows = [p for p in prompts for _ in range(3)]
    lengths = [1, 7, 4, 9, 2, 0, 5, 3, 6]
    completions = [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in lengths]
    return rows, completions


def _score(model: torch.nn.Module, prompts: list, completions: list, lean: bool, monkeypatch: pytest.MonkeyPatch):
    """(logprobs, entropies, mask, gradient of every trainable parameter) through either path."""
    taken: list[int] = []
    original = llama_forward.llama_shared_hidden
    monkeypatch.setattr(llama_forward, "llama_shared_hidden", lambda *a: taken.append(1) or original(*a))
    if not lean:
        monkeypatch.setattr(llama_forward, "takes_llama_forward", lambda *a: False)
    model.zero_grad()
    scored = completion_logprobs(model, prompts, completions, pad_id=0)
    weights = torch.linspace(-1.0, 1.0, scored.logprobs.numel()).view_as(scored.logprobs)
    (scored.logprobs * weights).sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    monkeypatch.undo()
    assert bool(taken) == lean, "the Llama forward must be taken exactly when asked for"
    return scored.logprobs.detach(), scored.entropies, scored.mask, grads


def _assert_same(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch, atol: float = 1e-5) -> None:
    prompts, completions = _batch(min(model.config.vocab_size, 90))
    lean, plain = (_score(model, prompts, completions, flag, monkeypatch) for flag in (True, False))
    assert torch.equal(lean[2], plain[2])
    assert lean[2].sum() == sum(len(c) for c in completions)
    assert torch.allclose(lean[0], plain[0], atol=atol) and torch.allclose(lean[1], plain[1], atol=atol)
    assert len(lean[3]) == len(plain[3]) > 0
    for a, b in zip(lean[3], plain[3], strict=True):
        assert torch.allclose(a, b, atol=atol, rtol=atol * 10)
    assert any(g.abs().sum() > 0 for g in lean[3])


def test_the_llama_forward_scores_what_transformers_scores(base_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    _assert_same(model, monkeypatch)


def test_the_llama_forward_keeps_float64_exact(base_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In float64 (the exactness tests' dtype) the two paths agree to 1e-10: the RMSNorm rounds as
    transformers' does (normalized in float32), so a batch that takes one path for some rows and the
    other for others (gradient accumulation) gets the same gradient."""
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).double()
    _assert_same(model, monkeypatch, atol=1e-10)


def test_the_llama_forward_with_a_lora_adapter(bpe_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LoRA-wrapped projections are called as modules: the adapter's gradients match too."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(bpe_model_dir, dtype=torch.float32)
    model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    )
    _assert_same(model, monkeypatch)


def test_what_takes_the_llama_forward(tiny_model_dir: Path, bpe_model_dir: Path) -> None:
    for folder in (tiny_model_dir, bpe_model_dir):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        decoder, _ = split_lm(model)
        assert llama_forward.takes_llama_forward(model, decoder, window=64)
        assert not llama_forward.takes_llama_forward(model, lambda **kw: None, window=64), "FSDP's forward"
    model.config.attention_dropout = 0.1  # dropout applies in a training forward only
    assert not llama_forward.takes_llama_forward(model.train(), decoder, window=64)
    assert llama_forward.takes_llama_forward(model.eval(), decoder, window=64)
    model.config.use_sliding_window, model.config.sliding_window = True, 16
    assert not llama_forward.takes_llama_forward(model.eval(), decoder, window=64)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_layer=1, n_embd=32, n_head=2))
    assert not llama_forward.takes_llama_forward(gpt2, split_lm(gpt2)[0], window=64)
