"""Data parallelism under torchrun: ranks, the share of a step each one samples, and the few
collectives the trainer needs. One process (no torchrun) is the same code with every collective a
no-op, so `reasonloop train` runs unchanged under `torchrun --nproc_per_node N [--nnodes M]`.

How a data-parallel step stays the step one process would take with the same global batch:
- every rank picks the same prompts (seeded by step) and samples a contiguous share of them, each
  draw seeded by its global index (SamplingParams.seeds), so who samples a draw changes nothing;
- a group lives on one rank: its advantages, dynamic sampling's variance test and its lineage never
  cross ranks; which groups a dynamic-sampling step keeps is decided from all ranks' groups;
- the update's mini-batches are drawn over the global batch and every loss is normalized by the
  global mini-batch's token and sequence counts, so the sum of the ranks' gradients is the global
  gradient: it is all-reduced (SUM) in buckets before clipping and the optimizer step.
Gradients are reduced by hand rather than by wrapping the model in DistributedDataParallel: after
dynamic sampling the ranks' shares are uneven (a rank may keep no group), and DDP's reducer needs
every rank to run the same number of backward passes. The reduction is the same one DDP makes,
once per optimizer step (as DDP under `no_sync` for all but the last micro-batch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

BUCKET_ELEMENTS = 25 * 2**20 // 4  # DDP's default bucket: 25 MiB of fp32


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, device: str = "auto") -> Dist:
        """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK): joins the process group (gloo on
        CPU, nccl on CUDA; an already-initialized group is used as it is) and selects the rank's
        GPU; without torchrun, world size 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(local)  # "cuda" then means this rank's GPU (model.to, the engine)
        if not tdist.is_initialized():
            tdist.init_process_group(backend="nccl" if cuda else "gloo")
        return cls(rank, world, local)

    def close(self) -> None:
        """Leave the process group once every rank is done with it (a rank that tears it down
        while another still finishes its last collective can abort at exit: seen once as
        "terminate called without an active exception" after an FSDP run had finished)."""
        if self.active and tdist.is_initialized():
            tdist.barrier()
            tdist.destroy_process_group()

    # ------------------------------------------------------------------ sharing work
    def share(self, count: int) -> tuple[int, int]:
        """[lo, hi) of `count` items for this rank: contiguous, sizes differ by at most one."""
        base, extra = divmod(count, self.world)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (pickled; small things only)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def from_main(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def total(self, value: float) -> float:
        """Sum over ranks (float64, so counts stay exact)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        tdist.all_reduce(t)
        return float(t.item())

    def same_weights(self, model: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank (a LoRA adapter's random init, as DDP does)."""
        if not self.active:
            return
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                tdist.broadcast(tensor.data, src=0)

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce (SUM) the gradients of `params` in buckets; a missing gradient counts as zero
        (a rank with no rows in a mini-batch still takes part)."""
        if not self.active:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.Tensor] = []
        size = 0
        for p in params:
            bucket.append(p.grad)
            size += p.grad.numel()
            if size >= BUCKET_ELEMENTS:
                self._reduce(bucket)
                bucket, size = [], 0
        if bucket:
            self._reduce(bucket)

    @staticmethod
    def _reduce(grads: list[torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads])
        tdist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


SUMMED = ("sequences_generated", "rewards_none", "prompts_truncated", "prompts_skipped", "completion_tokens",
          "batch_rows", "generation_calls", "replay/rows", "fsdp/stand_in_micro_batches")  # fmt: skip


def merge_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from every rank's: counts summed, `*_max` maxed, `*_min` minned, the rest
    averaged weighted by the rank's batch rows (a rank that trained on nothing weighs nothing)."""
    if len(per_rank) == 1:
        return per_rank[0]
    rows = [m.get("batch_rows", 0.0) for m in per_rank]
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for m in per_rank for k in m):
        have = [(m[key], w) for m, w in zip(per_rank, rows, strict=True) if key in m]
        values = [v for v, _ in have]
        if key in SUMMED:
            out[key] = sum(values)
        elif key.endswith("_max") or key.startswith("time/") or key in ("step_time", "rollout_time"):
            out[key] = max(values)  # the slowest rank sets the step's time
        elif key.endswith("_min"):
            out[key] = min(values)
        else:
            weight = sum(w for _, w in have)
            out[key] = sum(v * w for v, w in have) / weight if weight else sum(values) / len(values)
    return out
