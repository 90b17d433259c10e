"""Reinforcement Inference: the answer position in a completion's top logprobs, the strategy on a
scripted engine, top logprobs from the transformers engine against a direct forward (both model
kinds), and RI over a store through its Prefect flow and `reasonloop evaluate --ri`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from reasonloop.tasks.engines.base import Completion, SamplingParams
from reasonloop.tasks.inference.reinforcement import (
    LETTERS,
    RIConfig,
    answer_logprobs,
    deliberate_prompt,
    first_letter,
    option_letters,
    report,
    run,
)
from reasonloop.tasks.inference.uncertainty import entropy, option_distribution


def test_the_answer_position_is_found_however_the_tokens_split() -> None:
    tops = lambda n: [{"?": -9.0}] * n
    char = answer_logprobs(["7", ";", "#", "B"], [*tops(3), {"B": -0.1, "A": -2.5}], "#")
    assert char == {"B": -0.1, "A": -2.5}
    # BPE merged the letter into the marker's token: alternatives that share '#' are read after it.
    merged = answer_logprobs(["7;", "#B"], [tops(1)[0], {"#B": -0.2, "#A": -1.9, "x": -3.0}], "#")
    assert merged == {"B": -0.2, "A": -1.9}
    # A marker spread over tokens, and a blank token before the letter.
    spread = answer_logprobs(["Ans", "wer", ":", " ", "C"], [*tops(4), {"C": -0.3, "D": -1.4}], "Answer:")
    assert spread == {"C": -0.3, "D": -1.4}
    # The last marker counts; no marker -> nothing known (P is then uniform).
    assert answer_logprobs(["#", "A", "#", "D"], [*tops(3), {"D": -0.5}], "#") == {"D": -0.5}
    assert answer_logprobs(["no", " answer"], tops(2), "#") == {}
    assert option_distribution({}, "ABCD") == [0.25] * 4
    # Options as a string of letters: a blank or multi-letter token is not an option.
    assert option_distribution({"": 0.0, " ": -0.1, "AB": -0.2, "B": -1.0}, "ABCD") == [0.0, 1.0, 0.0, 0.0]


def test_prompts_letters_and_config_checks() -> None:
    assert deliberate_prompt("q?", "think:") == "q?\nthink:"
    assert deliberate_prompt("q?", "think:", first="B") == "q?\nFirst answer: B\nthink:"
    assert first_letter("1+1=2;#C", "#", "ABCD") == "C" and first_letter("#Z", "#", "ABCD") is None
    assert first_letter("none", "#", "ABCD") is None and option_letters(["1", "2", "3"]) == "ABC"
    with pytest.raises(ValueError, match="2-10 options"):
        option_letters(["only"])
    with pytest.raises(ValueError, match="signal"):
        RIConfig(signal="vibes")
    with pytest.raises(ValueError, match="target_rate"):
        RIConfig(target_rate=1.5)


def scripted(letter_logprobs: list[dict[str, float]], seconds: dict[str, str]):
    """A generate(prompts, sampling) whose first pass answers '#' + the likeliest letter with the
    given alternatives (one dict per prompt, by prompt order), and whose second pass answers by
    the `seconds` table (prompt -> text); records every call."""
    calls: list[tuple[list, SamplingParams]] = []

    def generate(prompts: list, sampling: SamplingParams) -> list[Completion]:
        calls.append((list(prompts), sampling))
        out = []
        for i, prompt in enumerate(prompts):
            if sampling.top_logprobs:
                top = letter_logprobs[int(prompt.split(":")[0])]
                best = max(top, key=top.get)
                extra = {"tokens": ["#", best], "top_logprobs": [{"#": 0.0}, top]}
                text = f"#{best}"
            else:
                text, extra = seconds[prompt], {}
            out.append(Completion(text, [], [], None, "stop", [], i, extra=extra))
        return out

    return generate, calls


def test_the_strategy_re_asks_only_the_unsure_questions() -> None:
    sure, unsure, mid = {"A": -0.01, "B": -5.0}, {"A": -0.69, "B": -0.70}, {"A": -0.2, "B": -1.7}
    # dev: questions 0-3; test: 4-7 (prompt "k:" names its scripted alternatives).
    alternatives = [sure, unsure, unsure, mid, sure, unsure, mid, unsure]
    prompts = [f"{k}:q" for k in range(8)]
    seconds = {
        deliberate_prompt(p, "think:", first="A"): f"work;#{'B' if k % 2 else 'A'}" for k, p in enumerate(prompts)
    }
    generate, calls = scripted(alternatives, seconds)
    config = RIConfig(target_rate=0.5, include_first=True, instruction="think:")

    def second_inputs(indices: list[int], firsts: list[str]) -> list[str]:
        return [deliberate_prompt(prompts[4 + i], "think:", first_letter(firsts[i], "#", "AB")) for i in indices]

    result = run(generate, prompts[4:], ["AB"] * 4, config, dev_inputs=prompts[:4], dev_letters=["AB"] * 4,
                 second_inputs=second_inputs)  # fmt: skip
    h = lambda top: entropy(option_distribution(top, "AB"))
    assert result.scores == pytest.approx([h(a) for a in alternatives[4:]])
    # Half the dev split re-asked: τ sits between `mid` and `unsure`, so the two unsure test questions fire.
    assert h(mid) <= result.threshold < h(unsure) and result.dev_rate == 0.5
    assert result.triggered == [False, True, False, True]
    assert len(calls) == 2 and calls[0][1].temperature == 0 and calls[0][1].top_logprobs == config.top_logprobs
    assert calls[1][0] == [deliberate_prompt(prompts[k], "think:", "A") for k in (5, 7)]  # with the first answer
    assert result.second == [None, "work;#B", None, "work;#B"]
    everyone = run(generate, prompts[4:], ["AB"] * 4, config, dev_inputs=prompts[:4], dev_letters=["AB"] * 4,
                   second_inputs=second_inputs, reask_all=True)  # fmt: skip
    assert all(s is not None for s in everyone.second) and everyone.triggered == result.triggered
    fixed = run(generate, prompts[4:], ["AB"] * 4, RIConfig(threshold=math.inf), second_inputs=second_inputs)
    assert fixed.triggered == [False] * 4 and math.isnan(fixed.dev_rate)


def test_report_counts_accuracy_calls_and_separation_by_hand() -> None:
    first = [True, False, False, True]
    second = [True, True, False, False]
    out = report(first, second, [False, True, True, True])
    assert out["greedy_accuracy"] == 0.5 and out["ri_accuracy"] == 0.5  # T, T, F, F
    assert out["reask_all_accuracy"] == 0.5 and out["trigger_rate"] == 0.75
    assert out["calls_per_question"] == {"greedy": 1.0, "ri": 1.75, "reask_all": 2.0}
    assert out["first_accuracy_triggered"] == pytest.approx(1 / 3) and out["first_accuracy_kept"] == 1.0
    assert "reask_all_accuracy" not in report(first, [None, True, None, None], [False, True, False, False])


def test_transformers_top_logprobs_match_a_direct_forward(base_model: Path) -> None:
    """Every step's top-k alternatives equal the log-softmax of a plain forward over prompt +
    completion (fp32, both model kinds); without top_logprobs nothing extra is returned."""
    import torch
    from transformers import AutoModelForCausalLM

    from reasonloop.tasks.engines.transformers_engine import TransformersEngine
    from reasonloop.tasks.models.loading import load_tokenizer

    tokenizer = load_tokenizer(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).eval()
    engine = TransformersEngine(model, tokenizer)
    prompt = tokenizer("12+7=", add_special_tokens=False)["input_ids"]
    (out,) = engine.generate(
        [prompt], 1, SamplingParams(temperature=0, max_new_tokens=8, top_logprobs=4, ignore_eos=True)
    )
    with torch.no_grad():
        logits = model(torch.tensor([prompt + out.token_ids])).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], -1)
    assert len(out.extra["top_logprobs"]) == len(out.token_ids) == 8
    for t, top in enumerate(out.extra["top_logprobs"]):
        values, ids = logp[t].topk(4)
        expected = {tokenizer.decode([i]): v for v, i in zip(values.tolist(), ids.tolist(), strict=True)}
        assert top.keys() == expected.keys() and list(top.values()) == pytest.approx(list(expected.values()), abs=1e-4)
        assert out.extra["tokens"][t] == tokenizer.decode([out.token_ids[t]])
        assert max(top.values()) == pytest.approx(out.logprobs[t], abs=1e-5)  # greedy: the top one was taken
    (plain,) = engine.generate([prompt], 1, SamplingParams(temperature=0, max_new_tokens=8))
    assert "top_logprobs" not in plain.extra


def choice_rows(chat: bool) -> tuple[list[dict], list[dict]]:
    from reasonloop.tasks.recipes.arith_choice import ArithChoiceConfig, generate
    from reasonloop.tasks.recipes.chat import as_chat

    problems, samples = generate(ArithChoiceConfig(n=600, max_digits=2, dev_percent=20, instruction="think:", seed=3))
    return as_chat(problems, samples) if chat else (problems, samples)


def choice_store(root: Path, chat: bool):
    from reasonloop.storage import ReplayStore

    store = ReplayStore(root)
    store.write("problems", choice_rows(chat)[0])
    return store


@pytest.fixture(scope="module")
def choice_models(tiny_model_dir: Path, bpe_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both model kinds after a short SFT on multiple-choice addition (direct and deliberate rows):
    they answer with option letters, unsure ones among them (the accuracy is near chance)."""
    from reasonloop.trainers.config import SFTConfig
    from reasonloop.trainers.policy import load_policy, save_weights
    from reasonloop.trainers.sft import run_sft

    out = {}
    for kind, base in (("char", tiny_model_dir), ("bpe", bpe_model_dir)):
        config = SFTConfig(steps=80, batch_size=32, lr=2e-3, seed=0)
        policy = load_policy(base, config)
        run_sft(config, model=policy.model, tokenizer=policy.tokenizer, samples=choice_rows(kind == "bpe")[1],
                compute_dtype=policy.compute_dtype)  # fmt: skip
        out[kind] = tmp_path_factory.mktemp("models") / f"mc-{kind}"
        save_weights(policy.model, out[kind], merged=False)
        policy.tokenizer.save_pretrained(out[kind])
    return out


