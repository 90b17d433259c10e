"""The arith recipe: targets checked by an independent reader, stable held-out split, valid rows."""

from __future__ import annotations

import re

from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.arith import ArithConfig, generate, is_heldout, steps_target
from reasonloop.tasks.rewards import get_reward


def check_target(prompt: str, target: str) -> bool:
    """Re-derive a + b from the written steps, digit by digit, without the recipe's code."""
    a, b = (int(x) for x in prompt.rstrip("=").split("+"))
    *steps, final = target.split(";")
    carry, digits = 0, []
    for i, step in enumerate(steps):
        m = re.fullmatch(r"(\d)\+(\d)(?:\+(\d))?=(\d+)", step)
        if not m:
            return False
        x, y, c, total = int(m[1]), int(m[2]), int(m[3] or 0), int(m[4])
        if x != (a // 10**i) % 10 or y != (b // 10**i) % 10 or c != carry or total != x + y + c:
            return False
        digits.append(total % 10)
        carry = total // 10
    value = int("".join(map(str, reversed(digits)))) + carry * 10 ** len(digits)
    return final == f"#{a + b}" and value == a + b


def test_every_target_checks_out() -> None:
    problems, samples = generate(ArithConfig(n=3000, min_digits=1, max_digits=4, seed=11))
    assert len(problems) == len(samples) > 2500
    assert all(check_target(s["prompt"], s["target"]) for s in samples)
    assert steps_target(47, 38) == "7+8=15;4+3+1=8;#85" and steps_target(99, 1) == "9+1=10;9+0+1=10;#100"
    exact = get_reward("exact")
    assert exact(
        [s["prompt"] for s in samples], [s["target"] for s in samples], answer=[p["answer"] for p in problems]
    ) == [1.0] * len(samples)


def test_heldout_split_is_by_content_hash() -> None:
    a, _ = generate(ArithConfig(n=500, seed=1, heldout_percent=20))
    b, _ = generate(ArithConfig(n=500, seed=2, heldout_percent=20))
    split = {p["prompt"]: p["split"] for p in a}
    assert all(split[p["prompt"]] == p["split"] for p in b if p["prompt"] in split), "same prompt, same split"
    heldout = sum(p["split"] == "heldout" for p in a) / len(a)
    assert 0.1 < heldout < 0.3
    assert all((p["split"] == "heldout") == is_heldout(p["prompt"], 20) for p in a)


def test_rows_are_valid_store_rows(store: ReplayStore) -> None:
    problems, samples = generate(ArithConfig(n=200, seed=0))
    assert store.write("problems", problems).rejected == 0
    assert store.write("sft_samples", samples).rejected == 0
    hashes = store.query("SELECT DISTINCT config_hash, producer FROM problems").to_pylist()
    assert len(hashes) == 1 and hashes[0]["producer"] == "recipe:arith" and hashes[0]["config_hash"]
