"""OGPSA (SPECS §10): keep safety training's updates out of the directions the model's capabilities
depend on, by projecting each gradient off the task-loss gradients of small reference sets.

Every `every` optimizer steps the reference gradients g_k (the task loss — SFT's NLL — summed
over each capability set, one set per direction) are recomputed; per parameter tensor they are
made orthonormal (Gram–Schmidt; a direction whose remaining norm is below 1e-6 is dropped), and
each step's gradient, once accumulated and before clipping and the optimizer, becomes

    project:    g ← g − Σ_k (g·u_k) u_k
    threshold:  per direction, the projection is removed only when g conflicts with it
                (g·u_k < 0); otherwise g is scaled by `scale` (1: unchanged)

The released code projects in a backward hook per micro-batch; projecting the accumulated
gradient once is the same map in `project` mode (it is linear) and one call per step instead of
one per micro-batch. The subspace is block-diagonal: each tensor only sees its own slice of g_k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

MODES = ("project", "threshold")
MIN_NORM = 1e-6


def orthonormal_basis(vectors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Gram–Schmidt over flattened `vectors` (each shaped like one parameter tensor), in order;
    directions with remaining norm below 1e-6 are dropped. Returns unit vectors, shape (numel,)."""
    basis: list[torch.Tensor] = []
    for v in vectors:
        w = v.detach().flatten().double()
        for u in basis:
            w = w - (w @ u) * u
        norm = w.norm()
        if norm >= MIN_NORM:
            basis.append(w / norm)
    return basis


def project(
    grad: torch.Tensor, basis: Sequence[torch.Tensor], mode: str = "project", scale: float = 1.0
) -> torch.Tensor:
    """`grad` (any shape) with its components along the unit vectors of `basis` removed (mode
    `project`), or removed only where they conflict and scaled by `scale` otherwise (`threshold`)."""
    if mode not in MODES:
        raise ValueError(f"ogpsa mode must be one of {', '.join(MODES)}")
    g = grad.detach().flatten().double()
    for u in basis:
        dot = g @ u
        if mode == "project" or dot < 0:
            g = g - dot * u
        else:
            g = g * scale
    return g.to(grad.dtype).view_as(grad)


@dataclass
class OGPSA:
    """Projection of a model's gradients off its capability directions.

    `reference_backward`: one callable per capability set that backpropagates that set's task
    loss for the current weights (in chunks if it likes: gradients accumulate)."""

    params: list[tuple[str, torch.nn.Parameter]]
    reference_backward: list[Callable[[], None]]
    every: int = 30
    mode: str = "project"
    scale: float = 1.0
    bases: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    refreshes: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ogpsa mode must be one of {', '.join(MODES)}")
        if self.every < 1 or not self.reference_backward:
            raise ValueError("ogpsa needs every >= 1 and at least one reference set")

    def maybe_refresh(self, step: int, force: bool = False) -> bool:
        """Recompute the bases at step 1 and every `every` steps after, or when `force`d (a resumed
        run's first step). Call before the step's own backward: it uses and then clears `.grad`."""
        if (step - 1) % self.every and not force:
            return False
        per_set: list[dict[str, torch.Tensor]] = []
        for backward in self.reference_backward:
            for _, p in self.params:
                p.grad = None
            backward()
            per_set.append({n: p.grad.detach().clone() for n, p in self.params if p.grad is not None})
        for _, p in self.params:
            p.grad = None
        self.bases = {n: orthonormal_basis([g[n] for g in per_set if n in g]) for n, _ in self.params}
        self.refreshes += 1
        return True

    def project_gradients(self) -> float:
        """Project every parameter's accumulated gradient in place; returns the share of the
        gradient's squared norm removed (0: the update did not touch the capability directions)."""
        before = after = 0.0
        for name, p in self.params:
            basis = self.bases.get(name)
            if p.grad is None or not basis:
                continue
            before += float(p.grad.double().pow(2).sum())
            p.grad.copy_(project(p.grad, basis, self.mode, self.scale))
            after += float(p.grad.double().pow(2).sum())
        return 0.0 if before == 0 else max(0.0, 1.0 - after / before)


def ogpsa_for(model: Any, reference_backward: list[Callable[[], None]], **options: Any) -> OGPSA:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return OGPSA(params, reference_backward, **options)