def test_ri_over_a_store_both_model_kinds(tmp_path: Path, choice_models: dict, model_kind: str) -> None:
    """On stored multiple-choice problems: the dev split re-asked at the target rate, the test
    trigger rate and calls consistent with the per-question results, RI's answers = first answers
    where not triggered and second ones where triggered."""
    from reasonloop.trainers.ri_eval import evaluate_ri

    store = choice_store(tmp_path / "store", chat=model_kind == "bpe")
    config = RIConfig(target_rate=0.4, instruction="think:", second_tokens=24)
    model = choice_models[model_kind]
    out = evaluate_ri(store, model, config, limit=24, dev_limit=40)
    assert out["n"] == len(out["ids"]) == len(out["correct"]) == 24 and out["dev_n"] == 40
    assert 0.3 <= out["dev_trigger_rate"] <= 0.4  # 16 of 40, or fewer where a tie straddles τ
    assert len(set(out["greedy_correct"])) == 2 or out["trigger_rate"] > 0  # the run had something to decide
    assert out["calls_per_question"]["ri"] == pytest.approx(1 + out["trigger_rate"])
    assert out["greedy_accuracy"] == pytest.approx(sum(out["greedy_correct"]) / 24)
    assert out["ri_accuracy"] == pytest.approx(sum(out["correct"]) / 24) and "reask_all_accuracy" in out
    with pytest.raises(ValueError, match="multiple-choice"):
        evaluate_ri(store, model, config, source="arith")


