"""Exploration-expanding SFT selection (Dr. SCI): from candidate responses, greedily pick the ones
that add the most unique n-grams (4-grams by default) to what is already picked.

Coverage is a set-cover objective (monotone, submodular), so greedy is within 1 − 1/e of the best
subset of the same size; ties go to the earlier candidate, so a selection is reproducible.
`coverage` of a random selection of the same size is the paper's baseline.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def ngrams(text: str, n: int = 4, unit: str = "word") -> set[tuple[str, ...]]:
    """Unique n-grams of a text over words (whitespace split) or characters."""
    tokens: Sequence[str] = text.split() if unit == "word" else list(text)
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def greedy_select(
    candidates: Sequence[str], k: int, n: int = 4, unit: str = "word", covered: set | None = None
) -> list[int]:
    """Indices of up to k candidates, each the one adding the most new n-grams; stops early when no
    candidate adds any (a duplicate teaches nothing new). `covered`: n-grams already picked (e.g.
    by earlier problems); updated in place."""
    grams = [ngrams(c, n, unit) for c in candidates]
    covered = set() if covered is None else covered
    picked: list[int] = []
    for _ in range(min(k, len(candidates))):
        gains = [(len(g - covered), -i) for i, g in enumerate(grams) if i not in picked]
        best_gain, neg_i = max(gains)
        if best_gain == 0:
            break
        picked.append(-neg_i)
        covered |= grams[-neg_i]
    return picked


def coverage(candidates: Sequence[str], picked: Sequence[int], n: int = 4, unit: str = "word") -> int:
    """Unique n-grams of the picked candidates together."""
    out: set[tuple[str, ...]] = set()
    for i in picked:
        out |= ngrams(candidates[i], n, unit)
    return len(out)


def random_select(candidates: Sequence[str], k: int, seed: int = 0) -> list[int]:
    return random.Random(seed).sample(range(len(candidates)), min(k, len(candidates)))
