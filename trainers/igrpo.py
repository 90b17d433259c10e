"""iGRPO (arXiv 2602.09000): draft, select, refine — a wrapper around any registered loss.

Per prompt and step: Stage 1 samples N drafts (stored with stage=draft, no gradient, no
advantage), scores them with the training reward, and selects one (best | worst | random; ties
broken with the step's RNG). Stage 2 samples G - N refinements from the template
`{question}...{draft}` (stage=refine, parent_rollout_id = the draft) scored against the gold
answer; only refinement tokens enter the loss (the prompt and the draft are its prompt, so they
are masked by construction). N + (G - N) = G keeps the rollout budget equal to GRPO's; every
generated sequence, dynamic-sampling refills included, is counted in `sequences_generated`.
With `igrpo_train_drafts`, drafts get their own group advantages and are trained on too (single-shot
prompts then keep a gradient: inference stays single-shot, so training only on refinement prompts
moves the policy away from the distribution it is evaluated on).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from reasonloop.trainers.step_utils import derive_seed

if TYPE_CHECKING:
    from reasonloop.trainers.rl import RLTrainer


def select_draft(rewards: list[float], rule: str, rng: random.Random) -> int:
    """Index of the selected draft; ties are broken uniformly with `rng`."""
    if rule == "random":
        return rng.randrange(len(rewards))
    target = max(rewards) if rule == "best" else min(rewards)
    return rng.choice([i for i, r in enumerate(rewards) if r == target])


def igrpo_round(trainer: RLTrainer, step: int, round_index: int, metrics: dict[str, float]) -> list[Path]:
    c = trainer.config
    n_drafts, n_refine = c.drafts, c.group_size - c.drafts
    problems = trainer.pick_problems(step, f"pick/{round_index}", c.prompts_per_step)
    salt = str(round_index)
    drafts, completions, rewards, rows = trainer.commit_groups(
        problems, n_drafts, step, "draft", salt=salt, train=c.igrpo_train_drafts
    )
    draft_ids = [row["id"] for row in rows]
    rng = random.Random(derive_seed(c.seed, step, f"select/{round_index}"))
    chosen_text, chosen_ids, chosen_rewards = [], [], []
    for p in range(len(problems)):
        indices = [k for k, comp in enumerate(completions) if comp.prompt_index == p]
        scores = [rewards.totals[k] if rewards.totals[k] is not None else 0.0 for k in indices]
        pick = indices[select_draft(scores, c.igrpo_select, rng)]
        chosen_text.append(completions[pick].text)
        chosen_ids.append(draft_ids[pick])
        chosen_rewards.append(scores[indices.index(pick)])
    prompts = [
        c.igrpo_template.format(question=p["prompt"], draft=d) for p, d in zip(problems, chosen_text, strict=True)
    ]
    refine, _, refine_rewards, _ = trainer.commit_groups(
        problems, n_refine, step, "refine", salt=salt, prompts=prompts, parent_ids=chosen_ids
    )
    draft_scores = [t if t is not None else 0.0 for t in rewards.totals]
    refine_scores = [t if t is not None else 0.0 for t in refine_rewards.totals]
    metrics["igrpo/draft_reward_mean"] = sum(draft_scores) / len(draft_scores)
    metrics["igrpo/draft_reward_max"] = max(draft_scores)
    metrics["igrpo/selected_draft_reward_mean"] = sum(chosen_rewards) / len(chosen_rewards)
    metrics["igrpo/refine_minus_draft"] = sum(refine_scores) / len(refine_scores) - metrics["igrpo/draft_reward_mean"]
    metrics["sequences_generated"] = metrics.get("sequences_generated", 0) + len(problems) * c.group_size
    return refine.batch_files + (drafts.batch_files if c.igrpo_train_drafts else [])
