"""Octopus's self-correction reward r_sc (tasks/recipes/octopus.py) as registered reward functions:
`self_correction` for `#<answer>` recipes (arith, VeriTime), `self_correction_boxed` for `\\boxed{}`.
Each part is verified the way its problem says (`answer_type`, as evaluation scores it)."""

from __future__ import annotations

from typing import Any

from reasonloop.tasks.recipes.octopus import (
    BOXED,
    HASH,
    SEPARATOR,
    AnswerFormat,
    correction_reward,
    final_part,
    split_correction,
)
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


def answer_verdicts(
    texts: list[str], answers: list, answer_types: list, answer_format: AnswerFormat = HASH
) -> tuple[list[bool], list[bool]]:
    """Per completion, whether its first answer (before the first separator) and its final one
    (after the last) are right; a part without an answer is wrong, and a completion with no
    separator has one answer, both first and final."""
    first_ok, final_ok = [], []
    for text, gold, kind in zip(texts, answers, answer_types, strict=True):
        verify = part_verifier(kind)
        first = answer_format.truncate(text.split(SEPARATOR, 1)[0])
        final = answer_format.truncate(final_part(text))
        first_ok.append(first is not None and verify(first, str(gold)))
        final_ok.append(final is not None and verify(final, str(gold)))
    return first_ok, final_ok


def correction_stats(
    texts: list[str], answers: list, answer_types: list, answer_format: AnswerFormat = HASH
) -> dict[str, float]:
    """How self-correcting completions fare: accuracy of the first answer (o1) and of the final
    one (after the last separator), and the w→c and c→w rates, over completions with a separator
    (`n`); a part without an answer counts as wrong."""
    kept = [k for k, text in enumerate(texts) if SEPARATOR in text]
    first_ok, final_ok = answer_verdicts(
        [texts[k] for k in kept], [answers[k] for k in kept], [answer_types[k] for k in kept], answer_format
    )
    n = max(1, len(kept))
    pairs = list(zip(first_ok, final_ok, strict=True))
    return {
        "n": float(len(kept)), "first_accuracy": sum(first_ok) / n, "final_accuracy": sum(final_ok) / n,
        "w_to_c": sum(not a and b for a, b in pairs) / n, "c_to_w": sum(a and not b for a, b in pairs) / n,
    }  # fmt: skip
