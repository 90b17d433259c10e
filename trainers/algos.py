"""Advantage estimators and policy losses: pure functions over tensors, registered by name.

Definitions (SPECS §1.4, chosen to compare with verl and TRL):
- `grpo` advantage: A_i = (r_i - mean_g r) / (std_g r + 1e-6), unbiased std within the group.
- `dr_grpo` advantage: A_i = r_i - mean_g r (Dr. GRPO, arXiv 2503.20783: no std division).
- Losses share one signature and the PPO clipped surrogate per token,
      l_t = -min(ρ_t A, clip(ρ_t, 1-ε_low, 1+ε_high) A),   ρ_t = exp(logp_t - old_logp_t),
  and differ in aggregation (and GSPO in the ratio):
  `grpo`    mean over a sequence's tokens, then over sequences (verl seq-mean-token-mean), ε 0.2/0.2
  `dr_grpo` per sequence token sum / L_max (a constant), then mean (seq-mean-token-sum-norm), ε 0.2/0.2
  `dapo`    sum over all tokens / their count (token-mean), clip-higher ε 0.2/0.28 (arXiv 2503.14476)
  `gspo`    sequence ratio s_i = exp(mean_t log ρ_i,t) with the token's gradient (GSPO-token),
            ε 3e-4/4e-4, mean over sequences
- Dual-clip (bound the loss of negative-advantage tokens at c·|A|, c=3) is optional and off by
  default; verl's vanilla loss applies it by default.
- KL: the k3 estimator exp(ref - logp) - (ref - logp) - 1 per token, weight β (0: no reference).
- Gradient accumulation changes memory, never the objective: every loss takes the mini-batch's
  totals (`batch_tokens`, `batch_seqs`; TRL's `num_items_in_batch`, verl's global token count) and
  divides its micro-batch's sum by them, so the micro-batches' gradients add up to the
  mini-batch's exactly. Without them a call normalizes by its own batch (one micro-batch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from reasonloop.tasks.registry import Registry

EPS = 1e-6
AdvantageFn = Callable[..., torch.Tensor]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")


def _group_stats(rewards: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row group mean, unbiased group std, and group size. rewards, groups: (N,)."""
    n_groups = int(groups.max()) + 1 if groups.numel() else 0
    size = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, groups, torch.ones_like(rewards))
    mean = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, groups, rewards) / size
    sq = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, groups, (rewards - mean[groups]) ** 2)
    std = torch.sqrt(sq / (size - 1).clamp(min=1))
    return mean[groups], std[groups], size[groups]


@ADVANTAGES.register("grpo")
def grpo_advantages(rewards: torch.Tensor, groups: torch.Tensor, *, scale_by_batch_std: bool = False) -> torch.Tensor:
    """A = (r - mean_g) / (std_g + 1e-6). rewards (N,), groups (N,) long ids 0..G-1 -> (N,).
    `scale_by_batch_std` divides (r - mean_g) by the batch std instead (REINFORCE++-style)."""
    mean, std, _ = _group_stats(rewards, groups)
    if scale_by_batch_std:
        return (rewards - mean) / (rewards.std() + EPS)
    return (rewards - mean) / (std + EPS)


@ADVANTAGES.register("dr_grpo")
def dr_grpo_advantages(
    rewards: torch.Tensor, groups: torch.Tensor, *, scale_by_batch_std: bool = False
) -> torch.Tensor:
    """A = r - mean_g (no std division: avoids up-weighting near-uniform groups). (N,) -> (N,)."""
    mean, _, _ = _group_stats(rewards, groups)
    centered = rewards - mean
    return centered / (rewards.std() + EPS) if scale_by_batch_std else centered


@dataclass(frozen=True)
class ClipRange:
    low: float
    high: float


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar
    clip_low_frac: float  # share of tokens whose ratio was clipped below (A < 0)
    clip_high_frac: float  # share clipped above (A > 0)
    ratio_mean: float
    ratio_max: float


LossFn = Callable[..., LossOutput]
POLICY_LOSSES: Registry[LossFn] = Registry("policy loss")
CLIP_DEFAULTS: dict[str, ClipRange] = {
    "grpo": ClipRange(0.2, 0.2),
    "dr_grpo": ClipRange(0.2, 0.2),
    "dapo": ClipRange(0.2, 0.28),
    "gspo": ClipRange(3e-4, 4e-4),
}


def _surrogate(
    ratio: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clip: ClipRange, dual_clip: float | None
) -> tuple[torch.Tensor, float, float]:
    """Per-token clipped loss (B, T) and the clipped fractions. ratio, mask: (B, T); adv: (B, 1)."""
    unclipped = -ratio * adv
    clipped = -ratio.clamp(1 - clip.low, 1 + clip.high) * adv
    loss = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -dual_clip * adv), loss)
    m = mask.float()
    count = m.sum().clamp(min=1)
    low = (((ratio < 1 - clip.low) & (adv < 0)).float() * m).sum() / count
    high = (((ratio > 1 + clip.high) & (adv > 0)).float() * m).sum() / count
    return loss, float(low), float(high)


