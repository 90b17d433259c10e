"""Math equivalence with math-verify (symbolic, LaTeX-aware): `\\frac{1}{2}` equals `0.5`.

math-verify's own timeouts use SIGALRM, which raises outside the main thread — where Prefect
runs tasks — so they are turned off; instead the input is bounded: only the extracted final
answer (at most MAX_ANSWER characters) is parsed, never the whole completion.
"""

from __future__ import annotations

import logging
from typing import Any

from reasonloop.tasks.rewards.answers import boxed_content, extract_answer
from reasonloop.tasks.rewards.registry import register_reward, safe_scores

MAX_ANSWER = 300

for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).setLevel(logging.ERROR)


def _math(text: str, answer: Any) -> float | None:
    from math_verify import parse, verify  # imported (and failing loudly) before any scoring

    pred = extract_answer(text)
    if len(pred) > MAX_ANSWER:
        return 0.0
    gold_text = str(answer)
    gold = parse(gold_text if boxed_content(gold_text) else f"${gold_text}$", parsing_timeout=None)
    target = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    if not gold:
        return None  # the gold answer itself does not parse: no verdict
    return float(bool(target) and verify(gold, target, timeout_seconds=None))


@register_reward("math")
def math_equivalence(prompts: list[Any], completions: list[Any], answer: list[Any], **_: Any) -> list[float | None]:
    """1 if the extracted answer is mathematically equivalent to `answer` (math-verify)."""
    import math_verify  # noqa: F401 - a missing dependency is an error, not a None score

    return safe_scores(_math, completions, answer)
