"""`arith_mc`: addition as a ten-option multiple-choice question (A-J, as MMLU-Pro), with a direct
and a deliberate answer mode, so that a tiny model has something for Reinforcement Inference's
second attempt to add:

    direct       "72+63=? A)105 B)115 C)125 ... J)195"            -> "#D"
    deliberate   the same + "\\n" + the deliberate instruction      -> "2+3=5;7+6=13;135;#D"
                 (half of these rows also show a first answer, right or wrong: the strategy's
                 `include_first` flag then has a trained meaning)

The options share the sum's last digit and differ in its tens digit (0-9 in letter order), so the
letter is the sum's tens digit: a direct answer must do the carry in one token and is often unsure
between neighbouring options; the chain works it out. Why this shape: with shuffled options
("B)136") the letter needs a content lookup of the written sum in the prompt, which the tiny and
small models did not learn in 1,000-2,000 SFT steps (chance accuracy with correct sums), so the
deliberate mode added nothing; here the chain's last step is a fixed digit -> letter map.
Held-out problems are chosen by a hash of the prompt, as `arith`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from reasonloop.schemas.common import config_fingerprint
from reasonloop.tasks.inference.reinforcement import DELIBERATE, LETTERS, deliberate_prompt
from reasonloop.tasks.recipes.arith import is_heldout

SOURCE = "arith_mc"


@dataclass(frozen=True)
class ArithChoiceConfig:
    n: int = 2000  # problems to draw (duplicates are dropped, so a few less may come back)
    min_digits: int = 2  # digits of the multiplicand (the multiplier is one digit, 2-9)
    max_digits: int = 3
    first_shown: float = 0.5  # share of deliberate rows whose prompt shows a (random) first answer
    instruction: str = DELIBERATE
    heldout_percent: int = 10
    dev_percent: int = 10  # split "test": never trained on, where RI calibrates its threshold
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.min_digits <= self.max_digits:
            raise ValueError("need 2 <= min_digits <= max_digits (a tens digit to ask about)")
        if not 0.0 <= self.first_shown <= 1.0 or not 0 <= self.heldout_percent + self.dev_percent < 100:
            raise ValueError("first_shown must be in [0, 1] and heldout_percent + dev_percent in [0, 100)")


def options(value: int) -> list[int]:
    """Ten values with `value`'s last digit and every tens digit, in letter order."""
    base = value - 10 * (value // 10 % 10)
    return [base + 10 * k for k in range(10)]


def question(a: int, b: int) -> str:
    return f"{a}*{b}=? " + " ".join(f"{LETTERS[k]}){o}" for k, o in enumerate(options(a * b)))


def letter_of(a: int, b: int) -> str:
    return LETTERS[a * b // 10 % 10]


def worked(a: int, b: int) -> str:
    """The deliberate target: one step per digit of `a` (least significant first, with the
    carry), the product, then the letter of its tens digit."""
    steps, carry = [], 0
    for digit in reversed(str(a)):
        value = int(digit) * b + carry
        steps.append(f"{digit}*{b}{f'+{carry}' if carry else ''}={value}")
        carry = value // 10
    return ";".join(steps) + f";{a * b};#{letter_of(a, b)}"


def split_of(prompt: str, config: ArithChoiceConfig) -> str:
    """heldout (evaluation), test (the dev split RI calibrates on) or train, by a hash of the prompt."""
    if is_heldout(prompt, config.heldout_percent):
        return "heldout"
    return "test" if is_heldout(prompt, config.heldout_percent + config.dev_percent) else "train"


def generate(config: ArithChoiceConfig) -> tuple[list[dict], list[dict]]:
    """(problems rows, sft_samples rows): one problem per question; a direct and a deliberate
    sample per training problem."""
    rng = random.Random(config.seed)
    fingerprint = config_fingerprint(config)
    seen: set[str] = set()
    problems, samples = [], []
    for _ in range(config.n):
        digits = rng.randint(config.min_digits, config.max_digits)
        a, b = rng.randint(10 ** (digits - 1), 10**digits - 1), rng.randint(2, 9)
        prompt, letter = question(a, b), letter_of(a, b)
        if prompt in seen:
            continue
        seen.add(prompt)
        split = split_of(prompt, config)
        common = {"source": SOURCE, "split": split, "producer": "recipe:arith_mc", "config_hash": fingerprint}
        problems.append({
            **common, "prompt": prompt, "answer": letter, "answer_type": "choice",
            "choices": [str(o) for o in options(a * b)], "taxonomy": f"{digits}-digit",
            "difficulty": float(digits), "metadata": json.dumps({"product": a * b}),
        })  # fmt: skip
        shown = rng.choice(LETTERS) if rng.random() < config.first_shown else None
        if split != "train":  # held-out and dev questions get no training rows
            continue
        samples.append({**common, "prompt": prompt, "target": f"#{letter}"})
        samples.append({**common, "prompt": deliberate_prompt(prompt, config.instruction, shown),
                        "target": worked(a, b)})  # fmt: skip
    return problems, samples
