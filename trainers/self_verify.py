"""Learning to Self-Verify in the RL loop (2602.07594, SPECS §11.2): with `verify_every` = k, after
every k generation steps one verification step.

A verification step reads the groups of the last k generation steps back from the store (their
rewards decide right and wrong: the first reward component == 1), builds balanced Yes/No rows
(tasks/recipes/self_verify.py; |groups| = prompts_per_step rows, half per label), asks the policy
to judge each response (`verify_template`, `verify_mode`), `group_size` samples each, rewards a
verdict by label match (`exact` on Yes/No, stored as the component `verify`), and trains on them
like any group. Rows carry stage=verify and parent_rollout_id = the rollout judged.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from reasonloop.tasks.recipes.self_verify import Judged, verification_pairs, verify_prompt
from reasonloop.tasks.rewards import CompositeReward
from reasonloop.trainers.step_utils import derive_seed

if TYPE_CHECKING:
    from reasonloop.trainers.rl import RLTrainer


def is_verify_step(step: int, every: int) -> bool:
    """Steps 0..k-1 generate, step k verifies, k+1..2k generate, ... (k = `every`; 0: never)."""
    return every > 0 and step % (every + 1) == every


def label_reward() -> CompositeReward:
    from reasonloop.tasks.rewards.answers import exact

    return CompositeReward({"verify": 1.0}, functions={"verify": exact})


def judged_responses(trainer: RLTrainer, step: int) -> list[tuple[Judged, dict]]:
    """The responses of the generation steps since the last verification step (this run, stage
    single), each with its rollout row (problem id, completion), right by the first reward."""
    c = trainer.config
    metric = next(iter(c.reward_weights()))
    rows = trainer.store.query(
        "SELECT id, group_id, problem_id, coalesce(final_completion, completion) AS response, "
        "rewards[$m] AS score FROM rollouts WHERE run_id = $r AND stage = 'single' "
        "AND policy_version BETWEEN $low AND $high ORDER BY policy_version, group_id, sample_idx",
        {"r": trainer.run_id, "m": metric, "low": step - c.verify_every, "high": step - 1},
    ).to_pylist()  # fmt: skip
    return [(Judged(r["id"], r["group_id"], r["score"] == 1.0), r) for r in rows if r["score"] is not None]


def train_round(trainer: RLTrainer, step: int, round_index: int, metrics: dict[str, float]) -> list[Path]:
    c = trainer.config
    responses = judged_responses(trainer, step)
    rng = random.Random(derive_seed(c.seed, step, f"verify/{round_index}"))
    pairs = verification_pairs([j for j, _ in responses], max(1, c.prompts_per_step // 2), rng)
    metrics["verify/rows_yes"] = float(sum(label for _, label in pairs))
    metrics["verify/rows_no"] = float(sum(not label for _, label in pairs))
    if not pairs:  # nothing mixed or right yet: a generation round instead
        metrics["verify/skipped"] = 1.0
        return []
    row_of = {j.rollout_id: r for j, r in responses}
    mine, first = trainer.my_share(pairs)  # every rank reads the same groups; each verifies its share
    problems, prompts, parents = [], [], []
    for judged, label in mine:
        row = row_of[judged.rollout_id]
        question = trainer.problem_by_id[row["problem_id"]]
        text = verify_prompt(question["prompt"], row["response"], c.verify_template, c.verify_mode)
        asked = {"prompt": text, "messages": [{"role": "user", "content": text}] if question.get("messages") else None}
        problems.append({**question, "answer": "Yes" if label else "No", "answer_type": "exact"})
        prompts.append(trainer.render(asked))
        parents.append(judged.rollout_id)
    result, *_ = trainer.commit_groups(
        problems, c.group_size, step, "verify", salt=str(round_index), metrics=metrics, prompts=prompts,
        parent_ids=parents, reward=label_reward(), draws=range(first, first + len(problems)),
    )  # fmt: skip
    metrics["sequences_generated"] = metrics.get("sequences_generated", 0) + len(problems) * c.group_size
    return result.batch_files


def with_verification(
    trainer: RLTrainer, step: int, metrics: dict[str, float], solve_round: Callable[[int], list]
) -> Callable[[int], list]:
    """A step's round: on a verification step, verification rows (a solving round when there is
    nothing to judge yet); otherwise `solve_round` itself."""
    if not is_verify_step(step, trainer.config.verify_every):
        return solve_round
    return lambda r: train_round(trainer, step, r, metrics) or solve_round(r)
