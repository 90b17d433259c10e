"""Completions -> `rollouts` rows, with ids computed here so rows can reference each other
(an iGRPO refinement names its draft) before they are committed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reasonloop.schemas import row_id
from reasonloop.tasks.engines.base import Completion, Prompt
from reasonloop.tasks.engines.fake import prompt_text


def group_key(
    run_id: str, policy_version: int, problem_id: str, stage: str, salt: str = "", draw: int | str = 0
) -> str:
    """A group: the samples of one draw of a prompt (a problem drawn twice in one call is two
    groups), at one policy version, stage and generation round."""
    return row_id("groups", (run_id, policy_version, problem_id, stage, salt, draw))[:16]


def _is_ids(prompt: Prompt) -> bool:
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], int)


def rollout_rows(
    completions: Sequence[Completion],
    prompts: Sequence[Prompt],
    *,
    run_id: str,
    policy_version: int,
    rewards: Any | None,
    source: str,
    problem_ids: Sequence[str] | None = None,
    stage: str = "single",
    salt: str = "",
    parent_ids: Sequence[str | None] | None = None,
    advantages: Sequence[float | None] | None = None,
    draws: Sequence[int] | None = None,
) -> list[dict]:
    """One row per completion. `rewards` is a RewardResult (totals + components) or None for
    unscored rollouts; `parent_ids` and `advantages` are per prompt and per completion; `draws`
    (per prompt, default its index) key the groups, so data-parallel ranks' groups never collide."""
    rows, sample_idx = [], {}
    for k, c in enumerate(completions):
        text = prompt_text(prompts[c.prompt_index]) if not _is_ids(prompts[c.prompt_index]) else ""
        problem_id = problem_ids[c.prompt_index] if problem_ids else row_id("problems", (text, "", "exact", source))
        draw = draws[c.prompt_index] if draws is not None else c.prompt_index
        group_id = group_key(run_id, policy_version, problem_id, stage, salt, draw)
        idx = sample_idx[group_id] = sample_idx.get(group_id, -1) + 1
        row = {
            "id": row_id("rollouts", (run_id, policy_version, problem_id, stage, group_id, idx)),
            "run_id": run_id, "problem_id": problem_id, "group_id": group_id, "sample_idx": idx, "stage": stage,
            "parent_rollout_id": parent_ids[c.prompt_index] if parent_ids else None,
            "policy_version": policy_version, "prompt": text, "completion": c.text, "prompt_ids": c.prompt_ids,
            "completion_ids": c.token_ids, "logprobs": c.logprobs, "entropy": c.mean_entropy,
            "finish_reason": c.finish_reason, "reward": None, "rewards": None, "final_completion": c.visible_text,
            "advantage": advantages[k] if advantages is not None else None,
        }  # fmt: skip
        if rewards is not None:
            row["reward"] = rewards.totals[k]
            row["rewards"] = {
                name: v for name, v in ((n, s[k]) for n, s in rewards.components.items()) if v is not None
            }
        rows.append(row)
    return rows
