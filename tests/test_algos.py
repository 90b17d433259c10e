"""Advantages and losses on hand-computed cases, and loop versions against the vectorized ones."""

from __future__ import annotations

import math

import pytest
import torch

from reasonloop.trainers.algos import ADVANTAGES, CLIP_DEFAULTS, POLICY_LOSSES, ClipRange, kl_k3

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0], dtype=torch.float64)
GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])


def test_grpo_advantage_by_hand() -> None:
    adv = ADVANTAGES.get("grpo")(REWARDS, GROUPS)
    std0 = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # unbiased
    assert adv[0].item() == pytest.approx((2 / 3) / (std0 + 1e-6))
    assert adv[1].item() == pytest.approx((-1 / 3) / (std0 + 1e-6))
    std1 = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # group 1: 1, 2, 2 (mean 5/3)
    assert adv[3].item() == pytest.approx((-2 / 3) / (std1 + 1e-6))


def test_dr_grpo_advantage_is_mean_centred_only() -> None:
    adv = ADVANTAGES.get("dr_grpo")(REWARDS, GROUPS)
    assert adv.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, -2 / 3, 1 / 3, 1 / 3])


def test_zero_variance_group_has_zero_advantage() -> None:
    adv = ADVANTAGES.get("grpo")(torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64), torch.tensor([0, 0, 1, 1]))
    assert adv.abs().max().item() == 0.0


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid policy losss: dapo, dr_grpo, grpo, gspo"):
        POLICY_LOSSES.get("ppo")
    with pytest.raises(ValueError, match="valid advantage estimators: dr_grpo, grpo"):
        ADVANTAGES.get("gae")


def test_clip_defaults_are_per_loss() -> None:
    assert CLIP_DEFAULTS["dapo"] == ClipRange(0.2, 0.28)
    assert CLIP_DEFAULTS["gspo"].high / CLIP_DEFAULTS["dapo"].high < 1e-2


def loop_loss(name, logp, old, adv, mask, clip, dual_clip=None, max_len=None) -> float:
    """Reference implementation: plain Python loops over sequences and tokens."""
    per_seq, all_tokens = [], []
    for b in range(logp.shape[0]):
        tokens = [t for t in range(logp.shape[1]) if mask[b, t]]
        if name == "gspo":
            s = math.exp(sum(logp[b, t] - old[b, t] for t in tokens) / len(tokens))
            ratios = [s] * len(tokens)
        else:
            ratios = [math.exp(logp[b, t] - old[b, t]) for t in tokens]
        losses = []
        for r in ratios:
            a = adv[b].item()
            value = max(-r * a, -min(max(r, 1 - clip.low), 1 + clip.high) * a)
            if dual_clip is not None and a < 0:
                value = min(value, -dual_clip * a)
            losses.append(value)
        all_tokens += losses
        per_seq.append(sum(losses) / (max_len if name == "dr_grpo" else len(losses)))
    return sum(all_tokens) / len(all_tokens) if name == "dapo" else sum(per_seq) / len(per_seq)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "dapo", "gspo"])
@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_vectorized_losses_match_loops(name: str, dual_clip: float | None) -> None:
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(5, 7, generator=g, dtype=torch.float64) * 2
    old = logp + (torch.rand(5, 7, generator=g, dtype=torch.float64) - 0.5) * (0.002 if name == "gspo" else 0.8)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 2:] = False
    adv = torch.tensor([1.5, -0.5, 0.0, -2.0, 0.7], dtype=torch.float64)
    clip = CLIP_DEFAULTS[name]
    out = POLICY_LOSSES.get(name)(logp, old, adv, mask, clip=clip, dual_clip=dual_clip, max_len=7)
    expected = loop_loss(name, logp, old, adv, mask, clip, dual_clip, max_len=7)
    assert out.loss.item() == pytest.approx(expected, rel=1e-9)
    assert 0 <= out.clip_low_frac <= 1 and 0 <= out.clip_high_frac <= 1


def test_clipping_by_hand() -> None:
    """One token, A=+1: ratio 1.5 clips at 1.28 under dapo (clip-higher), at 1.2 under grpo."""
    logp, old = torch.tensor([[math.log(1.5)]]), torch.tensor([[0.0]])
    adv, mask = torch.tensor([1.0]), torch.tensor([[True]])
    dapo = POLICY_LOSSES.get("dapo")(logp, old, adv, mask, clip=CLIP_DEFAULTS["dapo"])
    grpo = POLICY_LOSSES.get("grpo")(logp, old, adv, mask, clip=CLIP_DEFAULTS["grpo"])
    assert dapo.loss.item() == pytest.approx(-1.28) and grpo.loss.item() == pytest.approx(-1.2)
    assert dapo.clip_high_frac == 1.0 and dapo.clip_low_frac == 0.0
    # A=-1 and ratio 5: the plain surrogate loss is 5; dual-clip with c=3 bounds it at 3.
    logp5 = torch.tensor([[math.log(5.0)]])
    plain = POLICY_LOSSES.get("grpo")(logp5, old, -adv, mask, clip=CLIP_DEFAULTS["grpo"])
    dual = POLICY_LOSSES.get("grpo")(logp5, old, -adv, mask, clip=CLIP_DEFAULTS["grpo"], dual_clip=3.0)
    assert plain.loss.item() == pytest.approx(5.0) and dual.loss.item() == pytest.approx(3.0)


def test_loss_gradient_pushes_logprobs_with_the_advantage() -> None:
    logp = torch.zeros(2, 3, requires_grad=True)
    out = POLICY_LOSSES.get("grpo")(
        logp,
        torch.zeros(2, 3),
        torch.tensor([1.0, -1.0]),
        torch.ones(2, 3, dtype=torch.bool),
        clip=CLIP_DEFAULTS["grpo"],
    )
    out.loss.backward()
    assert (logp.grad[0] < 0).all() and (logp.grad[1] > 0).all()  # descent raises row 0, lowers row 1


def test_dr_grpo_needs_max_len_and_k3_kl_is_nonnegative() -> None:
    with pytest.raises(ValueError, match="max_len"):
        POLICY_LOSSES.get("dr_grpo")(
            torch.zeros(1, 1),
            torch.zeros(1, 1),
            torch.ones(1),
            torch.ones(1, 1, dtype=torch.bool),
            clip=CLIP_DEFAULTS["dr_grpo"],
        )
    logp = -torch.rand(4, 5)
    assert kl_k3(logp, logp).abs().max().item() == 0.0
    assert (kl_k3(logp, logp - torch.rand(4, 5)) >= 0).all()
