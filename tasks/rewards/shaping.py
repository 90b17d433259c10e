"""Shaping rewards: output format tags and DAPO's soft overlong penalty."""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from reasonloop.tasks.rewards.registry import register_reward, safe_scores


def format_score(text: str, tags: tuple[str, ...] = ("think", "answer")) -> float:
    """1 if the text is exactly the given tags in order, each once, non-empty, nothing around
    them but whitespace (so nested or unbalanced tags score 0)."""
    body = r"\s*".join(rf"<{t}>((?:(?!<{t}>|</{t}>).)+?)</{t}>" for t in tags)
    return float(re.fullmatch(rf"\s*{body}\s*", text, flags=re.DOTALL) is not None)


@register_reward("format")
def tag_format(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
    """<think>…</think><answer>…</answer> structure (tags configurable via `format_tags`)."""
    tags = tuple(kwargs.get("format_tags") or ("think", "answer"))
    return safe_scores(partial(format_score, tags=tags), completions)


def overlong_penalty(length: int, max_length: int, cache: int) -> float:
    """DAPO soft overlong punishment (arXiv 2503.14476 §3.4): 0 up to max_length - cache tokens,
    then linearly down to -1 at max_length, -1 beyond."""
    if length <= max_length - cache:
        return 0.0
    if length <= max_length:
        return ((max_length - cache) - length) / cache
    return -1.0


@register_reward("overlong")
def soft_overlong(
    prompts: list[Any], completions: list[Any], completion_ids: list[list[int]] | None = None, **kwargs: Any
) -> list[float | None]:
    """DAPO soft overlong penalty on completion length in tokens (characters if no ids);
    `max_completion_length` (default 64) and `overlong_cache` (default 16) configure it."""
    max_length = int(kwargs.get("max_completion_length", 64))
    cache = int(kwargs.get("overlong_cache", 16))
    lengths = [len(ids) for ids in completion_ids] if completion_ids is not None else None
    return [
        overlong_penalty(lengths[i] if lengths is not None else len(str(c)), max_length, cache)
        for i, c in enumerate(completions)
    ]
