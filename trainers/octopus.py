"""Octopus RL (2602.08503, SPECS §3): rollouts written o1 ⊕ separator ⊕ o2 are recombined into a
bigger group through the store, then trained with selective masking.

One round of a step:
    generate n per prompt (stage `self_correct`, scored with r_sc, committed: the sampling record)
    -> READ the committed group back -> recombine (`augment`): the n originals, N − n (o1ⁱ, o2ʲ)
       pairs chosen by the paper's or the code's rule, originals repeated if pairs run out
    -> COMMIT the augmented group (stage `recombined`, N rows: pair type, source rollout ids, both
       parts' correctness) with advantages normalized over the N -> the trainer reads it back.

A recombined pair is spliced at the token level, as the released code does: tokens(o1ⁱ) ⊕
tokens(separator) ⊕ tokens(o2ʲ) ⊕ EOS, each part truncated after its last answer. No policy sampled
that sequence, so its `logprobs` are recomputed by the policy that the step's originals came from
(π_old), without gradient; an original keeps its sampled tokens and logprobs.

Masks (rows' `loss_mask_spans`, `kl_mask_spans`; the update honours both):
- stage 1: every row with a separator leaves o1 and the separator out of the policy loss (so the
  GSPO ratio is over o2 only), and a KL term to the reference covers o1 (`span_kl_coef`);
- stage 2: o1 and the separator stay out only for w→c and c→w rows (a reward for the correction
  would push up a wrong o1, or push down a right one); cc and ww rows train whole; no KL.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from reasonloop.schemas import row_id
from reasonloop.tasks.models.precision import eos_token_ids
from reasonloop.tasks.recipes.octopus import (
    FORMATS,
    SEPARATOR,
    candidate_pairs,
    pair_label,
    select_pairs,
    split_correction,
)
from reasonloop.tasks.rewards.self_correction import part_verifier
from reasonloop.tasks.rollout_rows import group_key
from reasonloop.trainers.step_utils import derive_seed, typed_rollouts

if TYPE_CHECKING:
    from reasonloop.trainers.rl import RLTrainer

TRAINED_STAGES = ("recombined",)  # the augmented groups; the sampled ones are their record


def train_round(trainer: RLTrainer, step: int, round_index: int, metrics: dict[str, float]) -> list[Path]:
    """Sample, commit, recombine through the store, commit the augmented groups; their files."""
    from reasonloop.storage.samplers import batch_rows

    c = trainer.config
    problems, first = trainer.my_share(trainer.pick_problems(step, f"pick/{round_index}", c.prompts_per_step))
    salt = str(round_index)
    raw = trainer.commit_groups(
        problems, c.group_size, step, "self_correct", salt=salt, train=False, metrics=metrics,
        draws=range(first, first + len(problems)),
    )  # fmt: skip
    metrics["sequences_generated"] = metrics.get("sequences_generated", 0) + len(raw.problems) * c.group_size
    with trainer.timed("store_read"):
        committed = batch_rows(trainer.reader, raw.result.batch_files)
    with trainer.timed("recombine"):
        rows = augment(trainer, committed, step, salt, metrics)
    with trainer.timed("store_write"):
        if not rows:
            return []
        result = trainer.store.write(
            "rollouts", typed_rollouts(rows), run_id=trainer.run_id, producer=trainer.producer, sync=False
        )
        trainer.files_since_compaction += len(result.files)
    if result.rejected:
        raise RuntimeError(f"recombined rollouts were rejected: {result.rejections[0].reason}")
    return result.batch_files


def token_boundary(tokenizer: Any, ids: Sequence[int], chars: int) -> int:
    """The fewest leading tokens whose text reaches `chars` characters (a token that straddles the
    boundary is counted in: masks err on the side of leaving a token out)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(list(ids[:mid]), skip_special_tokens=True)) >= chars:
            hi = mid
        else:
            lo = mid + 1
    return lo


def stage_masks(
    stage: int, label: str | None, o1_end: int, separator_end: int, masks: bool = True
) -> tuple[list | None, list | None]:
    """(loss_mask_spans, kl_mask_spans) of a row with a separator, in completion tokens; none
    with `masks` off (the reward-hacking control)."""
    if not masks:
        return None, None
    if stage == 1:
        return [{"start": 0, "end": separator_end}], [{"start": 0, "end": o1_end}]
    if label in ("cc", "ww"):
        return None, None
    return [{"start": 0, "end": separator_end}], None


