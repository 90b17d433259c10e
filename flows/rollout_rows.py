"""Completions -> `rollouts` rows (ids, group ids and token data as the store expects)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas import row_id
from tasks.engines.base import Completion, Prompt
from tasks.engines.fake import prompt_text


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
) -> list[dict]:
    """One row per completion. A group is the samples of one prompt at one policy version;
    `rewards` is a RewardResult (totals + components) or None for unscored rollouts."""
    rows, sample_idx = [], {}
    for k, c in enumerate(completions):
        text = prompt_text(prompts[c.prompt_index])
        problem_id = problem_ids[c.prompt_index] if problem_ids else row_id("problems", (text, "", "exact", source))
        group_id = row_id("groups", (run_id, policy_version, problem_id, stage))[:16]
        idx = sample_idx[group_id] = sample_idx.get(group_id, -1) + 1
        row = {
            "run_id": run_id, "problem_id": problem_id, "group_id": group_id, "sample_idx": idx, "stage": stage,
            "policy_version": policy_version, "prompt": text, "completion": c.text, "prompt_ids": c.prompt_ids,
            "completion_ids": c.token_ids, "logprobs": c.logprobs, "entropy": c.mean_entropy,
            "finish_reason": c.finish_reason, "reward": None, "rewards": None,
        }  # fmt: skip
        if rewards is not None:
            row["reward"] = rewards.totals[k]
            row["rewards"] = {
                name: v for name, v in ((n, s[k]) for n, s in rewards.components.items()) if v is not None
            }
        rows.append(row)
    return rows
