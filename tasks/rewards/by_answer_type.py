"""Scoring a completion the way its problem says it is checked (`problems.answer_type`).

    exact -> exact   numeric -> numeric   quantity -> quantity (units)   choice -> choice
    math -> math (math-verify)
    json -> exact (the canonical text)    rubric -> None (needs a judge: no verdict here)

What evaluation uses, so a held-out set of mixed problems is scored fairly, whatever reward the
training run used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reasonloop.tasks.rewards.registry import get_reward

SCORER_OF = {
    "exact": "exact",
    "numeric": "numeric",
    "quantity": "quantity",
    "choice": "choice",
    "math": "math",
    "json": "exact",
}


def score_by_answer_type(
    prompts: Sequence[Any], completions: Sequence[Any], answers: Sequence[Any], answer_types: Sequence[str | None]
) -> list[float | None]:
    """One score per completion, by its problem's answer type (None: no verifier for the type)."""
    out: list[float | None] = [None] * len(completions)
    by_type: dict[str, list[int]] = {}
    for i, kind in enumerate(answer_types):
        by_type.setdefault(kind or "exact", []).append(i)
    for kind, rows in by_type.items():
        name = SCORER_OF.get(kind)
        if name is None:
            continue
        scores = get_reward(name)(
            [prompts[i] for i in rows], [completions[i] for i in rows], answer=[answers[i] for i in rows]
        )
        for i, s in zip(rows, scores, strict=True):
            out[i] = s
    return out
