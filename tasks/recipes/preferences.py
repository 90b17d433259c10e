"""Preference pairs for DPO (`preferences` rows), three ways:

- `from_groups`: per stored rollout group, its best- vs worst-rewarded completion (ties: no pair);
- `from_critic`: per group, its best-rewarded safe completion vs its worst-rewarded unsafe one,
  as a critic judges the shown text (tasks/rewards/safety.py);
- `from_violations`: per safe response of the `safety` recipe, itself vs the same response with a
  templated violation injected (no signal): a critic-labelled pair without any sampling.

Pure functions over rows; the `safety` flow writes what they return.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from reasonloop.tasks.recipes.safety import parse_context, random_violation

SOURCE = "preferences"


def _groups(rows: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("reward") is not None:
            out.setdefault(row["group_id"], []).append(row)
    return out


def _shown(row: dict) -> str:
    return row.get("final_completion") or row["completion"]


def _pair(chosen: dict, rejected: dict, reason: str, source: str) -> dict:
    return {
        "prompt": chosen["prompt"], "chosen": _shown(chosen), "rejected": _shown(rejected),
        "problem_id": chosen.get("problem_id"), "reason": reason, "chosen_score": chosen["reward"],
        "rejected_score": rejected["reward"], "source_ids": [chosen["id"], rejected["id"]], "source": source,
    }  # fmt: skip


def from_groups(rows: Sequence[dict], source: str = SOURCE) -> list[dict]:
    """Rollout rows (id, group_id, prompt, completion, final_completion, reward) -> best vs worst."""
    pairs = []
    for group in _groups(rows).values():
        ranked = sorted(group, key=lambda r: (r["reward"], r["id"]))
        if ranked[-1]["reward"] > ranked[0]["reward"] and _shown(ranked[-1]) != _shown(ranked[0]):
            pairs.append(_pair(ranked[-1], ranked[0], "reward", source))
    return pairs


def from_critic(rows: Sequence[dict], critic: Any, source: str = SOURCE) -> list[dict]:
    """Per group: the best-rewarded safe completion vs the worst-rewarded unsafe one."""
    pairs = []
    for group in _groups(rows).values():
        verdicts = critic([r["prompt"] for r in group], [_shown(r) for r in group])
        safe = [r for r, v in zip(group, verdicts, strict=True) if v is None]
        unsafe = [r for r, v in zip(group, verdicts, strict=True) if v is not None]
        if safe and unsafe:
            best = max(safe, key=lambda r: (r["reward"], r["id"]))
            worst = min(unsafe, key=lambda r: (r["reward"], r["id"]))
            pairs.append(_pair(best, worst, "critic", source))
    return pairs


def from_violations(samples: Sequence[dict], seed: int = 0, source: str = SOURCE) -> list[dict]:
    """Safe sft samples (prompt, target, id?, split?) of the safety recipe -> (safe, unsafe) pairs."""
    rng = random.Random(seed)
    pairs = []
    for sample in samples:
        context = parse_context(sample["prompt"])
        if context is None:
            continue
        safe = sample["target"]
        cut, violation, _ = random_violation(rng, context, safe)
        unsafe = safe[:cut] + violation + safe[cut:]
        pairs.append({
            "prompt": sample["prompt"], "chosen": safe, "rejected": unsafe, "problem_id": sample.get("problem_id"),
            "reason": "critic", "chosen_score": 1.0, "rejected_score": 0.0, "split": sample.get("split", "train"),
            "source_ids": [sample["id"]] if sample.get("id") else None, "source": source,
        })  # fmt: skip
    return pairs