def test_ri_flow_and_cli(tmp_path: Path, choice_models: dict, harness) -> None:
    from typer.testing import CliRunner

    from reasonloop.flows.cli import app
    from reasonloop.flows.inference import reinforcement_inference

    store, model = choice_store(tmp_path / "store", chat=False), choice_models["char"]
    result = reinforcement_inference(str(store.root), str(model), {"instruction": "think:", "threshold": 0.5},
                                     limit=16, reask_all=False)  # fmt: skip
    assert result["threshold"] == 0.5 and result["dev_n"] == 0
    # Without --ri-reask-all, re-ask-all's accuracy is known only when RI itself re-asked everything.
    assert ("reask_all_accuracy" in result) == (result["trigger_rate"] == 1.0)
    cli = CliRunner().invoke(app, ["evaluate", "--model", str(model), "--root", str(store.root), "--ri",
                                   "--limit", "16", "--ri-dev-limit", "20", "--ri-rate", "0.5",
                                   "--ri-instruction", "think:", "--max-new-tokens", "24"])  # fmt: skip
    assert cli.exit_code == 0, cli.output
    printed = json.loads(cli.output.strip().splitlines()[-1])
    assert printed["n"] == 16 and printed["dev_n"] == 20 and "ids" not in printed
    bad = CliRunner().invoke(app, ["evaluate", "--model", str(model), "--root", str(store.root), "--ri",
                                   "--ri-signal", "vibes"])  # fmt: skip
    assert bad.exit_code == 2 and "signal" in bad.output


def test_arith_mc_items_are_right_by_construction() -> None:
    """Every problem's option at its answer letter is the product; both targets of every problem
    score 1 under the choice checker, and its chain's steps multiply correctly; deliberate prompts
    show a first answer about half the time."""
    from reasonloop.tasks.recipes.arith_choice import ArithChoiceConfig, generate
    from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type

    problems, samples = generate(ArithChoiceConfig(n=3000, instruction="think:", seed=5))
    by_question = {p["prompt"]: p for p in problems}
    for p in problems:
        product = json.loads(p["metadata"])["product"]
        assert p["choices"][LETTERS.index(p["answer"])] == str(product) and len(set(p["choices"])) == 10
        assert {int(c) % 10 for c in p["choices"]} == {product % 10}  # only the tens digit tells them apart
    owners = [by_question[s["prompt"].split("\n")[0]] for s in samples]
    scores = score_by_answer_type([o["prompt"] for o in owners], [s["target"] for s in samples],
                                  [o["answer"] for o in owners], ["choice"] * len(samples))  # fmt: skip
    trained = [p for p in problems if p["split"] == "train"]
    assert scores == [1.0] * len(samples) and len(samples) == 2 * len(trained)
    assert {p["split"] for p in problems} == {"train", "test", "heldout"}
    for s in samples[1::2]:
        for step in s["target"].split(";")[:-2]:
            left, value = step.split("=")
            digit, rest = left.split("*")
            factor, _, carry = rest.partition("+")
            assert int(digit) * int(factor) + int(carry or 0) == int(value)
    shown = sum("First answer:" in s["prompt"] for s in samples[1::2]) / len(trained)
    assert 0.4 < shown < 0.6
    unseen = {p["prompt"] for p in problems if p["split"] != "train"}  # held-out and dev: never trained on
    assert unseen and not unseen & {s["prompt"].split("\n")[0] for s in samples}
