"""Log-probabilities of given completions under a model: the trainer's side of the engine contract.

    logprobs[b, t] = log_softmax(logits / temperature)[completion[b, t]]

computed in one batched forward pass, with the same left-padded prompt layout as generation and
position ids from the attention mask, so recomputed values match the engine's sampling logprobs.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass
class ScoredBatch:
    logprobs: torch.Tensor  # (B, T) float32, 0 where mask is 0
    entropies: torch.Tensor  # (B, T) float32, entropy of the tempered distribution
    mask: torch.Tensor  # (B, T) bool, True on real completion tokens


def pack(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Layout [pad.. prompt | completion ..pad]: prompts left-padded to P, completions right-padded
    to T. Returns input_ids (B, P+T), attention_mask (B, P+T), completion mask (B, T), and P."""
    batch = len(prompts)
    p_len = max(len(p) for p in prompts)
    t_len = max(1, max(len(c) for c in completions))
    ids = torch.full((batch, p_len + t_len), pad_id, dtype=torch.long)
    attn = torch.zeros((batch, p_len + t_len), dtype=torch.long)
    for b, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        ids[b, p_len - len(prompt) : p_len] = torch.tensor(prompt, dtype=torch.long)
        attn[b, p_len - len(prompt) : p_len] = 1
        if completion:
            ids[b, p_len : p_len + len(completion)] = torch.tensor(completion, dtype=torch.long)
            attn[b, p_len : p_len + len(completion)] = 1
    comp_mask = attn[:, p_len:].bool()
    return ids.to(device), attn.to(device), comp_mask.to(device), p_len


@lru_cache(maxsize=32)
def _forward_params(model_cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_cls.forward).parameters)


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in _forward_params(type(model))


def completion_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    pad_id: int,
    temperature: float = 1.0,
) -> ScoredBatch:
    """Logprobs and entropies of each completion token given its prompt (gradients flow if enabled)."""
    device = next(model.parameters()).device
    ids, attn, mask, p_len = pack(prompts, completions, pad_id, device)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    t_len = ids.shape[1] - p_len
    if _accepts_logits_to_keep(model):  # the LM head only where completion tokens are predicted
        logits = model(input_ids=ids, attention_mask=attn, position_ids=positions, logits_to_keep=t_len + 1).logits
        logits = logits[:, :-1, :].float()  # (B, T, V)
    else:
        logits = model(input_ids=ids, attention_mask=attn, position_ids=positions).logits  # (B, P+T, V)
        logits = logits[:, p_len - 1 : -1, :].float()  # position i predicts token i+1: (B, T, V)
    if temperature > 0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = ids[:, p_len:]
    logprobs = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropies = -(logp_all.exp() * logp_all).sum(-1)
    zero = torch.zeros_like(logprobs)
    return ScoredBatch(torch.where(mask, logprobs, zero), torch.where(mask, entropies, zero), mask)
