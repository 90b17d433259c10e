"""FSDP2 for `reasonloop train --fsdp` under torchrun: parameters, gradients and optimizer state
sharded over the ranks with torch's `fully_shard`, instead of replicated as in trainers/distributed.py.

Groups (what one all-gather brings in): each decoder layer, and the root group — the model, i.e.
the embedding, final norm and LM head (tied in small models). The trainer calls the decoder and
the LM head itself (the head chunk by chunk, trainers/logprobs.py), not the model's forward, so
the decoder call is registered as a forward method of the root (`DECODER_FORWARD`, read by
`split_lm`): FSDP's root hooks run around it. The root group is not resharded after forward, so
the head's weights are still there when the trainer calls it after the decoder returns.

Collectives must line up across ranks, and a data-parallel RL step gives the ranks uneven work
(dynamic sampling keeps unequal groups per rank; generation stops at different lengths), so:
- sampling, π_old and the reference model's forwards run inside `gathered`: every group is
  all-gathered once (equal on every rank), forwards then run with no collective, and the weights
  are resharded after. Peak memory there is one full copy of the weights, as when TRL or verl
  gather an FSDP policy for their rollout engine;
- the update's micro-batches run sharded (per-layer all-gather, reduce-scatter of gradients in
  backward), and a rank with fewer micro-batches than another runs zero-weight ones
  (`PolicyUpdate`), so every rank makes the same collectives in the same order;
- prompt sharing (two decoder calls per forward on some rows) is off in the sharded forward, so
  every micro-batch is one decoder call on every rank.
Checkpoints hold the full state (`full_states`): loadable by `from_pretrained` as any other, and
resumable with or without FSDP.

Not supported here (a clear error): LoRA, rollout engines other than the policy itself (vLLM and
servers would need the gathered weights published every step), one process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from reasonloop.trainers.logprobs import DECODER_FORWARD, split_lm


class Sharding:
    """FSDP2 over this torchrun job's ranks when `enabled`; otherwise every method is a no-op."""

    def __init__(self, enabled: bool, world: int = 1) -> None:
        self.enabled, self.world = enabled, world
        self.roots: set[int] = set()  # ids of the modules of root groups (kept unsharded after forward)

    def check(self, config: Any, model: Any) -> None:
        """A clear error for what `--fsdp` does not run."""
        if not self.enabled:
            return
        from reasonloop.trainers.policy import is_peft

        if self.world < 2:
            raise ValueError(
                "--fsdp shards over torchrun's processes: run it under torchrun --nproc_per_node N (N >= 2)"
            )
        if is_peft(model):
            raise ValueError(
                "--fsdp with LoRA is not supported (the adapter is small: train it replicated, without --fsdp)"
            )
        if config.engine != "transformers":
            raise ValueError("--fsdp samples with the policy itself: use --engine transformers")

    def shard(self, model: torch.nn.Module) -> None:
        """`fully_shard` each decoder layer, then the model (embedding, final norm, LM head) as the
        root group, with the decoder call registered as one of its forward methods."""
        if not self.enabled:
            return
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        parts = split_lm(model)
        layers = getattr(parts[0], "layers", None) if parts else None
        if parts is None or layers is None:
            raise ValueError(
                f"--fsdp needs a decoder-only transformers model with `layers`; {type(model).__name__} has none"
            )
        for layer in layers:
            fully_shard(layer)
        fully_shard(model, reshard_after_forward=False)
        setattr(model, DECODER_FORWARD, parts[0].__call__)
        register_fsdp_forward_method(model, DECODER_FORWARD)
        self.roots.add(id(model))

    def modules(self, model: torch.nn.Module) -> list[Any]:
        from torch.distributed.fsdp import FSDPModule

        return [m for m in model.modules() if isinstance(m, FSDPModule)] if self.enabled else []

    @contextlib.contextmanager
    def gathered(self, model: torch.nn.Module) -> Iterator[None]:
        """Every weight of `model` whole on every rank for the block (one all-gather per group, the
        same on every rank); forwards inside make no collective. Resharded after."""
        groups = self.modules(model)
        for module in groups:
            module.unshard()
            module.set_reshard_after_forward(False, recurse=False)
        try:
            yield
        finally:
            for module in groups:
                module.reshard()
                module.set_reshard_after_forward(id(module) not in self.roots, recurse=False)

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """FSDP reduce-scattered the gradients in backward as a mean over ranks; the losses are
        normalized by global counts, so the step's gradient is their sum (as trainers/distributed.py
        all-reduces with SUM). Scaled here: gloo has no pre-multiplied sum for
        `set_gradient_divide_factor(1)`; exact for a power-of-two world."""
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(self.world)

    def grad_norm(self, norm: torch.Tensor) -> float:
        """The global gradient norm `clip_grad_norm_` returned (a DTensor under FSDP)."""
        full = getattr(norm, "full_tensor", None)
        return float(full() if full is not None else norm)

    # ------------------------------------------------------------------ checkpoints
    def full_states(self, model: torch.nn.Module, optimizer: Any) -> tuple[dict | None, dict | None]:
        """The full model and optimizer state dicts (optimizer keyed by parameter name) on rank 0,
        None elsewhere; (None, None) when not sharded (the caller saves the model as it is).
        A collective: every rank calls it."""
        if not self.enabled:
            return None, None
        import torch.distributed as tdist
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(model, options=options)
        states = get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None
        if tdist.get_rank() != 0:
            return None, None
        # A tied weight once, under its first name (as `save_pretrained` writes an unsharded model:
        # the gathered copies no longer share storage, so it would write both).
        names = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
        return {k: v for k, v in weights.items() if k in names}, states

    def load_optimizer(self, model: torch.nn.Module, optimizer: Any, state: dict) -> None:
        """An optimizer state saved sharded (keyed by name) or plain (keyed by index), into this
        optimizer, sharded or not."""
        by_name = bool(state.get("state")) and isinstance(next(iter(state["state"])), str)
        if not self.enabled and not by_name:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        if not by_name:
            state = keyed_by_name(model, state)
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def keyed_by_name(model: torch.nn.Module, state: dict) -> dict:
    """A plain `optimizer.state_dict()` (parameters by index, in the order the trainer built the
    optimizer: the trainable parameters in `named_parameters` order) keyed by parameter name."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    groups = [{**group, "params": [names[i] for i in group["params"]]} for group in state["param_groups"]]
    return {"state": {names[i]: s for i, s in state["state"].items()}, "param_groups": groups}
