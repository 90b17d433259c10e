"""The engine's static decode path (tasks/engines/static_decode.py) samples what transformers'
forward samples — the same tokens, finish reasons and logprobs — on both model kinds, and models it
does not cover keep transformers' forward."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, GPT2Config, GPT2LMHeadModel

from reasonloop.tasks.engines import SamplingParams, static_decode
from reasonloop.tasks.engines.static_decode import StaticDecoder
from reasonloop.tasks.engines.transformers_engine import TransformersEngine

QUESTIONS = ("12+7=", "3+45=", "60+1=", "8+8=", "21+30=", "7+70=")


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_static_decode_samples_what_the_transformers_forward_samples(
    sft_model: Path, model_kind: str, temperature: float
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(sft_model)
    prompts = [q if model_kind == "char" else [{"role": "user", "content": q}] for q in QUESTIONS]
    sampling = SamplingParams(temperature=temperature, max_new_tokens=24, seeds=tuple(range(len(prompts))))
    runs = []
    for static in (True, False):
        engine = TransformersEngine(sft_model, tokenizer, dtype="float32", static_decode=static)
        runs.append(engine.generate(prompts, 3, sampling))
    fast, plain = runs
    assert [c.token_ids for c in fast] == [c.token_ids for c in plain]
    assert [c.finish_reason for c in fast] == [c.finish_reason for c in plain]
    assert len({len(c.token_ids) for c in plain}) > 1 and "stop" in {c.finish_reason for c in plain}, (
        "rows must end at different steps (finished rows stay in the batch)"
    )
    for a, b in zip(fast, plain, strict=True):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
        assert torch.allclose(torch.tensor(a.entropies), torch.tensor(b.entropies), atol=1e-5)


def _cache_for(model: torch.nn.Module) -> DynamicCache:
    cache = DynamicCache()
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    model(input_ids=torch.tensor([[3, 4, 5]]), use_cache=True, **{keyword: cache})
    return cache


def test_what_the_static_decoder_covers(base_model: Path, tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    cache = _cache_for(model)
    assert StaticDecoder.supports(model, cache, window=64)
    model.config.use_sliding_window, model.config.sliding_window = True, 16  # a window the run outgrows
    assert not StaticDecoder.supports(model, cache, window=64)
    assert StaticDecoder.supports(model, cache, window=16)
    model.model.rotary_emb.rope_type = "dynamic"  # frequencies that follow the longest position
    assert not StaticDecoder.supports(model, cache, window=16)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=model.config.vocab_size, n_layer=1, n_embd=32, n_head=2))
    assert not StaticDecoder.supports(gpt2, _cache_for(gpt2), window=64)


def test_an_uncovered_model_keeps_the_transformers_forward(tiny_model_dir: Path) -> None:
    """A GPT-2 model is not Llama-shaped: the engine samples through its own forward, unchanged."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2)).eval()
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8, seeds=(0, 1), ignore_eos=True)
    runs = [
        TransformersEngine(gpt2, tokenizer, static_decode=static).generate(["1+2=", "30+4="], 2, sampling)
        for static in (True, False)
    ]
    assert [c.token_ids for c in runs[0]] == [c.token_ids for c in runs[1]]
    assert all(len(c.token_ids) == 8 for c in runs[0])


def test_the_buffer_grows_without_changing_a_token(
    sft_model: Path, model_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The KV buffer starts small and doubles (here from 3 decode slots: 3, 6, 12, 24, 30)."""
    tokenizer = AutoTokenizer.from_pretrained(sft_model)
    prompts = [q if model_kind == "char" else [{"role": "user", "content": q}] for q in QUESTIONS[:3]]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=30, seeds=(0, 1, 2), ignore_eos=True)
    plain = TransformersEngine(sft_model, tokenizer, dtype="float32", static_decode=False)
    expected = plain.generate(prompts, 2, sampling)
    monkeypatch.setattr(static_decode, "INITIAL_STEPS", 3)
    grown = TransformersEngine(sft_model, tokenizer, dtype="float32").generate(prompts, 2, sampling)
    assert [c.token_ids for c in grown] == [c.token_ids for c in expected]
    assert all(len(c.token_ids) == 30 for c in grown)
    for a, b in zip(grown, expected, strict=True):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
