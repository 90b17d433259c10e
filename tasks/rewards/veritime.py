"""VeriTime's multi-objective reward (arXiv 2602.07830), on the compact step format of
tasks/recipes/veritime.py: `I:..;P:..;S:..;A:..;#answer`.

    format   +3 if the completion has the five labelled steps in order, else -2
    answer   +5 if the final answer equals the gold answer, else -2
    process  up to +6: intent +1, key pattern +2, preliminary answer +2, final answer +1
             (agreement with the problem's step labels: the process, not only the outcome)
    length   +1 for a complete chain within the token budget (max_completion_length), len/16 when
             shorter than 16 characters, -2 when it used the whole budget (truncated)

`veritime` is their weighted sum (weights default to 1: the paper sums them unweighted).
Each reads the gold step labels from the `process_labels` column.
"""

from __future__ import annotations

import re
from typing import Any

from reasonloop.tasks.rewards.answers import extract_answer
from reasonloop.tasks.rewards.registry import register_reward, safe_scores

STEP_FORMAT = re.compile(r"I:([^;#]*);P:([^;#]*);S:([^;#]*);A:([^;#]*);#(\S+)")
DEFAULT_WEIGHTS = {"format": 1.0, "answer": 1.0, "process": 1.0, "length": 1.0}


def parse_steps(text: str) -> dict[str, str] | None:
    match = STEP_FORMAT.fullmatch(text.strip())
    if match is None:
        return None
    return dict(zip(("I", "P", "S", "A", "F"), (g.strip() for g in match.groups()), strict=True))


def _labels(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return {str(k): str(v) for k, v in value or []}  # Arrow map -> list of (key, value)


def format_score(text: str) -> float:
    return 3.0 if parse_steps(text) is not None else -2.0


def answer_score(text: str, answer: Any) -> float:
    return 5.0 if extract_answer(text).lower() == str(answer).strip().lower() else -2.0


def process_score(text: str, labels: Any) -> float:
    steps, gold = parse_steps(text), _labels(labels)
    if steps is None:
        return 0.0
    points = {"I": 1.0, "P": 2.0, "A": 2.0, "F": 1.0}
    return sum(w for k, w in points.items() if k in gold and steps[k].lower() == gold[k].lower())


def length_score(text: str, budget: int = 64, tokens: int | None = None) -> float:
    """`tokens`: the completion's token count, compared with the budget (a generation cap is in
    tokens); without it the text's length stands in (one token per character)."""
    if (tokens if tokens is not None else len(text)) >= budget:
        return -2.0
    return 1.0 if len(text) >= 16 else len(text) / 16


@register_reward("vt_format")
def vt_format(prompts: list[Any], completions: list[Any], **_: Any) -> list[float | None]:
    """+3 for the five labelled steps in order, else -2."""
    return safe_scores(format_score, completions)


@register_reward("vt_answer")
def vt_answer(prompts: list[Any], completions: list[Any], answer: list[Any], **_: Any) -> list[float | None]:
    """+5 if the final answer is the gold answer, else -2."""
    return safe_scores(answer_score, completions, answer)


@register_reward("vt_process")
def vt_process(
    prompts: list[Any], completions: list[Any], process_labels: list[Any] | None = None, **_: Any
) -> list[float | None]:
    """Step-label agreement, 0..6; None (no verdict) for rows without step labels."""
    if process_labels is None:
        return [None] * len(completions)
    return safe_scores(
        lambda text, labels: None if not labels else process_score(text, labels), completions, process_labels
    )


@register_reward("vt_length")
def vt_length(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
    """+1 for a chain within `max_completion_length` tokens (default 64), -2 at the cap."""
    budget = int(kwargs.get("max_completion_length", 64))
    ids = kwargs.get("completion_ids")
    counts = [len(x) for x in ids] if ids is not None else [None] * len(completions)
    return safe_scores(lambda text, n: length_score(text, budget, n), completions, counts)


@register_reward("veritime")
def veritime(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """format + answer + process + length (weights via `veritime_weights`, default all 1)."""
    weights = {**DEFAULT_WEIGHTS, **(columns.pop("veritime_weights", None) or {})}
    parts = {
        "format": vt_format(prompts, completions),
        "answer": vt_answer(prompts, completions, columns.get("answer", [""] * len(completions))),
        "process": vt_process(prompts, completions, columns.get("process_labels", [None] * len(completions))),
        "length": vt_length(prompts, completions, **columns),
    }
    out: list[float | None] = []
    for i in range(len(completions)):
        values = [parts[k][i] for k in parts]
        out.append(None if any(v is None for v in values) else sum(weights[k] * parts[k][i] for k in parts))
    return out
