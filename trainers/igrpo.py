"""iGRPO (arXiv 2602.09000): draft, select, refine — a wrapper around any registered loss.

Per prompt and step: Stage 1 samples N drafts (stored with stage=draft, no gradient, no
advantage), scores them with the training reward, and selects one (best | worst | random by that
reward, or judge: best by a judge's verdict on the final answer, the paper's generative-judge
ablation; ties broken with the step's RNG). Stage 2 samples G - N refinements (stage=refine,
parent_rollout_id = the draft) scored against the gold answer. The refinement prompt is
`igrpo_template` for plain prompts, and for chat prompts the conversation with the draft as an
assistant turn followed by a user turn asking for a correction (`igrpo_refine_request`): the same
prompt as the refinement SFT data and two-pass evaluation (tasks/recipes/igrpo_refine.py). Only
refinement tokens enter the loss (the prompt and the draft are its prompt, so they are masked by
construction). N + (G - N) = G keeps the rollout budget equal to GRPO's; every generated
sequence, dynamic-sampling refills included, is counted in `sequences_generated`. Mean token
entropy is logged per stage (`igrpo/entropy_draft`, `_refine`): the paper's "delayed entropy
collapse" is a claim about the drafts, the single-pass distribution.
With `igrpo_train_drafts`, drafts get their own group advantages and are trained on too (single-shot
prompts then keep a gradient: inference stays single-shot, so training only on refinement prompts
moves the policy away from the distribution it is evaluated on).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonloop.tasks.recipes.igrpo_refine import refinement_prompt
from reasonloop.tasks.rewards.rubric import Question
from reasonloop.trainers.step_utils import derive_seed

if TYPE_CHECKING:
    from reasonloop.trainers.rl import RLTrainer


TRAINED_STAGES = ("refine",)  # what replay draws from (drafts train only with igrpo_train_drafts)


def select_draft(rewards: list[float], rule: str, rng: random.Random) -> int:
    """Index of the selected draft; ties are broken uniformly with `rng`."""
    if rule == "random":
        return rng.randrange(len(rewards))
    target = max(rewards) if rule == "best" else min(rewards)
    return rng.choice([i for i, r in enumerate(rewards) if r == target])


def train_round(trainer: RLTrainer, step: int, round_index: int, metrics: dict[str, float]) -> list[Path]:
    c = trainer.config
    n_drafts, n_refine = c.drafts, c.group_size - c.drafts
    problems, first = trainer.my_share(trainer.pick_problems(step, f"pick/{round_index}", c.prompts_per_step))
    salt = str(round_index)
    drafts, completions, rewards, rows, problems, draws = trainer.commit_groups(
        problems, n_drafts, step, "draft", salt=salt, train=c.igrpo_train_drafts, metrics=metrics,
        draws=range(first, first + len(problems)),
    )  # fmt: skip
    draft_ids = [row["id"] for row in rows]
    graded = selection_scores(trainer, problems, completions, rewards.totals)
    rule = "best" if c.igrpo_select == "judge" else c.igrpo_select
    chosen_text, chosen_ids, chosen_rewards = [], [], []
    for p in range(len(problems)):
        rng = random.Random(derive_seed(c.seed, step, f"select/{round_index}/{draws[p]}"))  # a draw's own ties
        indices = [k for k, comp in enumerate(completions) if comp.prompt_index == p]
        unscored = float("inf") if rule == "worst" else float("-inf")  # never preferred
        scores = [graded[k] if graded[k] is not None else unscored for k in indices]
        pick = indices[select_draft(scores, rule, rng)]
        chosen_text.append(completions[pick].text)
        chosen_ids.append(draft_ids[pick])
        if rewards.totals[pick] is not None:
            chosen_rewards.append(rewards.totals[pick])
    prompts = [
        refinement_prompt(trainer.render(p), p["prompt"], d, c.igrpo_template, c.igrpo_refine_request)
        for p, d in zip(problems, chosen_text, strict=True)
    ]
    refine, refinements, refine_rewards, *_ = trainer.commit_groups(
        problems, n_refine, step, "refine", salt=salt, prompts=prompts, parent_ids=chosen_ids, metrics=metrics,
        draws=draws,
    )  # fmt: skip
    draft_scores = [t for t in rewards.totals if t is not None] or [0.0]
    refine_scores = [t for t in refine_rewards.totals if t is not None] or [0.0]
    metrics["igrpo/draft_reward_mean"] = sum(draft_scores) / len(draft_scores)
    metrics["igrpo/draft_reward_max"] = max(draft_scores)
    metrics["igrpo/selected_draft_reward_mean"] = sum(chosen_rewards) / max(1, len(chosen_rewards))
    metrics["igrpo/refine_minus_draft"] = sum(refine_scores) / len(refine_scores) - metrics["igrpo/draft_reward_mean"]
    for stage, generated in (("draft", completions), ("refine", refinements)):
        entropies = [e for e in (x.mean_entropy for x in generated) if e is not None]
        if entropies:
            metrics[f"igrpo/entropy_{stage}"] = sum(entropies) / len(entropies)
    metrics["sequences_generated"] = metrics.get("sequences_generated", 0) + len(problems) * c.group_size
    return refine.batch_files + (drafts.batch_files if c.igrpo_train_drafts else [])


def selection_scores(trainer: RLTrainer, problems: list[dict], drafts: list[Any], totals: list) -> list:
    """What selection ranks drafts by: the training reward, or with `igrpo_select judge` the
    judge's verdict on each draft's final answer against the gold one (1 / 0; None: no verdict)."""
    judge = trainer.draft_judge
    if judge is None:
        return list(totals)
    questions = [
        Question(problems[d.prompt_index]["prompt"], d.final_text, None, str(problems[d.prompt_index]["answer"]))
        for d in drafts
    ]  # fmt: skip
    return [None if v is None else float(v) for v in judge.verdicts(questions)]
