"""Rewards: verifiers on crafted completions, adversarial inputs, the composite, TRL compatibility."""

from __future__ import annotations

import threading

import pytest

from reasonloop.tasks.rewards import REWARDS, CompositeReward, get_reward
from reasonloop.tasks.rewards.answers import extract_answer
from reasonloop.tasks.rewards.shaping import format_score, overlong_penalty

ADVERSARIAL = [
    "",
    "x" * 2_000_000,
    "bad \ud800 surrogate",
    "<answer><answer>1</answer></answer>",
    "<think>unclosed <answer>2",
    "</answer>3<answer>",
    "\\boxed{",
    "\\boxed{\\frac{1}{",
    "\\boxed{" * 1000,
    "#" * 10_000,
    "1e99999",
    "nan",
    None,
    [{"role": "assistant", "content": None}],
]


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_adversarial_completions_score_or_none_never_raise(name: str) -> None:
    fn = get_reward(name)
    n = len(ADVERSARIAL)
    scores = fn(prompts=["q"] * n, completions=ADVERSARIAL, answer=["1"] * n, completion_ids=[[1, 2]] * n)
    assert len(scores) == n
    assert all(s is None or isinstance(s, float) for s in scores)


def test_extract_answer_prefers_tags_then_boxed_then_hash() -> None:
    assert extract_answer("<think>#3</think><answer> 42 </answer>") == "42"
    assert extract_answer("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert extract_answer("7+8=15;4+3+1=8;#85") == "85"
    assert extract_answer("#### 12") == "12"
    assert extract_answer(" plain ") == "plain"


def test_exact_numeric_choice() -> None:
    exact, numeric, choice = get_reward("exact"), get_reward("numeric"), get_reward("choice")
    assert exact(["q"] * 3, ["5+6=11;#11", "#12", "<answer> ELEVEN </answer>"], answer=["11", "11", "eleven"]) == [
        1.0,
        0.0,
        1.0,
    ]
    assert numeric(["q"] * 4, ["#0.5000000001", "#1,000", "no number", "#2"], answer=["0.5", "1000", "3", "3"]) == [
        1.0,
        1.0,
        0.0,
        0.0,
    ]
    assert choice(["q"] * 3, ["<answer>(B)</answer>", "I pick C", "#A or B"], answer=["B", "C", "A"]) == [1.0, 1.0, 0.0]


def test_math_equivalence_with_math_verify_in_a_worker_thread() -> None:
    math = get_reward("math")
    completions = ["\\boxed{\\frac{1}{2}}", "<answer>0.5</answer>", "#1/3", "\\boxed{2x+2}"]
    result: list = []
    worker = threading.Thread(
        target=lambda: result.extend(math(["q"] * 4, completions, answer=["0.5", "1/2", "0.5", "2(x+1)"]))
    )
    worker.start()
    worker.join(timeout=60)
    assert result == [1.0, 1.0, 0.0, 1.0], "no SIGALRM outside the main thread"


def test_format_reward() -> None:
    assert format_score("<think>a</think>\n<answer>b</answer>") == 1.0
    assert format_score("<think>a</think>") == 0.0
    assert format_score("<think>a<think>b</think></think><answer>c</answer>") == 0.0
    assert format_score("<answer>b</answer><think>a</think>") == 0.0
    assert format_score("<step>x</step>", tags=("step",)) == 1.0
    assert get_reward("format")(["q"], ["<a>x</a>"], format_tags=["a"]) == [1.0]


def test_dapo_overlong_penalty_edges() -> None:
    assert overlong_penalty(48, 64, 16) == 0.0
    assert overlong_penalty(56, 64, 16) == -0.5
    assert overlong_penalty(64, 64, 16) == -1.0
    assert overlong_penalty(65, 64, 16) == -1.0
    scores = get_reward("overlong")(
        ["q"] * 2, ["a", "b"], completion_ids=[[0] * 10, [0] * 60], max_completion_length=64, overlong_cache=16
    )
    assert scores == [0.0, -0.75]


def test_composite_keeps_components_and_runs_trl_functions_unchanged() -> None:
    def trl_style_length_reward(completions, **kwargs):  # a TRL reward function, as users write them
        return [float(len(c[-1]["content"]) if isinstance(c, list) else len(c)) for c in completions]

    reward = CompositeReward({"exact": 1.0, "length": 0.01}, functions={"length": trl_style_length_reward})
    convo = [[{"role": "assistant", "content": "#4"}], [{"role": "assistant", "content": "#5"}]]
    result = reward(["2+2="] * 2, convo, answer=["4", "4"])
    assert result.components == {"exact": [1.0, 0.0], "length": [2.0, 2.0]}
    assert result.totals == pytest.approx([1.02, 0.02])
    nones = CompositeReward({"math": 1.0})(["q"], ["#1"], answer=[""])  # a gold answer that does not parse
    assert nones.totals == [None] and nones.components["math"] == [None]
    with pytest.raises(ValueError, match="valid rewards"):
        CompositeReward({"nope": 1.0})
