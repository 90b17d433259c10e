"""Curation's first stages: clean, classify by subject, split verifiable vs open-ended.

    clean     empty or malformed answers (a choice key that names no option, a quantity that does
              not parse, an open item with no answer) or rubric items -> dropped with the reason
    classify  a subject per row: the rule set below (keywords, first match in SUBJECTS order), or
              a judge engine that answers with one subject name
    split     verifiable (a rule can check it: numeric, quantity, choice, exact, math, json) with a
              canonical answer, or open-ended (`rubric`); open-ended math is dropped, as the paper
              does (proof-style answers, overlong outputs)

A drop is `(row, reason)`; the flow quarantines them in `rejected`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from reasonloop.tasks.rewards.rubric import first_word, parse_item
from reasonloop.tasks.rewards.units import canonical_quantity

Dropped = tuple[dict, str]
SUBJECTS: dict[str, tuple[str, ...]] = {
    "biology": ("bio:", "bio why", "gene", "allele", "dna", "cell", "protein", "enzyme", "organism"),
    "chemistry": ("chem:", "chem why", "molar", "mol ", "mol of", "reaction", "compound", "acid", "g/mol"),
    "physics": ("phys:", "phys why", "velocity", "m/s", "voltage", "ohm", "current", "pressure", "force", "kpa"),
    "medicine": ("patient", "diagnos", "symptom", "dose", "clinical"),
    "economics": ("price", "demand", "supply", "inflation", "market"),
    "cs": ("algorithm", "complexity", "program", "compiler"),
    "math": ("integer", "prove", "polynomial", "equation", "theorem", "solve for"),
}
GENERAL = "general_science"
VERIFIABLE_TYPES = frozenset({"exact", "numeric", "quantity", "choice", "math", "json"})


def meta(row: dict) -> dict:
    """The row's metadata JSON as a dict ({} when absent or not an object)."""
    try:
        value = json.loads(row.get("metadata") or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def answer_problem(row: dict) -> str | None:
    """Why the row's reference answer cannot be used, or None."""
    answer, kind = (row.get("answer") or "").strip(), row.get("answer_type") or "exact"
    if not (row.get("prompt") or "").strip():
        return "empty prompt"
    if not answer:
        return "empty answer"
    if kind == "choice":
        choices = row.get("choices") or []
        if len(answer) != 1 or not answer.isalpha() or ord(answer.upper()) - ord("A") >= max(1, len(choices)):
            return f"choice answer {answer!r} names none of {len(choices)} options"
    if kind == "numeric":
        try:
            if not math.isfinite(float(answer.replace(",", ""))):
                return f"numeric answer {answer!r} is not finite"
        except ValueError:
            return f"numeric answer {answer!r} is not a number"
    if kind == "quantity" and canonical_quantity(answer) is None:
        return f"quantity answer {answer!r} has no number"
    for k, item in enumerate(row.get("rubric") or []):
        try:
            parse_item(item)
        except ValueError as exc:
            return f"rubric item {k}: {exc}"
    return None


def clean(rows: Sequence[dict]) -> tuple[list[dict], list[Dropped]]:
    kept, dropped = [], []
    for row in rows:
        why = answer_problem(row)
        if why:
            dropped.append((row, f"clean: {why}"))
        else:
            kept.append(row)
    return kept, dropped


def rule_subject(row: dict) -> str:
    """The first subject (SUBJECTS order) one of whose keywords the prompt holds; else general."""
    declared = meta(row).get("subject")
    if declared in SUBJECTS or declared == GENERAL:
        return declared
    text = " ".join((row.get("prompt") or "").lower().split()) + " "
    return next((s for s, words in SUBJECTS.items() if any(w in text for w in words)), GENERAL)


def judge_subjects(engine: Any, rows: Sequence[dict]) -> list[str]:
    """Subjects by a judge engine (greedy, one batched call); an answer naming no subject is general."""
    from reasonloop.tasks.engines import SamplingParams

    names = [*SUBJECTS, GENERAL]
    asks = [f"Classify the question's subject as one of: {', '.join(names)}.\nQuestion: {r['prompt']}\nSubject:"
            for r in rows]  # fmt: skip
    out = sorted(
        engine.generate(asks, 1, SamplingParams(temperature=0, max_new_tokens=24)), key=lambda c: c.prompt_index
    )
    picked = [first_word(c.text).lower() for c in out]
    return [p if p in names else GENERAL for p in picked]


def canonical_answer(row: dict) -> str:
    """The reference answer in one spelling per value: quantities as '<value> <unit>', numbers
    without grouping or trailing zeros, choice keys upper-case, text whitespace-collapsed."""
    answer, kind = row["answer"].strip(), row.get("answer_type") or "exact"
    if kind == "quantity":
        return canonical_quantity(answer) or answer
    if kind == "numeric":
        return f"{float(answer.replace(',', '')):g}"
    if kind == "choice":
        return answer.upper()
    return re.sub(r"\s+", " ", answer)


def split_kind(rows: Sequence[dict], subjects: Sequence[str]) -> tuple[list[dict], list[Dropped]]:
    """Rows annotated with `subject`, `kind` and a canonical answer; open-ended math dropped."""
    kept, dropped = [], []
    for row, subject in zip(rows, subjects, strict=True):
        kind = "verifiable" if (row.get("answer_type") or "exact") in VERIFIABLE_TYPES else "open"
        if kind == "open" and subject == "math":
            dropped.append((row, "split: open-ended math is dropped"))
            continue
        kept.append({**row, "answer": canonical_answer(row), "subject": subject, "kind": kind})
    return kept, dropped