def augment(trainer: RLTrainer, committed: pa.Table, step: int, salt: str, metrics: dict[str, float]) -> list[dict]:
    """The augmented groups (N rows each) of the committed groups in `committed`, with rewards,
    advantages over the N, masks for the configured stage, and recomputed logprobs for pairs."""
    c = trainer.config
    answer_format = FORMATS[c.octopus_answer]
    tokenizer = trainer.tokenizer
    eos = sorted(eos_token_ids(trainer.model, tokenizer))

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    separator_ids = encode(SEPARATOR)
    groups: dict[str, list[dict]] = {}
    for row in committed.to_pylist():
        groups.setdefault(row["group_id"], []).append(row)
    out: list[dict] = []
    counts = dict.fromkeys(("cc", "cw", "wc", "ww"), 0)
    padded = with_separator = originals_seen = 0
    for group_id in sorted(groups, key=trainer.group_order):
        originals = sorted(groups[group_id], key=lambda r: r["sample_idx"])
        problem = trainer.problem_by_id[originals[0]["problem_id"]]
        verify, gold = part_verifier(problem.get("answer_type")), str(problem["answer"])
        parts = [split_correction(r["completion"], answer_format) for r in originals]
        o1_ok = [verify(p.o1, gold) if p.o1 is not None else None for p in parts]
        o2_ok = [verify(p.o2, gold) if p.o2 is not None else None for p in parts]
        final_ok = [verify(answer_format.truncate(r["completion"]) or "", gold) for r in originals]
        # Seeds and the new group's key come from the originals' draw (not their id, which hashes
        # the run id); a group this process did not sample is keyed by its id.
        known = trainer.draw_of.get(group_id)
        salt_draw = known or (salt, group_id)
        rng = random.Random(derive_seed(c.seed, step, f"octopus/{salt_draw[0]}/{salt_draw[1]}"))
        chosen, padding = select_pairs(
            candidate_pairs(o1_ok, o2_ok), final_ok, c.augmented_size - len(originals), c.octopus_selection, rng
        )
        new_group = group_key(trainer.run_id, step, problem["id"], "recombined", salt, salt_draw[1])
        if known:
            trainer.draw_of[new_group] = known  # the augmented group sorts where its originals did
        members: list[dict] = []
        for i in [*range(len(originals)), *(k % len(originals) for k in range(padding))]:
            row, part = originals[i], parts[i]
            label = pair_label(o1_ok[i], o2_ok[i]) if o1_ok[i] is not None and o2_ok[i] is not None else None
            loss_spans = kl_spans = None
            if part.has_separator:
                at = row["completion"].find(SEPARATOR)
                o1_end = token_boundary(tokenizer, row["completion_ids"], at)
                sep_end = token_boundary(tokenizer, row["completion_ids"], at + len(SEPARATOR))
                loss_spans, kl_spans = stage_masks(c.octopus_stage, label, o1_end, sep_end, c.octopus_masks)
            members.append({
                **{k: row[k] for k in ("prompt", "prompt_ids", "completion", "completion_ids", "logprobs", "entropy",
                                       "finish_reason")},
                "pair_type": label, "source_ids": [row["id"]], "part_correct": [o1_ok[i], o2_ok[i]],
                "loss_mask_spans": loss_spans, "kl_mask_spans": kl_spans,
            })  # fmt: skip
        for i, j in chosen:
            label = pair_label(bool(o1_ok[i]), bool(o2_ok[j]))
            o1, o2 = parts[i].o1 or "", parts[j].o2 or ""
            last = originals[j]["completion_ids"][-1:] or [None]
            o1_ids = encode(o1)
            ids = o1_ids + separator_ids + encode(o2) + [last[0] if last[0] in eos else eos[0]]
            ids = ids[: c.max_completion_length]
            loss_spans, kl_spans = stage_masks(
                c.octopus_stage, label, len(o1_ids), len(o1_ids) + len(separator_ids), c.octopus_masks
            )
            members.append({
                "prompt": originals[i]["prompt"], "prompt_ids": originals[i]["prompt_ids"],
                "completion": o1 + SEPARATOR + o2, "completion_ids": ids, "logprobs": None, "entropy": None,
                "finish_reason": "stop", "pair_type": label,
                "source_ids": [originals[i]["id"], originals[j]["id"]], "part_correct": [o1_ok[i], o2_ok[j]],
                "loss_mask_spans": loss_spans, "kl_mask_spans": kl_spans,
            })  # fmt: skip
            counts[label] += 1
        for idx, member in enumerate(members):
            member.update(
                id=row_id("rollouts", (trainer.run_id, step, problem["id"], "recombined", new_group, idx)),
                run_id=trainer.run_id, problem_id=problem["id"], group_id=new_group, sample_idx=idx,
                stage="recombined", parent_rollout_id=None, policy_version=step,
            )  # fmt: skip
        out += members
        padded += padding
        originals_seen += len(originals)
        with_separator += sum(p.has_separator for p in parts)
    if not out:
        return out
    _score(trainer, out)
    _recompute_logprobs(trainer, [r for r in out if r["logprobs"] is None])
    for label, count in counts.items():
        metrics[f"octopus/pairs_{label}"] = metrics.get(f"octopus/pairs_{label}", 0.0) + count
    metrics["octopus/padding"] = metrics.get("octopus/padding", 0.0) + padded
    metrics["octopus/separator_frac"] = with_separator / max(1, originals_seen)
    for label in counts:
        rewards = [r["reward"] for r in out if r["pair_type"] == label and r["reward"] is not None]
        if rewards:
            metrics[f"octopus/reward_{label}"] = sum(rewards) / len(rewards)
    return out


def _score(trainer: RLTrainer, rows: list[dict]) -> None:
    """Rewards (the run's reward functions: r_sc by default) and advantages over each group of N."""
    result = trainer.score_texts(
        [r["prompt"] for r in rows], [r["completion"] for r in rows], [r["completion_ids"] for r in rows],
        [trainer.problem_by_id[r["problem_id"]] for r in rows],
    )  # fmt: skip
    advantages = trainer.group_advantages([r["group_id"] for r in rows], result.totals)
    for k, row in enumerate(rows):
        row["reward"], row["advantage"] = result.totals[k], advantages[k]
        row["rewards"] = {n: s[k] for n, s in result.components.items() if s[k] is not None}


def _recompute_logprobs(trainer: RLTrainer, rows: list[dict]) -> None:
    """π_old's logprobs of spliced sequences (no engine sampled them), without gradient."""
    if not rows:
        return
    c = trainer.config
    prompts, completions = [r["prompt_ids"] for r in rows], [r["completion_ids"] for r in rows]
    logprobs = trainer.updater.no_grad_logprobs(trainer.model, prompts, completions, c.forward_batch_size or 64)
    for k, row in enumerate(rows):
        row["logprobs"] = logprobs[k, : len(row["completion_ids"])].float().tolist()
