"""The paired comparison of two evaluations on the same problems."""

from __future__ import annotations

import math
import random

import pytest

from reasonloop.trainers.evaluate import paired_gain


def _eval(correct: list[int], ids: list[str] | None = None) -> dict:
    n = len(correct)
    acc = sum(correct) / n
    ids = ids if ids is not None else [f"p{i}" for i in range(n)]
    return {"accuracy": acc, "stderr": math.sqrt(acc * (1 - acc) / n), "ids": ids, "correct": correct}


def test_hand_computed_paired_standard_error() -> None:
    before = _eval([1, 1, 0, 0])
    after = _eval([1, 1, 1, 0])  # d = [0, 0, 1, 0]: mean 0.25, sample variance 0.25
    gain = paired_gain(after, before)
    assert gain.paired
    assert gain.delta == pytest.approx(0.25)
    assert gain.stderr == pytest.approx(math.sqrt(0.25 / 4))


def test_identical_models_have_zero_difference_and_zero_noise() -> None:
    e = _eval([1, 0, 1, 1, 0])
    gain = paired_gain(e, e)
    assert (gain.delta, gain.stderr, gain.beyond_noise) == (0.0, 0.0, False)


def test_paired_error_is_smaller_than_unpaired_when_models_agree_mostly() -> None:
    rng = random.Random(0)
    before = [int(rng.random() < 0.6) for _ in range(1024)]
    # The second model flips 5% of the answers, most of them to correct.
    after = [1 - b if rng.random() < 0.05 and (b == 0 or rng.random() < 0.3) else b for b in before]
    paired = paired_gain(_eval(after), _eval(before))
    unpaired = paired_gain(_eval(after), _eval(before, ids=[f"q{i}" for i in range(1024)]))
    assert paired.paired and not unpaired.paired
    assert paired.delta == unpaired.delta
    assert paired.stderr < unpaired.stderr / 2


def test_other_problems_fall_back_to_unpaired() -> None:
    gain = paired_gain(_eval([1, 0]), {"accuracy": 0.5, "stderr": 0.1})
    assert not gain.paired
    assert gain.stderr == pytest.approx(math.sqrt(0.25 / 2 + 0.01))
