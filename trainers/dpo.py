"""DPO on the store's `preferences` table (definitions as TRL's DPOTrainer), with optional OGPSA.

    logits = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))     (sequence sums of token logprobs)
    sigmoid: L = −log σ(β · logits)          ipo: L = (logits − 1/(2β))²
    rewards/chosen = β (log π(c) − log π_ref(c)), rewards/rejected likewise, accuracy = chosen > rejected

The reference is the starting policy, and its log-probabilities are computed once for every pair
before the first step (TRL's `precompute_ref_log_probs`): no second model stays in memory; a
resumed run computes them from its initial weights again (`reference_model`). Each step's pairs
are drawn with a seed derived from (seed, step), so a resumed run trains on what an uninterrupted
one would have (OGPSA's directions are recomputed at the first resumed step, so with OGPSA a
resume is close to, not bit-equal to, a run without one). Pairs
are encoded as SFT samples are (tasks/prompts.py: chat template for pairs with a chat prompt), the
response's tokens and EOS scored; the loss is the mean over the step's pairs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from reasonloop.tasks.models.precision import pad_token_id
from reasonloop.trainers.config import DPOConfig
from reasonloop.trainers.sft import Encoded, encode_sample, kept_logprobs, optimizer_for, truncate
from reasonloop.trainers.step_utils import derive_seed, split_indices


def dpo_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
    beta: float, loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per-pair losses and implicit rewards. All inputs (B,) sequence log-probabilities; returns
    (loss (B,), chosen rewards (B,), rejected rewards (B,))."""
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    logits = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        loss = -F.logsigmoid(beta * logits)
    elif loss_type == "ipo":
        loss = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; valid: sigmoid, ipo")
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def reference_logprobs(
    model: Any, encoded: Sequence[tuple[Encoded, Encoded]], pad_id: int, compute_dtype: torch.dtype | None, batch: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(chosen, rejected) sequence log-probabilities of every pair under `model`, a batch at a time."""
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for lo in range(0, len(encoded), batch):
            rows = encoded[lo : lo + batch]
            logps = kept_logprobs(model, [c for c, _ in rows] + [r for _, r in rows], pad_id, compute_dtype)
            out += list(zip(logps[: len(rows)], logps[len(rows) :], strict=True))
    return out


def encode_pair(tokenizer: Any, pair: dict, chat_template: str, max_length: int) -> tuple[Encoded, Encoded]:
    def one(response: str) -> Encoded:
        sample = {"prompt": pair["prompt"], "messages": pair.get("messages"), "target": response}
        return truncate(encode_sample(tokenizer, sample, chat_template), max_length)

    return one(pair["chosen"]), one(pair["rejected"])


def run_dpo(
    config: DPOConfig, *, model: Any, tokenizer: Any, pairs: Sequence[dict], log: Callable[[dict], None] | None = None,
    compute_dtype: torch.dtype | None = None, reference_sets: Sequence[Sequence[dict]] = (),
    reference_model: Any = None, resume: Callable[[Any, Any], int] | None = None,
    save: Callable[[int, Any, Any], None] | None = None,
) -> list[dict]:  # fmt: skip
    """Train on preference pairs (dicts with prompt, chosen, rejected); per-step metrics with TRL's
    names (rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins).
    `reference_model`: the reference when it is not `model` as given (a resumed run's initial
    weights); `resume(optimizer, scheduler)` loads their states and returns the steps done;
    `save(step, optimizer, scheduler)` is called every `save_every` steps."""
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    if not pairs:
        raise ValueError("no preference pairs to train on")
    encoded = [encode_pair(tokenizer, p, config.chat_template, config.max_length) for p in pairs]
    pad_id = pad_token_id(tokenizer, model)
    model.eval()
    reference = reference_logprobs(reference_model or model, encoded, pad_id, compute_dtype, config.batch_size)
    trainable, optimizer, scheduler, ogpsa = optimizer_for(
        config, model, tokenizer, reference_sets, pad_id=pad_id, compute_dtype=compute_dtype
    )
    done = resume(optimizer, scheduler) if resume else 0
    history = []
    model.train()
    for step in range(done + 1, config.steps + 1):
        rng = random.Random(derive_seed(config.seed, step, "dpo"))
        batch = [rng.randrange(len(encoded)) for _ in range(config.batch_size)]
        optimizer.zero_grad(set_to_none=True)
        if ogpsa is not None:
            ogpsa.maybe_refresh(step, force=step == done + 1)
        totals = {"loss": 0.0, "chosen": 0.0, "rejected": 0.0, "accuracy": 0.0}
        for micro in split_indices(batch, config.grad_accum):
            rows = [encoded[i] for i in micro]
            logps = kept_logprobs(model, [c for c, _ in rows] + [r for _, r in rows], pad_id, compute_dtype)
            chosen, rejected = logps[: len(rows)], logps[len(rows) :]
            ref_c = torch.stack([reference[i][0] for i in micro]).to(logps.device)
            ref_r = torch.stack([reference[i][1] for i in micro]).to(logps.device)
            loss, reward_c, reward_r = dpo_loss(chosen, rejected, ref_c, ref_r, config.beta, config.loss_type)
            (loss.sum() / len(batch)).backward()
            totals["loss"] += loss.sum().item()
            totals["chosen"] += reward_c.sum().item()
            totals["rejected"] += reward_r.sum().item()
            totals["accuracy"] += (reward_c > reward_r).float().sum().item()
        removed = ogpsa.project_gradients() if ogpsa is not None else None
        norm = torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm or float("inf"))
        optimizer.step()
        scheduler.step()
        n = float(len(batch))
        record = {
            "step": step, "loss": totals["loss"] / n, "grad_norm": float(norm), "lr": scheduler.get_last_lr()[0],
            "rewards/chosen": totals["chosen"] / n, "rewards/rejected": totals["rejected"] / n,
            "rewards/accuracies": totals["accuracy"] / n, "rewards/margins": (totals["chosen"] - totals["rejected"]) / n,
        }  # fmt: skip
        if removed is not None:
            record["ogpsa_removed"] = removed
        history.append(record)
        if log:
            log(record)
        if save and config.save_every and step % config.save_every == 0 and step < config.steps:
            save(step, optimizer, scheduler)
    model.eval()
    return history
