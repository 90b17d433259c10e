"""Answer extraction and the exact / numeric / multiple-choice verifiers."""

from __future__ import annotations

import math
import re
from typing import Any

from reasonloop.tasks.rewards.registry import register_reward, safe_scores

MAX_SCAN = 20_000  # characters of a completion we look at: bounds time on adversarial output
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def boxed_content(text: str) -> str | None:
    """Content of the last \\boxed{...} with balanced braces, or None (also for an unclosed one)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_answer(text: str) -> str:
    """The final answer of a completion: the last <answer>…</answer>, else the last \\boxed{…},
    else what follows the last '#' (arith / GSM8K '####' style), else the whole text."""
    text = text[-MAX_SCAN:]
    tagged = _ANSWER_TAG.findall(text)
    if tagged:
        return tagged[-1].strip()
    boxed = boxed_content(text)
    if boxed is not None:
        return boxed.strip()
    if "#" in text:
        return text.rsplit("#", 1)[1].strip()
    return text.strip()


def normalize_answer(text: str) -> str:
    return " ".join(text.split()).lower()


def _exact(text: str, answer: Any) -> float:
    return float(normalize_answer(extract_answer(text)) == normalize_answer(str(answer)))


def _numeric(text: str, answer: Any, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> float | None:
    gold = float(str(answer).replace(",", ""))
    found = NUMBER.findall(extract_answer(text).replace(",", ""))
    if not found:
        return 0.0
    value = float(found[-1])
    return float(math.isfinite(value) and math.isclose(value, gold, rel_tol=rel_tol, abs_tol=abs_tol))


def _choice(text: str, answer: Any) -> float:
    picked = re.findall(r"\b([A-Z])\b", extract_answer(text).upper())
    return float(bool(picked) and picked[-1] == str(answer).strip().upper()[:1])


@register_reward("exact")
def exact(prompts: list[Any], completions: list[Any], answer: list[Any], **_: Any) -> list[float | None]:
    """1 if the extracted final answer equals `answer` (whitespace- and case-insensitive), else 0."""
    return safe_scores(_exact, completions, answer)


@register_reward("numeric")
def numeric(prompts: list[Any], completions: list[Any], answer: list[Any], **_: Any) -> list[float | None]:
    """1 if the last number of the extracted answer equals `answer` within 1e-6 relative."""
    return safe_scores(_numeric, completions, answer)


@register_reward("choice")
def choice(prompts: list[Any], completions: list[Any], answer: list[Any], **_: Any) -> list[float | None]:
    """1 if the last standalone capital letter of the extracted answer is the gold option."""
    return safe_scores(_choice, completions, answer)
