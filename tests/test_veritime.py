"""VeriTime: answers and step labels checked by an independent reader of the series; rewards."""

from __future__ import annotations

import itertools
import statistics

import pytest

from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.veritime import VeriTimeConfig, generate
from reasonloop.tasks.rewards import get_reward
from reasonloop.tasks.rewards.veritime import parse_steps

CAUSE_LETTER = {"spike": "A", "shift": "B", "seasonal": "C", "trend": "D"}


def classify(values: list[int]) -> str:
    """Read the pattern off the numbers alone (not the generator's code)."""
    n = len(values)
    for i in range(1, n - 1):
        if values[i] - values[i - 1] > 20 and values[i] - values[i + 1] > 20:
            return "spike"
    diffs = [b - a for a, b in itertools.pairwise(values)]
    big = [i for i, d in enumerate(diffs) if abs(d) >= 11]
    if len(big) == 1:
        before, after = values[: big[0] + 1], values[big[0] + 1 :]
        if max(before) - min(before) <= 4 and max(after) - min(after) <= 4:
            return "shift"
    x_mean, y_mean = (n - 1) / 2, statistics.mean(values)
    slope = sum((i - x_mean) * (v - y_mean) for i, v in enumerate(values)) / sum((i - x_mean) ** 2 for i in range(n))
    if abs(slope) >= 1.5:
        return "trend"
    if max(values) - statistics.median(values) >= 5.5:
        return "seasonal"
    return "noise"


def check(problem: dict, target: str) -> None:
    series_text, question = problem["prompt"].split("|")
    values = [int(v) for v in series_text.split(",")]
    answer, labels = problem["answer"], dict(problem["process_labels"])
    steps = parse_steps(target)
    assert steps is not None and steps == {k: labels[k] for k in ("I", "P", "S", "A", "F")}
    assert labels["A"] == labels["F"] == answer
    pattern = classify(values)
    if question == "spike at?":
        assert pattern == "spike" and int(answer) == values.index(max(values))
    elif question == "anomaly?":
        assert pattern != "spike" and answer == "no"
    elif question.startswith("cause?"):
        assert answer == CAUSE_LETTER[pattern]
    elif question == "max?":
        assert int(answer) == max(values)
    elif question.startswith("count>"):
        threshold = int(question[len("count>") : -1])
        assert int(answer) == sum(v > threshold for v in values)
    else:
        assert question == "pattern?" and answer == pattern


def test_ten_thousand_problems_without_a_contradiction() -> None:
    problems, samples = [], []
    for seed in range(4):
        p, s = generate(VeriTimeConfig(n=3000, seed=seed, min_length=8, max_length=20))
        problems += p
        samples += s
    assert len(problems) >= 10_000
    for problem, sample in zip(problems, samples, strict=True):
        check(problem, sample["target"])
    assert {p["taxonomy"] for p in problems} == {"deductive", "causal", "quantitative", "inductive"}


def test_rows_are_valid_and_fingerprinted(store: ReplayStore) -> None:
    problems, samples = generate(VeriTimeConfig(n=300, seed=0))
    assert store.write("problems", problems).rejected == 0
    assert store.write("sft_samples", samples).rejected == 0
    row = store.query("SELECT config_hash, process_labels, split FROM problems LIMIT 1").to_pylist()[0]
    assert row["config_hash"] and dict(row["process_labels"])["I"]


def test_rewards_on_crafted_completions() -> None:
    labels = {"I": "anom", "P": "spike@3", "S": "70>32", "A": "3", "F": "3"}
    gold = "I:anom;P:spike@3;S:70>32;A:3;#3"
    cases = {
        gold: (3.0, 5.0, 6.0),
        "I:anom;P:spike@4;S:70>32;A:3;#3": (3.0, 5.0, 4.0),  # wrong key pattern: process -2
        "I:calc;P:spike@3;S:x;A:2;#3": (3.0, 5.0, 3.0),  # right answer, shaky process
        "#3": (-2.0, 5.0, 0.0),  # answer without the chain
        "I:anom;P:spike@3": (-2.0, -2.0, 0.0),  # truncated
    }
    for text, (fmt, ans, proc) in cases.items():
        assert get_reward("vt_format")(["q"], [text]) == [fmt], text
        assert get_reward("vt_answer")(["q"], [text], answer=["3"]) == [ans], text
        assert get_reward("vt_process")(["q"], [text], process_labels=[labels]) == [proc], text
    total = get_reward("veritime")(["q"], [gold], answer=["3"], process_labels=[list(labels.items())])
    assert total == [3.0 + 5.0 + 6.0 + 1.0]
    weighted = get_reward("veritime")(
        ["q"], [gold], answer=["3"], process_labels=[labels], veritime_weights={"answer": 0}
    )
    assert weighted == [10.0]
    assert get_reward("vt_length")(["q"], ["x" * 70], max_completion_length=64) == [-2.0]


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="valid: deductive"):
        VeriTimeConfig(tasks=("astrology",))
