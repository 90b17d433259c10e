"""The policy update of one RL step: μ iterations over the batch, mini-batches (an optimizer step
each), micro-batches (gradient accumulation), a registered loss, an optional k3 KL term.

π_old, as TRL does it:
- μ = 1: the ratio is against the trainer's own forward, detached — exactly 1 before the update,
  so the clip is never hit by numerics (the engine's bf16 logprobs differ from the training
  forward's by up to ~1e-2 per token);
- μ > 1: recomputed once per generation, without gradient, in the same micro-batches as the first
  iteration's (the trainer's layout);
- the engine's sampling logprobs give the truncated importance weight min(π_old / π_sampler, cap)
  per token (`is_cap`), which corrects what the training-inference gap, a replayed row's age or an
  async worker's older weights leave, and the mismatch metrics users of vLLM watch:
  `mismatch/logprob_abs_diff_mean|max`.
Gradient accumulation is exact: every micro-batch's loss is normalized by its mini-batch's token
and sequence counts (trainers/algos.py), so `grad_accum` changes memory only.
Token spans: a row's `loss_mask_spans` are left out of the policy loss and of those counts;
its `kl_mask_spans` get a k3 KL to the reference, weighted `span_kl_coef` (Octopus: o1).
`guidance` (RLBF's α·L_SFT, trainers/sft.SFTGuidance) adds its gradient to every optimizer step's
before the reduction and the clip; under data parallelism each rank adds 1/world of its batch's.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import pyarrow as pa
import torch

from reasonloop.tasks.models.precision import compute_in
from reasonloop.trainers.algos import ClipRange, LossFn, kl_k3
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.distributed import Dist
from reasonloop.trainers.logprobs import activation_checkpointing, batched_logprobs, completion_logprobs
from reasonloop.trainers.sharding import Sharding
from reasonloop.trainers.step_utils import derive_seed, pad, spans_of, split_indices


def train_mode_matters(model: Any) -> bool:
    """Whether train mode computes anything eval mode does not: dropout (modules, or the config's
    `*dropout` / `*pdrop` rates that attention applies functionally), gradient checkpointing, or a
    router's jitter noise."""
    config = getattr(model, "config", None)
    rates = [v for k, v in vars(config).items() if "dropout" in k or "pdrop" in k or "jitter" in k] if config else []
    if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in rates):
        return True
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        return True
    return activation_checkpointing(model)


class MiniBatch(NamedTuple):
    rows: list[int]  # this rank's rows of the mini-batch (indices into its batch)
    tokens: float  # completion tokens of the whole mini-batch, every rank's rows
    seqs: float  # sequences of the whole mini-batch
    rounds: int  # micro-batches of the rank that has the most (FSDP: every rank runs this many)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0  # a rank with no rows reports 0 (weight 0 when merged)


