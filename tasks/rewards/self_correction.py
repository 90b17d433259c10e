"""Octopus's self-correction reward r_sc (tasks/recipes/octopus.py) as registered reward functions:
`self_correction` for `#<answer>` recipes (arith, VeriTime), `self_correction_boxed` for `\\boxed{}`.
Each part is verified the way its problem says (`answer_type`, as evaluation scores it)."""

from __future__ import annotations

from typing import Any

from reasonloop.tasks.recipes.octopus import BOXED, HASH, AnswerFormat, correction_reward, split_correction
from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type
from reasonloop.tasks.rewards.registry import completion_text, register_reward


def part_verifier(answer_type: str | None) -> Any:
    """verify(part, gold): the part scores 1 under its problem's verifier."""

    def verify(part: str, gold: str) -> bool:
        return score_by_answer_type([""], [part], [gold], [answer_type])[0] == 1.0

    return verify


def _scores(answer_format: AnswerFormat, completions: list, answer: list, answer_type: list | None) -> list:
    kinds = answer_type or [None] * len(completions)
    out: list[float | None] = []
    for completion, gold, kind in zip(completions, answer, kinds, strict=True):
        parts = split_correction(completion_text(completion), answer_format)
        out.append(correction_reward(parts, str(gold), part_verifier(kind), answer_format))
    return out


@register_reward("self_correction")
def self_correction(prompts: list, completions: list, answer: list, answer_type: list | None = None, **_: Any) -> list:
    return _scores(HASH, completions, answer, answer_type)


@register_reward("self_correction_boxed")
def self_correction_boxed(
    prompts: list, completions: list, answer: list, answer_type: list | None = None, **_: Any
) -> list:
    return _scores(BOXED, completions, answer, answer_type)
