"""A weighted sum of reward functions that keeps every component (stored per rollout)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reasonloop.tasks.rewards.registry import RewardFn, get_reward


@dataclass
class RewardResult:
    totals: list[float | None]  # weighted sum; None if any weighted component is None
    components: dict[str, list[float | None]] = field(default_factory=dict)


class CompositeReward:
    """total = Σ weight_i · reward_i. Components are names from the registry or (name, callable)
    pairs, so TRL reward functions can be mixed in unchanged. A component object with a `details`
    dict (per-item lists, set by its last call: the transfer reward's τ and prefix length) adds
    them as components `name/key`, stored with the rest and never summed."""

    def __init__(self, weights: Mapping[str, float], functions: Mapping[str, RewardFn] | None = None) -> None:
        if not weights:
            raise ValueError("a composite reward needs at least one component")
        self.weights = dict(weights)
        given = dict(functions or {})
        self.functions = {name: given.get(name) or get_reward(name) for name in self.weights}

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **columns: Any,
    ) -> RewardResult:
        result = RewardResult(totals=[0.0] * len(completions))
        for name, fn in self.functions.items():
            scores = list(
                fn(prompts=list(prompts), completions=list(completions), completion_ids=completion_ids, **columns)
            )
            if len(scores) != len(completions):
                raise ValueError(f"reward {name!r} returned {len(scores)} scores for {len(completions)} completions")
            scores = [None if s is None or not math.isfinite(s) else float(s) for s in scores]
            result.components[name] = scores
            for key, values in getattr(fn, "details", {}).items():
                result.components[f"{name}/{key}"] = list(values)
            weight = self.weights[name]
            result.totals = [
                None if t is None or (s is None and weight != 0) else t + weight * (s or 0.0)
                for t, s in zip(result.totals, scores, strict=True)
            ]
        return result

    def drain_metrics(self) -> dict[str, float]:
        """Counters of components that keep them (a rubric judge's calls, cache hits, retries) since
        the last drain, summed over components."""
        out: dict[str, float] = {}
        for fn in {id(f): f for f in self.functions.values()}.values():
            for key, value in getattr(fn, "drain_metrics", dict)().items():
                out[key] = out.get(key, 0.0) + value
        return out