class PolicyUpdate:
    def __init__(
        self, config: TrainConfig, *, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, loss_fn: LossFn,
        clip: ClipRange, pad_id: int, compute_dtype: torch.dtype | None,
        reference: Callable[[], contextlib.AbstractContextManager[Any]] | None, dist: Dist | None = None,
        group_order: Callable[[str], tuple] | None = None, sharding: Sharding | None = None,
        guidance: Callable[..., float] | None = None, images: Callable[[list, list[str]], list] | None = None,
    ) -> None:  # fmt: skip
        """`reference`: a context manager factory yielding the reference model (β > 0), or None.
        `dist`: data parallelism (trainers/distributed.py); gradients are summed over ranks.
        `group_order`: a run-independent sort key for a group id (GroupSampler.group_order).
        `sharding`: FSDP2 (trainers/sharding.py); then FSDP reduces the gradients, not `dist`."""
        self.dist = dist or Dist()
        self.sharding = sharding or Sharding(False)
        self.group_order = group_order or (lambda group_id: (group_id,))
        self.c, self.model, self.optimizer, self.scheduler = config, model, optimizer, scheduler
        self.loss_fn, self.clip, self.pad_id = loss_fn, clip, pad_id
        self.dtype, self.reference = compute_dtype, reference
        self.guidance = guidance
        self.images = images  # (prompt ids, problem ids) -> the ids with their images (a vision-language run)
        self.row_weights: list[float] = []  # mean importance weight per batch row (lineage)
        # Train and eval mode differ only by dropout, gradient checkpointing, router noise; without
        # them (the usual RL setting: TRL disables dropout) the model is left in the mode it is in,
        # which saves two switches a step (~3 ms each on a small model: transformers walks every module).
        self.switch_modes = train_mode_matters(model)

    def plan(self, batch: pa.Table, step: int) -> list[list[MiniBatch]] | None:
        """Per iteration, its mini-batches: a seeded shuffle of the global batch (every rank's rows,
        ordered by problem, stage, draw and sample, which depends neither on who sampled what nor on
        the run id), split into `mini_batches`;
        each with this rank's rows in it and the global token and sequence counts its loss is
        normalized by. None when no rank has a row."""
        c = self.c
        names = [k for k in ("problem_id", "stage", "group_id", "sample_idx") if k in batch.column_names]
        lengths = [len(x) for x in batch.column("completion_ids").to_pylist()]
        left_out = spans_of(batch, "loss_mask_spans", max(lengths, default=1))
        if left_out is not None:  # the loss's tokens: a masked token is in no normalizer
            lengths = [n - int(left_out[k, :n].sum()) for k, n in enumerate(lengths)]
        keys = zip(*(batch.column(k).to_pylist() for k in names), strict=True) if names else [()] * len(lengths)
        if "group_id" in names:  # the group's draw, not its id (which hashes the run id)
            at = names.index("group_id")
            keys = [(*key[:at], self.group_order(key[at]), *key[at + 1 :]) for key in keys]
        mine = [(key, k, length) for k, (key, length) in enumerate(zip(keys, lengths, strict=True))]
        rows = sorted((*row, rank) for rank, part in enumerate(self.dist.gather(mine)) for row in part)
        if not rows:
            return None
        rng = random.Random(derive_seed(c.seed, step, "shuffle"))
        plan = []
        for _ in range(c.num_iterations):
            order = list(range(len(rows)))
            rng.shuffle(order)
            plan.append([
                MiniBatch(
                    rows=[rows[g][1] for g in mb if rows[g][3] == self.dist.rank],
                    tokens=float(max(1, sum(rows[g][2] for g in mb))), seqs=float(len(mb)),
                    rounds=max(len(split_indices([g for g in mb if rows[g][3] == r], c.grad_accum))
                               for r in range(self.dist.world)),
                )
                for mb in split_indices(order, c.mini_batches)
            ])  # fmt: skip
        return plan

    def micro_batches(self, mb: MiniBatch) -> list[list[int] | None]:
        """This rank's micro-batches of `mb`; sharded, padded with None (a zero-weight stand-in) to
        the most any rank has, so every rank makes the same FSDP collectives."""
        micros: list[list[int] | None] = list(split_indices(mb.rows, self.c.grad_accum))
        return micros + [None] * (mb.rounds - len(micros)) if self.sharding.enabled else micros

    def stand_in(self) -> None:
        """A forward and backward that adds nothing to any gradient (a one-token row, weight 0)."""
        scored = self.forward(self.model, [[self.pad_id]], [[self.pad_id]], grad=True)
        (scored.logprobs.sum() * 0.0).backward()

    def forward(self, model: Any, prompts: list, completions: list, *, grad: bool) -> Any:
        with compute_in(model, self.dtype), contextlib.nullcontext() if grad else torch.no_grad():
            return completion_logprobs(
                model, prompts, completions, pad_id=self.pad_id, temperature=self.c.temperature,
                share_prompts=not self.sharding.enabled,  # sharded: one decoder call per micro-batch on every rank
            )  # fmt: skip

    def no_grad_logprobs(self, model: Any, prompts: list, completions: list, micro: int) -> torch.Tensor:
        with compute_in(model, self.dtype):
            return batched_logprobs(
                model, prompts, completions, pad_id=self.pad_id, temperature=self.c.temperature, micro_batch=micro
            ).logprobs

    def __call__(self, batch: pa.Table, step: int, metrics: dict[str, float]) -> float:
        """Update on `batch` (rows of `rollouts` with advantages; under torchrun this rank's share of
        the step's batch); returns the mean mini-batch loss."""
        c = self.c
        n = batch.num_rows
        self.row_weights = []
        plan = self.plan(batch, step)
        if plan is None:
            metrics.update(grad_norm=0.0, clip_ratio_low=0.0, clip_ratio_high=0.0)
            return 0.0
        prompts = batch.column("prompt_ids").to_pylist()
        if self.images is not None:
            prompts = self.images(prompts, batch.column("problem_id").to_pylist())
        completions = batch.column("completion_ids").to_pylist()
        lengths = [len(x) for x in completions]
        device = next(self.model.parameters()).device
        advantages = torch.tensor(batch.column("advantage").to_pylist(), dtype=torch.float32, device=device)
        sampler = pad(batch.column("logprobs").to_pylist(), max(lengths, default=1)).to(device)  # (B, T)
        # Token spans the policy loss leaves out, and spans a KL term covers (Octopus: o1 and the separator; o1)
        left_out = spans_of(batch, "loss_mask_spans", sampler.shape[1])
        kl_spans = spans_of(batch, "kl_mask_spans", sampler.shape[1]) if c.span_kl_coef > 0 else None
        left_out, kl_spans = (m.to(device) if m is not None else None for m in (left_out, kl_spans))
        layout = [micro for mb in plan[0] for micro in split_indices(mb.rows, c.grad_accum)]
        forward_rows = c.forward_batch_size or max((len(m) for m in layout), default=1)
        old = None
        if c.num_iterations > 1:  # π_old once per generation, in the first iteration's micro-batches
            old = torch.zeros_like(sampler)
            with self.sharding.gathered(self.model):
                for micro in layout:
                    part = self.no_grad_logprobs(
                        self.model, [prompts[i] for i in micro], [completions[i] for i in micro], len(micro)
                    )
                    old[micro, : part.shape[1]] = part
        ref = None
        if self.reference is not None:
            with self.reference() as ref_model:  # entered on every rank (sharded: it gathers the weights)
                ref = self.no_grad_logprobs(ref_model, prompts, completions, forward_rows) if n else None
        weights = torch.zeros(n)
        losses, lows, highs, norms, kls, entropies, diffs, diff_max = [], [], [], [], [], [], [], 0.0
        span_kls: list[float] = []
        sft_losses: list[float] = []
        ratio_sum, ratio_min, ratio_max, truncated, tokens_seen = 0.0, float("inf"), 0.0, 0.0, 0.0
        if self.switch_modes:
            self.model.train()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        reduce_s = 0.0  # in the gradient all-reduce (data parallel; 0 in one process)
        stand_ins = 0  # zero-weight micro-batches (FSDP: this rank had fewer than another)
        for iteration, mini_batches in enumerate(plan):
            for mb in mini_batches:
                batch_tokens, batch_seqs = mb.tokens, mb.seqs  # of the global mini-batch (exact accumulation)
                self.optimizer.zero_grad(set_to_none=True)
                mb_loss = 0.0
                for micro in self.micro_batches(mb):
                    if micro is None:
                        self.stand_in()
                        stand_ins += 1
                        continue
                    scored = self.forward(
                        self.model, [prompts[i] for i in micro], [completions[i] for i in micro], grad=True
                    )
                    t, mask = scored.logprobs.shape[1], scored.mask
                    whole = mask  # every real completion token (the span KL term's domain)
                    if left_out is not None:
                        mask = mask & ~left_out[micro, :t]
                    old_m = scored.logprobs.detach() if old is None else old[micro, :t]
                    ratio = torch.exp((old_m - sampler[micro, :t]).clamp(-20, 20))
                    is_w = torch.where(mask, ratio.clamp(max=c.is_cap), torch.zeros_like(ratio))
                    out = self.loss_fn(
                        scored.logprobs, old_m, advantages[micro], mask, clip=self.clip, dual_clip=c.dual_clip or None,
                        max_len=c.max_completion_length, is_weights=is_w, batch_tokens=batch_tokens, batch_seqs=batch_seqs,
                    )  # fmt: skip
                    loss = out.loss
                    k3 = kl_k3(scored.logprobs, ref[micro, :t]) if ref is not None else None
                    if k3 is not None and c.beta > 0:
                        kl = (k3 * mask).sum() / batch_tokens
                        loss = loss + c.beta * kl
                        kls.append(kl.item() * batch_tokens / max(1.0, float(mask.sum())))
                    if k3 is not None and kl_spans is not None:
                        covered = kl_spans[micro, :t] & whole
                        span_kl = (k3 * covered).sum() / batch_tokens
                        loss = loss + c.span_kl_coef * span_kl
                        span_kls.append(span_kl.item() * batch_tokens / max(1.0, float(covered.sum())))
                    loss.backward()
                    mb_loss += loss.item()
                    lows.append(out.clip_low_frac)
                    highs.append(out.clip_high_frac)
                    on = mask.sum().clamp(min=1)
                    entropies.append(((scored.entropies * mask).sum() / on).item())
                    if iteration == 0:  # the gap between engine and trainer, and the weights it gave
                        gap = (old_m - sampler[micro, :t]).abs()[mask]
                        diffs.append(gap.sum().item())
                        diff_max = max(diff_max, gap.max().item() if gap.numel() else 0.0)
                        live = ratio[mask]
                        ratio_sum, tokens_seen = ratio_sum + live.sum().item(), tokens_seen + live.numel()
                        ratio_min = min(ratio_min, live.min().item() if live.numel() else 1.0)
                        ratio_max = max(ratio_max, live.max().item() if live.numel() else 1.0)
                        truncated += (live > c.is_cap).float().sum().item()
                        weights[micro] = (is_w.sum(-1) / mask.sum(-1).clamp(min=1)).detach().float().cpu()
                losses.append(self.dist.total(mb_loss))  # normalized by global counts: the ranks' parts add up
                if self.guidance is not None:
                    sft_losses.append(self.guidance(self.model, 1.0 / self.dist.world))
                reduce_start = time.perf_counter()
                (self.sharding if self.sharding.enabled else self.dist).sum_gradients(trainable)
                reduce_s += time.perf_counter() - reduce_start
                params = [p for p in trainable if p.grad is not None]
                norm = torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm if c.max_grad_norm > 0 else float("inf"))
                norms.append(self.sharding.grad_norm(norm))
                self.optimizer.step()
                self.scheduler.step()
        if self.switch_modes:
            self.model.eval()
        seen = max(1.0, tokens_seen)
        metrics.update(
            grad_norm=sum(norms) / len(norms), clip_ratio_low=mean(lows), clip_ratio_high=mean(highs),
            train_entropy=mean(entropies),
            **{"mismatch/logprob_abs_diff_mean": sum(diffs) / seen, "mismatch/logprob_abs_diff_max": diff_max,
               "is_ratio_mean": ratio_sum / seen, "is_ratio_min": ratio_min if tokens_seen else 1.0,
               "is_ratio_max": ratio_max, "is_truncated_frac": truncated / seen},
        )  # fmt: skip
        if self.sharding.enabled:
            metrics["fsdp/stand_in_micro_batches"] = float(stand_ins)
        elif self.dist.active:
            metrics["time/grad_allreduce"] = reduce_s
        if kls:
            metrics["kl"] = sum(kls) / len(kls)
        if span_kls:
            metrics["span_kl"] = sum(span_kls) / len(span_kls)
        if sft_losses:
            metrics["sft_loss"] = mean(sft_losses)
        self.row_weights = weights.tolist()
        return sum(losses) / len(losses)
