"""Evaluate-and-promote decisions: which checkpoint is served, and whether a candidate replaces it.

A candidate is promoted only if it beats the incumbent on the same held-out problems by more than
the evaluation's noise (the paired standard error of the difference, trainers.evaluate). Every
decision, either branch, is a row of `promotions`. Pure functions of the store; no Prefect here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from reasonloop.schemas import row_id
from reasonloop.storage import ReplayStore
from reasonloop.trainers.evaluate import Gain, paired_gain


@dataclass(frozen=True)
class Incumbent:
    checkpoint_id: str | None  # None: the base model (nothing promoted yet)
    path: str
    generation: int  # promotions so far


@dataclass(frozen=True)
class Decision:
    promoted: bool
    gain: Gain
    reason: str


def checkpoint_id(run_id: str, step: int, path: str, kind: str = "full") -> str:
    """The `checkpoints` row id of a registered checkpoint."""
    return row_id("checkpoints", (run_id, step, kind, path))


def current_incumbent(store: ReplayStore, base_model: str) -> Incumbent:
    rows = store.query(
        "SELECT candidate_checkpoint_id, candidate_path, generation FROM promotions "
        "WHERE decision = 'promoted' ORDER BY generation DESC LIMIT 1"
    ).to_pylist()
    if not rows:
        return Incumbent(None, base_model, 0)
    r = rows[0]
    return Incumbent(r["candidate_checkpoint_id"], r["candidate_path"], r["generation"])


def decide(candidate: dict, incumbent: dict) -> Decision:
    """Promote iff the candidate's accuracy gain is positive and larger than its standard error."""
    gain = paired_gain(candidate, incumbent)
    if gain.delta > 0 and gain.beyond_noise:
        return Decision(True, gain, f"gain {100 * gain.delta:+.1f} points > its standard error {100 * gain.stderr:.1f}")
    return Decision(
        False, gain, f"gain {100 * gain.delta:+.1f} points is not above its standard error {100 * gain.stderr:.1f}"
    )


def record_decision(
    store: ReplayStore, *, run_id: str, candidate_id: str, candidate_path: str, incumbent: Incumbent,
    decision: Decision, candidate_eval: dict, incumbent_eval: dict, watermark: dict[str, Any], report: str,
) -> int:  # fmt: skip
    """Write the decision row; returns the generation now served (incumbent's, +1 if promoted)."""
    generation = incumbent.generation + int(decision.promoted)
    scores = {
        "candidate_accuracy": candidate_eval["accuracy"], "incumbent_accuracy": incumbent_eval["accuracy"],
        "delta": decision.gain.delta, "stderr": decision.gain.stderr, "n": float(candidate_eval["n"]),
    }  # fmt: skip
    store.write("promotions", [{
        "candidate_checkpoint_id": candidate_id, "candidate_path": candidate_path,
        "incumbent_checkpoint_id": incumbent.checkpoint_id, "incumbent_path": incumbent.path,
        "decision": "promoted" if decision.promoted else "rejected", "generation": generation,
        "scores": scores, "watermark": json.dumps(watermark), "report": report,
    }], run_id=run_id, producer="evaluate-and-promote")  # fmt: skip
    return generation
