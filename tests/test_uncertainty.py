"""Reinforcement Inference's trigger on scripted logprobs (tasks/inference/uncertainty.py)."""

from __future__ import annotations

import math
import random

import pytest

from reasonloop.tasks.inference.uncertainty import (
    calibrate_threshold,
    entropy,
    option_distribution,
    reask,
    uncertainty,
)

OPTIONS = ["A", "B", "C", "D"]


def test_option_distribution_renormalizes_over_the_options() -> None:
    # top_logprobs as an engine returns them: other tokens, a spaced spelling, a missing option
    logprobs = {"B": math.log(0.6), " A": math.log(0.2), "#": math.log(0.1), "A": math.log(0.05)}
    p = option_distribution(logprobs, OPTIONS)
    assert p == pytest.approx([0.25, 0.75, 0.0, 0.0]), "' A' is the likelier spelling of A; '#' is not an option"
    assert option_distribution({"x": -0.1}, OPTIONS) == [0.25] * 4, "nothing known: uniform"
    tiny = option_distribution({"A": -1000.0, "B": -1001.0}, OPTIONS)
    assert tiny[0] == pytest.approx(1 / (1 + math.exp(-1))), "no underflow far below zero"


def test_signals_order_sure_and_unsure_answers() -> None:
    sure, torn, uniform = [0.97, 0.01, 0.01, 0.01], [0.5, 0.5, 0.0, 0.0], [0.25] * 4
    assert entropy(uniform) == pytest.approx(math.log(4)) and entropy([1.0, 0, 0, 0]) == 0.0
    assert entropy(torn) == pytest.approx(math.log(2))
    for signal in ("entropy", "msp"):
        assert uncertainty(sure, signal) < uncertainty(torn, signal) < uncertainty(uniform, signal)
    assert uncertainty(torn, "msp") == 0.5
    with pytest.raises(ValueError, match="signal"):
        uncertainty(sure, "margin")


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.6106, 1.0])
def test_the_quantile_threshold_hits_the_target_rate(rate: float) -> None:
    rng = random.Random(7)
    dev = [rng.random() for _ in range(1000)]
    tau = calibrate_threshold(dev, rate)
    assert sum(reask(dev, tau)) == round(rate * 1000)
    # The same distribution: the same rate, within a dev quantile's sampling error (3 SE at n = 1000).
    held_out = [rng.random() for _ in range(20000)]
    assert abs(sum(reask(held_out, tau)) / 20000 - rate) <= 3 * math.sqrt(rate * (1 - rate) / 1000) + 0.005


def test_ties_are_never_split_and_bad_input_is_refused() -> None:
    dev = [0.1, 0.5, 0.5, 0.5, 0.9]
    assert reask(dev, calibrate_threshold(dev, 0.4)) == [False, False, False, False, True], "2 asked, 1 given"
    assert calibrate_threshold(dev, 0.0) == 0.9 and not any(reask(dev, 0.9))
    with pytest.raises(ValueError, match="target_rate"):
        calibrate_threshold(dev, 1.5)
    with pytest.raises(ValueError, match="dev scores"):
        calibrate_threshold([], 0.5)


def test_option_logprobs_match_a_direct_forward(sft_model, model_kind: str) -> None:
    """log P(letter | prompt, prefix) from the batched scorer equals a plain forward's, both kinds;
    on the character model it is the next-token log-softmax at the answer position."""
    import torch

    from reasonloop.tasks.models.loading import load_tokenizer
    from reasonloop.trainers.config import TrainConfig
    from reasonloop.trainers.option_scores import answer_prefix, option_logprobs
    from reasonloop.trainers.policy import load_policy

    tokenizer = load_tokenizer(sft_model)
    model = load_policy(sft_model, TrainConfig()).model.eval()
    prompt = tokenizer("12+7=", add_special_tokens=False)["input_ids"]
    prefix = answer_prefix("1+7=8;10+0=10;#19 then #")
    assert prefix == "1+7=8;10+0=10;#19 then #" and answer_prefix("no marker") is None
    options = ["1", "2", "7"]
    got = option_logprobs(model, tokenizer, [prompt], [prefix], options)[0]

    def sequence_logprob(ids: list[int]) -> float:
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ids])).logits.float()
        logp = torch.log_softmax(logits[0, len(prompt) - 1 : -1], -1)
        return float(logp.gather(-1, torch.tensor(ids)[:, None]).sum())

    base = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    for o in options:
        full = tokenizer(prefix + o, add_special_tokens=False)["input_ids"]
        assert got[o] == pytest.approx(sequence_logprob(full) - sequence_logprob(base), abs=1e-3)
    if model_kind == "char":
        with torch.no_grad():
            last = torch.log_softmax(model(torch.tensor([prompt + base])).logits[0, -1].float(), -1)
        for o in options:
            assert got[o] == pytest.approx(float(last[tokenizer.convert_tokens_to_ids(o)]), abs=1e-3)
    p = option_distribution(got, options)
    assert sum(p) == pytest.approx(1.0) and all(0 <= x <= 1 for x in p)
    with pytest.raises(ValueError, match="answer prefix"):
        option_logprobs(model, tokenizer, [prompt], [""], options)
