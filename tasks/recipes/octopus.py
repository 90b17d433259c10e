"""Octopus (2602.08503, SPECS §3): self-correction in one pass, o1 ⊕ separator ⊕ o2, and the pieces
its RL needs — the parser, pair labels, the two selection rules that recombine a group's rollouts
into extra (o1ⁱ, o2ʲ) pairs, and the shaped reward with the released code's caps. Pure functions
over strings and booleans; the store operation (trainers/octopus.py) and the trainer use them.

Departures, on purpose:
- Answers are recipe-defined (`AnswerFormat`): arith and VeriTime end with `#<answer>`, the paper's
  `\\boxed{...}` is the other format. fmt(o) is "exactly one answer, non-empty": our recipes have no
  `<think>` block for the paper's format check to look at.
- Correctness comes from the recipe's verifier (`verify(part, gold)`), as `_is_response_correct`
  does with mathruler in the code.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SEPARATOR = "\n\n<self-correction>\n</self-correction>\n\n"  # App. A.1, exactly
LABELS = ("cc", "cw", "wc", "ww")  # correctness of o1 then o2: "wc" is w→c, a correction
SHAPED = {"wc": 1.0, "cc": 0.75, "ww": 0.0, "cw": -0.25}  # r'(o1, o2), Eq. 3 (from SRPO)
FORMAT_WEIGHT = 0.1  # r_sc = 0.9·r' + 0.1·min(fmt(o1), fmt(o2)), Eq. 6


@dataclass(frozen=True)
class AnswerFormat:
    """Where a part's final answer is: `pattern` matches one answer, group 1 its content."""

    name: str
    pattern: re.Pattern[str]

    def answers(self, text: str) -> list[re.Match[str]]:
        return list(self.pattern.finditer(text))

    def truncate(self, text: str) -> str | None:
        """`text` up to the end of its last answer (what follows is dropped), or None without one."""
        found = self.answers(text)
        return text[: found[-1].end()].strip() if found else None

    def answer(self, text: str) -> str | None:
        found = self.answers(text)
        return found[-1].group(1).strip() if found else None

    def well_formed(self, part: str | None) -> float:
        """fmt(o): 1 when the part has exactly one answer and it is not empty."""
        if part is None:
            return 0.0
        found = self.answers(part)
        return float(len(found) == 1 and bool(found[0].group(1).strip()))


HASH = AnswerFormat("hash", re.compile(r"#([^\s#;]*)"))  # arith, VeriTime: ...;#85
BOXED = AnswerFormat("boxed", re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}"))  # one level of nested braces
FORMATS = {f.name: f for f in (HASH, BOXED)}


@dataclass(frozen=True)
class Correction:
    """One completion split: `o1` and `o2` truncated after their last answer, None when the part
    has none (or, for o2, when there is no separator)."""

    o1: str | None
    o2: str | None
    has_separator: bool


def split_correction(text: str, answer: AnswerFormat = HASH, separator: str = SEPARATOR) -> Correction:
    """o1 ⊕ separator ⊕ o2 → its parts. A second separator ends o2 (the code cuts a completion at
    a second self-correction block), so o2 is the first correction."""
    head, found, tail = text.partition(separator)
    o1 = answer.truncate(head)
    if not found:
        return Correction(o1, None, False)
    return Correction(o1, answer.truncate(tail.split(separator, 1)[0]), True)


def final_part(text: str, separator: str = SEPARATOR) -> str:
    """The text after the last separator: what test-time scaling (k more corrections) scores."""
    return text.rsplit(separator, 1)[-1]


def pair_label(o1_correct: bool, o2_correct: bool) -> str:
    return ("c" if o1_correct else "w") + ("c" if o2_correct else "w")


Verify = Callable[[str, str], bool]  # (part, gold) -> correct


