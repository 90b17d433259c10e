"""Reinforcement Inference's trigger (2602.08520, SPECS §9): how unsure a first answer is, and
the threshold that re-asks a target share of questions.

For a multiple-choice question the first pass's answer distribution P is read from the logprobs
of the option-letter tokens at the answer position (an engine's top_logprobs, or a forward pass),
restricted to the options and renormalized. Signals: entropy H(P) = −Σ p log p, or 1 − MSP with
MSP = max p (so that for both, higher means less sure). The threshold is per model: calibrated on
a dev split as the quantile that re-asks `target_rate` of it (the paper's setting re-asked 61%).
Pure functions; the engines and the evaluation strategy use them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

SIGNALS = ("entropy", "msp")


def option_distribution(letter_logprobs: Mapping[str, float], options: Sequence[str]) -> list[float]:
    """P over `options` from logprobs keyed by token text (surrounding whitespace ignored, so ' B'
    counts for 'B'; the most likely spelling of a letter wins). Options with no logprob get 0; if
    none has one, P is uniform (nothing is known)."""
    allowed = set(options)  # a set: `"" in "ABCD"` is True when the options are a string of letters
    best: dict[str, float] = {}
    for token, logprob in letter_logprobs.items():
        key = token.strip()
        if key in allowed and logprob > best.get(key, -math.inf):
            best[key] = logprob
    if not best:
        return [1.0 / len(options)] * len(options)
    top = max(best.values())  # shift before exp: the renormalized P is the same, without underflow
    weights = [math.exp(best[o] - top) if o in best else 0.0 for o in options]
    total = sum(weights)
    return [w / total for w in weights]


def entropy(p: Sequence[float]) -> float:
    """H(P) in nats (0 log 0 = 0)."""
    return -sum(x * math.log(x) for x in p if x > 0)


def uncertainty(p: Sequence[float], signal: str = "entropy") -> float:
    """Higher = less sure: H(P) for `entropy`, 1 − max P for `msp`."""
    if signal == "entropy":
        return entropy(p)
    if signal == "msp":
        return 1.0 - max(p)
    raise ValueError(f"signal must be one of {', '.join(SIGNALS)}")


def calibrate_threshold(dev_scores: Sequence[float], target_rate: float) -> float:
    """τ such that re-asking where score > τ re-asks round(target_rate · n) of the dev scores
    (fewer when ties straddle τ: a tie is never split). 0 → τ = max (none), 1 → τ = −inf (all)."""
    if not 0.0 <= target_rate <= 1.0:
        raise ValueError("target_rate must be in [0, 1]")
    if not dev_scores:
        raise ValueError("calibration needs dev scores")
    ordered = sorted(dev_scores)
    k = round(target_rate * len(ordered))  # how many to re-ask
    return -math.inf if k == len(ordered) else ordered[len(ordered) - k - 1]


def reask(scores: Sequence[float], threshold: float) -> list[bool]:
    """Which questions get the second, deliberate attempt."""
    return [s > threshold for s in scores]
