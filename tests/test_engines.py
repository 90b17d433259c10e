"""Engines: the transformers engine's logprobs match a separate forward pass (on both model kinds,
the BPE one in bf16 too); translation layers."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasonloop.tasks.engines import SamplingParams, make_engine
from reasonloop.tasks.engines.transformers_engine import (
    TransformersEngine,
    counter_uniform,
    sample_inverse_cdf,
    signed64,
    splitmix64,
    truncate_logprobs,
)
from reasonloop.tasks.engines.vllm_engine import (
    VLLM_MISSING,
    completions_from_vllm,
    logprobs_are_exact,
    vllm_sampling_kwargs,
)
from reasonloop.trainers.logprobs import completion_logprobs

PROMPTS = ["1+1=", "123+456=", "x"]


@pytest.fixture(scope="module", params=["char", "bpe"])
def engine(request: pytest.FixtureRequest) -> TransformersEngine:
    torch.manual_seed(0)
    path = request.getfixturevalue("tiny_model_dir" if request.param == "char" else "bpe_model_dir")
    return TransformersEngine(path, dtype="float32")  # exact comparisons: bf16 has its own test


def test_bf16_engine_logprobs_are_close_to_the_fp32_forward(bpe_model_dir: Path) -> None:
    """The bf16 engine (autocast over fp32 weights) differs from an fp32 forward by bf16 rounding
    only: the gap trainers correct with truncated importance weights (trainers/update.py)."""
    model = AutoModelForCausalLM.from_pretrained(bpe_model_dir, dtype=torch.float32)
    engine = TransformersEngine(model, AutoTokenizer.from_pretrained(bpe_model_dir), dtype="bfloat16")
    out = engine.generate(PROMPTS, 2, SamplingParams(max_new_tokens=12, seed=1))
    with torch.no_grad():
        scored = completion_logprobs(
            model, [c.prompt_ids for c in out], [c.token_ids for c in out], pad_id=engine.pad_id
        )
    gaps = [abs(scored.logprobs[b, i].item() - lp) for b, c in enumerate(out) for i, lp in enumerate(c.logprobs)]
    assert 0 < max(gaps) < 0.05


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_a_separate_forward_pass(engine: TransformersEngine, temperature: float) -> None:
    completions = engine.generate(PROMPTS, 4, SamplingParams(temperature=temperature, max_new_tokens=24, seed=1))
    assert len(completions) == 12 and [c.prompt_index for c in completions] == [0] * 4 + [1] * 4 + [2] * 4
    with torch.no_grad():
        scored = completion_logprobs(
            engine.model, [c.prompt_ids for c in completions], [c.token_ids for c in completions],
            pad_id=engine.pad_id, temperature=temperature,
        )  # fmt: skip
    for b, c in enumerate(completions):
        n = len(c.token_ids)
        assert len(c.logprobs) == len(c.entropies) == n > 0
        assert torch.allclose(scored.logprobs[b, :n], torch.tensor(c.logprobs), atol=1e-4)
        assert torch.allclose(scored.entropies[b, :n], torch.tensor(c.entropies), atol=1e-4)
        assert all(lp <= 0 for lp in c.logprobs)


def test_temperature_changes_recorded_logprobs(engine: TransformersEngine) -> None:
    """Same tokens scored at T=0.7 and T=1 differ: the engine records the tempered distribution."""
    c = engine.generate(["1+1="], 1, SamplingParams(temperature=0.7, max_new_tokens=8, seed=2))[0]
    with torch.no_grad():
        at_one = completion_logprobs(engine.model, [c.prompt_ids], [c.token_ids], pad_id=engine.pad_id)
    assert not torch.allclose(at_one.logprobs[0, : len(c.token_ids)], torch.tensor(c.logprobs), atol=1e-3)


def test_seeded_sampling_is_reproducible(engine: TransformersEngine) -> None:
    sampling = SamplingParams(max_new_tokens=16, seed=5)
    a = [c.token_ids for c in engine.generate(PROMPTS, 2, sampling)]
    b = [c.token_ids for c in engine.generate(PROMPTS, 2, sampling)]
    c = [c.token_ids for c in engine.generate(PROMPTS, 2, SamplingParams(max_new_tokens=16, seed=6))]
    assert a == b != c


def test_per_prompt_seeds_make_samples_independent_of_the_batch(engine: TransformersEngine) -> None:
    """With one seed per prompt (as vLLM's per-request seed), a prompt's samples are the same
    alone, in any batch, at any position and batch size: what data-parallel ranks rely on."""
    seeds = tuple(range(100, 100 + len(PROMPTS)))
    sampling = SamplingParams(max_new_tokens=16, seeds=seeds)
    together = [c.token_ids for c in engine.generate(PROMPTS, 3, sampling)]
    alone = [c.token_ids for i, p in enumerate(PROMPTS)
             for c in engine.generate([p], 3, SamplingParams(max_new_tokens=16, seeds=(seeds[i],)))]  # fmt: skip
    reversed_ = engine.generate(PROMPTS[::-1], 3, SamplingParams(max_new_tokens=16, seeds=seeds[::-1]))
    small_batches = TransformersEngine(engine.model, engine.tokenizer, batch_size=2).generate(PROMPTS, 3, sampling)
    assert together == alone == [c.token_ids for c in small_batches]
    assert sorted(together) == sorted(c.token_ids for c in reversed_)
    assert len({tuple(t) for t in together[:3]}) > 1, "a prompt's samples differ from each other"
    other = engine.generate(PROMPTS, 3, SamplingParams(max_new_tokens=16, seeds=tuple(s + 1 for s in seeds)))
    assert [c.token_ids for c in other] != together
    with pytest.raises(ValueError, match="seeds for"):
        engine.generate(PROMPTS, 1, SamplingParams(seeds=(1,)))


def test_inverse_cdf_sampling_follows_the_distribution() -> None:
    """The per-row sampler draws each token with its probability (and never a truncated one)."""
    keys = torch.tensor([signed64(splitmix64(i)) for i in range(40_000)])
    logp = torch.tensor([0.5, 0.2, 0.2, 0.1, 0.0]).log().expand(len(keys), 5)
    freq = torch.bincount(sample_inverse_cdf(logp, counter_uniform(keys, 0)), minlength=5) / len(keys)
    assert torch.allclose(freq, torch.tensor([0.5, 0.2, 0.2, 0.1, 0.0]), atol=0.01)
    assert freq[4] == 0
    u0, u1 = counter_uniform(keys, 0), counter_uniform(keys, 1)
    assert (
        0 < float(u0.min()) and float(u0.max()) < 1 and abs(float(torch.corrcoef(torch.stack([u0, u1]))[0, 1])) < 0.02
    )


def test_left_padding_does_not_change_greedy_output(engine: TransformersEngine) -> None:
    greedy = SamplingParams(temperature=0, max_new_tokens=12)
    together = engine.generate(PROMPTS, 1, greedy)
    alone = [engine.generate([p], 1, greedy)[0] for p in PROMPTS]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    for a, b in zip(together, alone, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_top_k_one_is_greedy_and_logprobs_stay_untruncated(engine: TransformersEngine) -> None:
    greedy = engine.generate(PROMPTS, 1, SamplingParams(temperature=0, max_new_tokens=10))
    top1 = engine.generate(PROMPTS, 1, SamplingParams(top_k=1, max_new_tokens=10, seed=0))
    assert [c.token_ids for c in greedy] == [c.token_ids for c in top1]
    assert all(lp < -0.1 for c in top1 for lp in c.logprobs), "renormalized top-1 would be log 1 = 0"


def test_truncation_keeps_the_right_tokens() -> None:
    logp = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(truncate_logprobs(logp, 2, 1.0)).tolist() == [[False, False, True, True]]
    assert torch.isinf(truncate_logprobs(logp, 0, 0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(truncate_logprobs(logp, 0, 0.5)).tolist() == [[False, True, True, True]]


def test_finish_reasons_and_chat_prompts(engine: TransformersEngine) -> None:
    everything = tuple(range(engine.model.config.vocab_size))  # the padded embedding rows too
    stopped = engine.generate(["1+1="], 2, SamplingParams(max_new_tokens=8, seed=0, stop_token_ids=everything))
    assert all(c.finish_reason == "stop" and len(c.token_ids) == 1 and c.text == "" for c in stopped)
    capped = engine.generate(["1+1="], 2, SamplingParams(max_new_tokens=5, seed=0, ignore_eos=True))
    assert all(c.finish_reason == "length" and len(c.token_ids) == 5 for c in capped)
    messages = [{"role": "user", "content": "1+1="}]
    chat = engine.generate([messages], 1, SamplingParams(max_new_tokens=4, seed=0))[0]
    expected = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert engine.tokenizer.decode(chat.prompt_ids) == expected


def test_fake_engine_is_deterministic() -> None:
    engine = make_engine("fake", script=lambda prompt, i: f"{prompt}{i}")
    out = engine.generate(["a", "b"], 2, SamplingParams(max_new_tokens=10))
    assert [c.text for c in out] == ["a0", "a1", "b0", "b1"]
    assert all(len(c.token_ids) == len(c.logprobs) for c in out) and not out[0].logprobs_exact
    with pytest.raises(ValueError, match="valid engines: fake, openai, transformers, vllm"):
        make_engine("nope")


def test_vllm_translation_layer() -> None:
    kwargs = vllm_sampling_kwargs(SamplingParams(temperature=0.7, top_k=0, max_new_tokens=9, seed=3), n=4)
    assert kwargs["top_k"] == -1 and kwargs["logprobs"] == 0 and kwargs["n"] == 4 and kwargs["max_tokens"] == 9
    assert logprobs_are_exact("processed_logprobs", SamplingParams())
    assert not logprobs_are_exact("raw_logprobs", SamplingParams())
    assert not logprobs_are_exact("processed_logprobs", SamplingParams(top_p=0.9))
    logprob = lambda x: SimpleNamespace(logprob=x, rank=1, decoded_token="?")
    sample = SimpleNamespace(text="ab", token_ids=[5, 6], finish_reason="length",
                             logprobs=[{5: logprob(-0.5), 9: logprob(-2.0)}, {6: logprob(-0.25)}])  # fmt: skip
    stopped = SimpleNamespace(text="", token_ids=[2], finish_reason="stop", logprobs=[{2: logprob(-1.0)}])
    out = completions_from_vllm(SimpleNamespace(prompt_token_ids=[1, 2], outputs=[sample, stopped]), 3, exact=False)
    assert [c.logprobs for c in out] == [[-0.5, -0.25], [-1.0]]
    assert [c.finish_reason for c in out] == ["length", "stop"] and out[0].entropies is None
    assert out[0].prompt_ids == [1, 2] and out[0].prompt_index == 3 and not out[0].logprobs_exact
    broken = SimpleNamespace(
        prompt_token_ids=[1],
        outputs=[SimpleNamespace(text="a", token_ids=[1, 2], finish_reason="stop", logprobs=[{1: -0.1}])],
    )
    with pytest.raises(ValueError, match="2 tokens"):
        completions_from_vllm(broken, 0, exact=True)


def test_vllm_top_logprobs_translate() -> None:
    assert vllm_sampling_kwargs(SamplingParams(top_logprobs=5), n=1)["logprobs"] == 5
    entry = lambda x, text: SimpleNamespace(logprob=x, rank=1, decoded_token=text)
    sample = SimpleNamespace(text="#B", token_ids=[3, 7], finish_reason="stop",
                             logprobs=[{3: entry(-0.1, "#")}, {7: entry(-0.4, "B"), 6: entry(-1.2, "A")}])  # fmt: skip
    (out,) = completions_from_vllm(SimpleNamespace(prompt_token_ids=[1], outputs=[sample]), 0, exact=False,
                                   top_logprobs=2)  # fmt: skip
    assert out.extra["tokens"] == ["#", "B"] and out.extra["top_logprobs"][1] == {"B": -0.4, "A": -1.2}
    (plain,) = completions_from_vllm(SimpleNamespace(prompt_token_ids=[1], outputs=[sample]), 0, exact=False)
    assert "top_logprobs" not in plain.extra


def test_vllm_engine_says_how_to_install() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"reasonloop\[vllm\]"):
            make_engine("vllm", model="x")
    else:  # pragma: no cover - GPU machines with vLLM
        assert "vllm" in VLLM_MISSING


def test_generation_smoke_learns_nothing_but_runs(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    engine = TransformersEngine(model, tokenizer, batch_size=3)
    out = engine.generate(["12+34="] * 5, 2, SamplingParams(max_new_tokens=6, seed=0))
    assert len(out) == 10 and all(math.isfinite(sum(c.logprobs)) for c in out)
