"""`arith`: multi-digit addition with a compact step-by-step target a tiny character model learns.

    prompt "47+38="   target "7+8=15;4+3+1=8;#85"   answer "85"

One step per digit, least significant first: the digits, the carry in (if any), their sum; '#'
then the final answer. The learnable task that trainers, tests and benchmarks use.
Held-out problems are chosen by a hash of the prompt, so the split never depends on order or seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from reasonloop.schemas.common import config_fingerprint

SOURCE = "arith"


@dataclass(frozen=True)
class ArithConfig:
    n: int = 1000  # problems to draw (duplicates are dropped, so a few less may come back)
    min_digits: int = 1  # operand length range
    max_digits: int = 3
    heldout_percent: int = 10  # share of the prompt-hash space reserved for evaluation
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError("need 1 <= min_digits <= max_digits")
        if not 0 <= self.heldout_percent < 100:
            raise ValueError("heldout_percent must be in [0, 100)")


def steps_target(a: int, b: int) -> str:
    """The step-by-step target for a + b."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        total = x + y + carry
        steps.append(f"{x}+{y}{f'+{carry}' if carry else ''}={total}")
        carry = total // 10
    return ";".join(steps) + f";#{a + b}"


def is_heldout(prompt: str, percent: int) -> bool:
    digest = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100 < percent


def generate(config: ArithConfig) -> tuple[list[dict], list[dict]]:
    """(problems rows, sft_samples rows) for the store, both carrying the config fingerprint."""
    rng = random.Random(config.seed)
    fingerprint = config_fingerprint(config)
    seen: set[str] = set()
    problems, samples = [], []
    for _ in range(config.n):
        a, b = (int("".join(rng.choice("0123456789") for _ in range(rng.randint(config.min_digits, config.max_digits))))
                for _ in range(2))  # fmt: skip
        prompt = f"{a}+{b}="
        if prompt in seen:
            continue
        seen.add(prompt)
        split = "heldout" if is_heldout(prompt, config.heldout_percent) else "train"
        common = {"source": SOURCE, "split": split, "producer": "recipe:arith", "config_hash": fingerprint}
        problems.append({
            **common, "prompt": prompt, "answer": str(a + b), "answer_type": "exact",
            "taxonomy": f"{max(len(str(a)), len(str(b)))}-digit", "difficulty": float(max(len(str(a)), len(str(b)))),
        })  # fmt: skip
        samples.append({**common, "prompt": prompt, "target": steps_target(a, b)})
    return problems, samples
