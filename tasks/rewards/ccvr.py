"""CoTZero's CCVR reward (arXiv 2602.08339; SPECS §5), on the chain format of tasks/recipes/cotzero.py:
`G:<global>;L:<object>|<object>;R:<fact>,<fact>;#yes|no`.

    R = w_f·format + w_a·answer + w_s·semantic + w_e·edit          (start: 0.1, 0.5, 0.2, 0.2)

    format    1 if the completion is the four steps in order with a yes/no answer, else 0
    answer    1 if the answer is the gold one
    semantic  per step, agreement with the scene graph's gold step (`process_labels` G, L, R):
              G exact; L and R as sets of items, F1 against the gold items; the mean of the three.
              SPECS' form compares sentence embeddings (cos); this is the exact check, stricter: an
              object described with a wrong attribute or a false fact earns nothing for that item.
    edit      1 - Lev(steps, gold steps) / max(len): the Levenshtein distance between the
              sequences of step items (G, then L's objects, then R's facts), so order counts here
              where `semantic` ignores it.

An unparseable chain scores 0 on format, semantic and edit, and is still judged on its answer.
"""

from __future__ import annotations

import re
from typing import Any

from reasonloop.tasks.rewards.registry import register_reward, safe_scores
from reasonloop.tasks.rewards.veritime import _labels

CHAIN = re.compile(r"G:([^;#]*);L:([^;#]*);R:([^;#]*);#\s*(yes|no)\s*", re.IGNORECASE)
ANSWER = re.compile(r"#\s*(yes|no)\b", re.IGNORECASE)
DEFAULT_WEIGHTS = {"format": 0.1, "answer": 0.5, "semantic": 0.2, "edit": 0.2}


def parse_chain(text: str) -> dict[str, str] | None:
    match = CHAIN.fullmatch(text.strip())
    if match is None:
        return None
    return dict(zip(("G", "L", "R", "F"), (g.strip().lower() for g in match.groups()), strict=True))


def _items(step: str, sep: str) -> list[str]:
    return [item.strip() for item in step.split(sep) if item.strip()]


def _f1(predicted: list[str], gold: list[str]) -> float:
    if not predicted and not gold:
        return 1.0
    hits = len(set(predicted) & set(gold))
    if not hits:
        return 0.0
    precision, recall = hits / len(set(predicted)), hits / len(set(gold))
    return 2 * precision * recall / (precision + recall)


def _sequence(steps: dict[str, str]) -> list[str]:
    return (
        [f"g:{steps['G']}"] + [f"l:{x}" for x in _items(steps["L"], "|")] + [f"r:{x}" for x in _items(steps["R"], ",")]
    )


def levenshtein(a: list[str], b: list[str]) -> int:
    """Edit distance between two sequences (insert, delete, substitute: 1 each)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _gold(labels: Any) -> dict[str, str]:
    gold = {k: v.strip().lower() for k, v in _labels(labels).items()}
    missing = {"G", "L", "R", "F"} - set(gold)
    if missing:
        raise ValueError(f"process_labels lack the CoTZero steps {sorted(missing)}")
    return gold


def format_score(text: str) -> float:
    return 1.0 if parse_chain(text) is not None else 0.0


def answer_score(text: str, answer: Any) -> float:
    found = ANSWER.findall(text)
    return 1.0 if found and found[-1].lower() == str(answer).strip().lower() else 0.0


def step_scores(steps: dict[str, str], labels: Any) -> dict[str, float]:
    """A parsed chain against the gold steps: G right, L and R item F1, R exactly right, and (for a
    one-fact yes/no R such as `left of=yes`) whether the answer is the fact's value."""
    gold = _gold(labels)
    out = {
        "G": float(steps["G"] == gold["G"]),
        "L": _f1(_items(steps["L"], "|"), _items(gold["L"], "|")),
        "R": _f1(_items(steps["R"], ","), _items(gold["R"], ",")),
        "R_exact": float(steps["R"] == gold["R"]),
    }
    facts = _items(steps["R"], ",")
    if len(facts) == 1 and facts[0].rpartition("=")[2] in ("yes", "no"):
        out["answer_follows_R"] = float(facts[0].rpartition("=")[2] == steps["F"])
    return out


def semantic_score(text: str, labels: Any) -> float:
    steps = parse_chain(text)
    if steps is None:
        return 0.0
    per_step = step_scores(steps, labels)
    return (per_step["G"] + per_step["L"] + per_step["R"]) / 3


def edit_score(text: str, labels: Any) -> float:
    steps, gold = parse_chain(text), _gold(labels)
    if steps is None:
        return 0.0
    a, b = _sequence(steps), _sequence(gold)
    return 1.0 - levenshtein(a, b) / max(len(a), len(b))


def _needs_labels(fn: Any, completions: list[Any], labels: list[Any] | None) -> list[float | None]:
    if labels is None:
        return [None] * len(completions)
    return safe_scores(lambda text, gold: None if not gold else fn(text, gold), completions, labels)


@register_reward("ccvr_format")
def ccvr_format(prompts: list[Any], completions: list[Any], **_: Any) -> list[float | None]:
    """1 for the G/L/R/answer chain in order, else 0."""
    return safe_scores(format_score, completions)


@register_reward("ccvr_answer")
def ccvr_answer(prompts: list[Any], completions: list[Any], answer: list[Any], **_: Any) -> list[float | None]:
    """1 if the last '#yes'/'#no' is the gold answer, else 0."""
    return safe_scores(answer_score, completions, answer)


@register_reward("ccvr_semantic")
def ccvr_semantic(prompts: list[Any], completions: list[Any], process_labels: list[Any] | None = None,
                  **_: Any) -> list[float | None]:  # fmt: skip
    """Per-step agreement with the scene graph's gold steps, 0..1; None without step labels."""
    return _needs_labels(semantic_score, completions, process_labels)


@register_reward("ccvr_edit")
def ccvr_edit(prompts: list[Any], completions: list[Any], process_labels: list[Any] | None = None,
              **_: Any) -> list[float | None]:  # fmt: skip
    """1 - normalized Levenshtein distance of the step sequence to the gold one; None without labels."""
    return _needs_labels(edit_score, completions, process_labels)


@register_reward("ccvr")
def ccvr(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """w_f·format + w_a·answer + w_s·semantic + w_e·edit (weights via `ccvr_weights`; default
    0.1, 0.5, 0.2, 0.2)."""
    weights = {**DEFAULT_WEIGHTS, **(columns.pop("ccvr_weights", None) or {})}
    labels = columns.get("process_labels")
    parts = {
        "format": ccvr_format(prompts, completions),
        "answer": ccvr_answer(prompts, completions, columns.get("answer", [""] * len(completions))),
        "semantic": ccvr_semantic(prompts, completions, labels),
        "edit": ccvr_edit(prompts, completions, labels),
    }
    out: list[float | None] = []
    for i in range(len(completions)):
        values = {k: parts[k][i] for k in parts}
        out.append(None if any(v is None for v in values.values()) else sum(weights[k] * v for k, v in values.items()))
    return out
