"""Rubric generation for open-ended items that have none: a judge engine writes 5–15 atomic items,
one per line, `<Essential|Important|Optional|Pitfall>: criterion [kw: ...]` (the keyword list is
optional; an LLM judge grades by the criterion). Lines that do not parse are skipped; a rubric with
fewer than `min_items` items or no Essential item is no rubric (the row is dropped with why)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reasonloop.tasks.rewards.rubric import TAGS, parse_item

TEMPLATE = (
    "Write a grading rubric for the question below: 5 to 15 atomic criteria, one per line, each starting with "
    "one tag of {tags} and a colon. Pitfall criteria describe mistakes.\nQuestion: {prompt}\n"
    "Reference answer: {answer}\nRubric:\n"
)


def parse_rubric(text: str, min_items: int = 5, max_items: int = 15) -> list[str] | None:
    items = []
    for line in text.splitlines():
        try:
            items.append(str(parse_item(line.strip().lstrip("-* "))))
        except ValueError:
            continue
    items = items[:max_items]
    if len(items) < min_items or not any(i.startswith("Essential:") for i in items):
        return None
    return items


def generate_rubrics(engine: Any, rows: Sequence[dict], max_new_tokens: int = 512) -> list[list[str] | None]:
    """One rubric (or None) per row, from one batched greedy call."""
    from reasonloop.tasks.engines import SamplingParams

    if not rows:
        return []
    asks = [TEMPLATE.format(tags="/".join(TAGS), prompt=r["prompt"], answer=r["answer"]) for r in rows]
    out = sorted(engine.generate(asks, 1, SamplingParams(temperature=0, max_new_tokens=max_new_tokens)),
                 key=lambda c: c.prompt_index)  # fmt: skip
    return [parse_rubric(c.text) for c in out]
