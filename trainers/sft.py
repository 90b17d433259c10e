"""Supervised fine-tuning on `sft_samples` with loss masks: only unmasked target tokens count.

Used for the warm-up before RL, and for BSAFE+ (the violation span is masked) and Octopus (the
first attempt is masked). `loss_mask_spans` are character spans of the target; they are mapped to
tokens with the tokenizer's offsets, so any fast tokenizer works, not only the character one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from reasonloop.trainers.config import SFTConfig
from reasonloop.trainers.logprobs import completion_logprobs


def encode_sample(tokenizer: Any, prompt: str, target: str, spans: Sequence[dict] | None) -> tuple[list, list, list]:
    """(prompt ids, target ids + eos, loss mask per target token)."""
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    enc = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
    masked = [(s["start"], s["end"]) for s in spans or []]
    keep = [not any(a < end and start < b for a, b in masked) for start, end in enc["offset_mapping"]]
    return prompt_ids, [*enc["input_ids"], tokenizer.eos_token_id], [*keep, True]


def warmup_cosine(warmup: int, total: int, floor: float = 0.1) -> Callable[[int], float]:
    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        progress = min(1.0, (i - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def run_sft(
    config: SFTConfig, *, model: Any, tokenizer: Any, samples: Sequence[dict], log: Callable[[dict], None] | None = None
) -> list[dict]:
    """Train on samples (dicts with prompt, target, loss_mask_spans); returns per-step metrics."""
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    if not samples:
        raise ValueError("no sft_samples to train on")
    encoded = [encode_sample(tokenizer, s["prompt"], s["target"], s.get("loss_mask_spans")) for s in samples]
    pad_id = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config.warmup_steps, config.steps))
    rng = random.Random(config.seed)
    history = []
    model.train()
    for step in range(1, config.steps + 1):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(config.batch_size)]
        scored = completion_logprobs(model, [b[0] for b in batch], [b[1] for b in batch], pad_id=pad_id)
        keep = torch.zeros_like(scored.mask)
        for row, (_, _, mask) in enumerate(batch):
            keep[row, : len(mask)] = torch.tensor(mask)
        keep = keep & scored.mask
        loss = -(scored.logprobs * keep).sum() / keep.sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm or float("inf"))
        optimizer.step()
        scheduler.step()
        record = {"step": step, "loss": loss.item(), "grad_norm": float(norm), "lr": scheduler.get_last_lr()[0]}
        history.append(record)
        if log:
            log(record)
    model.eval()
    return history