def correction_reward(parts: Correction, gold: str, verify: Verify, answer: AnswerFormat = HASH) -> float:
    """r_sc with the released code's caps: o1 == o2 → r' ≤ 0.5; o1 without an answer → r' ≤ 0;
    o2 badly formed → r' ≤ 0.5; no separator → 0.9·(acc − 0.5) + 0.1·fmt of the single answer."""
    fmt1, fmt2 = answer.well_formed(parts.o1), answer.well_formed(parts.o2)
    c1 = parts.o1 is not None and verify(parts.o1, gold)
    if not parts.has_separator:
        return (1 - FORMAT_WEIGHT) * (float(c1) - 0.5) + FORMAT_WEIGHT * fmt1
    c2 = parts.o2 is not None and verify(parts.o2, gold)
    shaped = SHAPED[pair_label(c1, c2)]
    if parts.o1 == parts.o2:
        shaped = min(shaped, 0.5)
    if parts.o1 is None or not (answer.answer(parts.o1) or ""):
        shaped = min(shaped, 0.0)
    if fmt2 == 0.0:
        shaped = min(shaped, 0.5)
    return (1 - FORMAT_WEIGHT) * shaped + FORMAT_WEIGHT * min(fmt1, fmt2)


# ---------------------------------------------------------------------------------------- pairs
Pair = tuple[int, int]  # (i, j): o1 of rollout i, o2 of rollout j


def candidate_pairs(o1_correct: Sequence[bool | None], o2_correct: Sequence[bool | None]) -> dict[str, list[Pair]]:
    """Every (o1ⁱ, o2ʲ) of a group by label; a part that was dropped (None) pairs with nothing.
    i == j is the original split and joined again, as in the code."""
    pools: dict[str, list[Pair]] = {label: [] for label in LABELS}
    for i, c1 in enumerate(o1_correct):
        for j, c2 in enumerate(o2_correct):
            if c1 is not None and c2 is not None:
                pools[pair_label(c1, c2)].append((i, j))
    return pools


def _take(pool: list[Pair], count: int, out: list[Pair]) -> None:
    count = max(0, min(count, len(pool)))
    out.extend(pool[:count])
    del pool[:count]


def select_pairs(
    pools: dict[str, list[Pair]], originals_correct: Sequence[bool], extra: int, rule: str, rng: random.Random
) -> tuple[list[Pair], int]:
    """`extra` (= N − n) pairs to add to a group of n originals, by the paper's rule or the
    released code's; returns (pairs, how many originals to repeat as padding when pairs run out).

    paper: all originals correct or all wrong → pairs at random; else (N/2 − n_c) positives (w→c,
      topped up with c→c), then negatives (c→w and w→w) so that positives equal negatives.
    code: quota ⌊(n − k)/2⌋ of w→c, then as many c→c; one c→w; w→w; the other c→w; leftover
      w→c/c→c; then originals repeated."""
    pools = {label: rng.sample(pool, len(pool)) for label, pool in pools.items()}  # shuffled copies
    n, k = len(originals_correct), sum(originals_correct)
    chosen: list[Pair] = []
    if rule == "paper":
        if k in (0, n):
            everything = [p for label in LABELS for p in pools[label]]
            _take(rng.sample(everything, len(everything)), extra, chosen)
        else:
            _take(pools["wc"], (n + extra) // 2 - k, chosen)
            _take(pools["cc"], (n + extra) // 2 - k - len(chosen), chosen)
            negatives = rng.sample(pools["cw"] + pools["ww"], len(pools["cw"]) + len(pools["ww"]))
            _take(negatives, extra - len(chosen), chosen)
            rest = rng.sample(pools["wc"] + pools["cc"], len(pools["wc"]) + len(pools["cc"]))
            _take(rest, extra - len(chosen), chosen)  # not enough negatives: more positives
    elif rule == "code":
        quota = (n - k) // 2
        _take(pools["wc"], min(quota, extra), chosen)
        _take(pools["cc"], min(quota, extra - len(chosen)), chosen)
        _take(pools["cw"], min(1, extra - len(chosen)), chosen)
        _take(pools["ww"], extra - len(chosen), chosen)
        _take(pools["cw"], extra - len(chosen), chosen)
        leftover = rng.sample(pools["wc"] + pools["cc"], len(pools["wc"]) + len(pools["cc"]))
        _take(leftover, extra - len(chosen), chosen)
    else:
        raise ValueError(f"octopus selection must be paper or code, not {rule!r}")
    return chosen, extra - len(chosen)
