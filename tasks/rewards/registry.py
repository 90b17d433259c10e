"""Reward functions registered by name, with TRL's calling convention so TRL rewards run unchanged:

    fn(prompts=[...], completions=[...], completion_ids=[...], **row_columns) -> list[float | None]

`completions` are strings or conversations (lists of {"role", "content"}); row columns (e.g.
`answer`) arrive as lists aligned with the completions. None means "no score" (not zero).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reasonloop.tasks.registry import Registry

RewardFn = Callable[..., list[float | None]]
REWARDS: Registry[RewardFn] = Registry("reward")
register_reward = REWARDS.register


def get_reward(name: str) -> RewardFn:
    import reasonloop.tasks.rewards  # noqa: F401 - registers the built-in rewards

    return REWARDS.get(name)


def completion_text(completion: Any) -> str:
    """The text of a plain or conversational completion (the last assistant turn)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return "" if completion is None else str(completion)


def safe_scores(
    fn: Callable[[str, Any], float | None], completions: list[Any], *columns: list[Any]
) -> list[float | None]:
    """Apply a per-item scorer; an exception on one adversarial completion scores None, never
    aborts the batch."""
    out: list[float | None] = []
    for i, completion in enumerate(completions):
        try:
            out.append(fn(completion_text(completion), *(col[i] for col in columns)))
        except Exception:
            out.append(None)
    return out
