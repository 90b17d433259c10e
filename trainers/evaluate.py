"""Greedy accuracy (and pass@k) of a policy on a fixed list of problems."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.engines.base import Engine, SamplingParams
from tasks.rewards import get_reward


@dataclass
class EvalResult:
    accuracy: float
    n: int
    stderr: float  # binomial standard error of `accuracy`

    def __str__(self) -> str:
        return f"{100 * self.accuracy:.1f}% ± {100 * self.stderr:.1f} (n={self.n})"


def greedy_accuracy(
    engine: Engine, problems: Sequence[dict], *, max_new_tokens: int, reward: str = "exact"
) -> EvalResult:
    """Share of problems whose greedy completion the reward scores 1."""
    prompts = [p["prompt"] for p in problems]
    out = engine.generate(prompts, 1, SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
    scores = get_reward(reward)(prompts, [c.text for c in out], answer=[p["answer"] for p in problems])
    acc = sum(s == 1.0 for s in scores) / max(1, len(scores))
    return EvalResult(acc, len(scores), math.sqrt(acc * (1 - acc) / max(1, len(scores))))