def _output(loss: torch.Tensor, ratio: torch.Tensor, mask: torch.Tensor, low: float, high: float) -> LossOutput:
    r = ratio.detach()[mask]
    return LossOutput(loss, low, high, float(r.mean()) if r.numel() else 1.0, float(r.max()) if r.numel() else 1.0)


def _token_ratio(logp: torch.Tensor, old: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Clamp the log-ratio so a stale row cannot overflow exp(); masked positions are ratio 1.
    return torch.exp((logp - old).clamp(-20, 20)) * mask + (~mask).float()


def _weighted(per_token: torch.Tensor, is_weights: torch.Tensor | None) -> torch.Tensor:
    """Per-token importance weights (B, T), constants (no gradient), for rows sampled by another
    policy version: the loss of each token is scaled by min(π_old / π_sampler, cap)."""
    return per_token if is_weights is None else per_token * is_weights.detach()


def _tokens(batch_tokens: float | None, mask: torch.Tensor) -> torch.Tensor | float:
    return batch_tokens if batch_tokens is not None else mask.sum().clamp(min=1)


def _seqs(batch_seqs: float | None, mask: torch.Tensor) -> float:
    return batch_seqs if batch_seqs is not None else max(1, mask.shape[0])


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    return POLICY_LOSSES.register(name)


@register_loss("grpo")
def grpo_loss(
    logp, old_logp, adv, mask, *, clip: ClipRange, dual_clip=None, max_len=None, is_weights=None, batch_tokens=None,
    batch_seqs=None,
) -> LossOutput:  # fmt: skip
    """Sequence-mean of token-mean. logp, old_logp, mask: (B, T); adv: (B,)."""
    ratio = _token_ratio(logp, old_logp, mask)
    per_token, low, high = _surrogate(ratio, adv[:, None], mask, clip, dual_clip)
    per_token = _weighted(per_token, is_weights)
    lengths = mask.sum(-1).clamp(min=1)
    loss = ((per_token * mask).sum(-1) / lengths).sum() / _seqs(batch_seqs, mask)
    return _output(loss, ratio, mask, low, high)


@register_loss("dr_grpo")
def dr_grpo_loss(
    logp, old_logp, adv, mask, *, clip: ClipRange, dual_clip=None, max_len=None, is_weights=None, batch_tokens=None,
    batch_seqs=None,
) -> LossOutput:  # fmt: skip
    """Sequence-mean of token-sum / L_max (a constant: no length bias). `max_len` is L_max."""
    if not max_len:
        raise ValueError("dr_grpo needs max_len (the max completion length)")
    ratio = _token_ratio(logp, old_logp, mask)
    per_token, low, high = _surrogate(ratio, adv[:, None], mask, clip, dual_clip)
    per_token = _weighted(per_token, is_weights)
    loss = ((per_token * mask).sum(-1) / max_len).sum() / _seqs(batch_seqs, mask)
    return _output(loss, ratio, mask, low, high)


@register_loss("dapo")
def dapo_loss(
    logp, old_logp, adv, mask, *, clip: ClipRange, dual_clip=None, max_len=None, is_weights=None, batch_tokens=None,
    batch_seqs=None,
) -> LossOutput:  # fmt: skip
    """Token-mean over the whole batch (every token weighs the same, long answers included)."""
    ratio = _token_ratio(logp, old_logp, mask)
    per_token, low, high = _surrogate(ratio, adv[:, None], mask, clip, dual_clip)
    per_token = _weighted(per_token, is_weights)
    loss = (per_token * mask).sum() / _tokens(batch_tokens, mask)
    return _output(loss, ratio, mask, low, high)


@register_loss("gspo")
def gspo_loss(
    logp, old_logp, adv, mask, *, clip: ClipRange, dual_clip=None, max_len=None, is_weights=None, batch_tokens=None,
    batch_seqs=None,
) -> LossOutput:  # fmt: skip
    """GSPO-token: s_i = exp(mean_t log ρ_i,t) per sequence, used with a stop-gradient times the
    token ratio exp(logp - sg(logp)) so each token carries its gradient; clipped on s_i."""
    log_ratio = (logp - old_logp) * mask
    lengths = mask.sum(-1).clamp(min=1)
    seq_log_ratio = (log_ratio.sum(-1) / lengths).clamp(-20, 20)  # (B,)
    token_ratio = torch.exp(seq_log_ratio.detach()[:, None] + logp - logp.detach())  # value s_i, grad of logp
    token_ratio = token_ratio * mask + (~mask).float()
    per_token, low, high = _surrogate(token_ratio, adv[:, None], mask, clip, dual_clip)
    per_token = _weighted(per_token, is_weights)
    loss = ((per_token * mask).sum(-1) / lengths).sum() / _seqs(batch_seqs, mask)
    return _output(loss, token_ratio, mask, low, high)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π || π_ref): exp(ref - logp) - (ref - logp) - 1 >= 0. (B, T)."""
    diff = (ref_logp - logp).clamp(-20, 20)
    return torch.exp(diff) - diff - 1
