"""Dr. SCI's dynamic difficulty curriculum (SPECS §6), read from the store — no extra generation.

Problems are bucketed by their recorded pass rate (the curation flow's annotation):

    D_discard  pass_rate >= 1            (solved: never trained; curation usually dropped them)
    D_pending  pass_rate <= pending_max  (too hard for now), easiest (highest pass rate) first
    D_train    everything else, and problems with no recorded pass rate

The active set is the first |D_train| problems of D_train + D_pending (in that order) that are not
retired; a problem is retired once this run's stored rollouts of it number at least `min_samples`
and their mean `metric` reward exceeds `retire_at`. So when a D_train problem is retired, the
easiest pending problem slides in. The set is a function of the store alone (rollouts with
policy_version < step), so a resumed run computes the same set as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DynamicCurriculum:
    def __init__(
        self, problems: Sequence[dict], reader: Any, run_id: str, *, metric: str, pending_max: float = 0.625,
        retire_at: float = 0.9, min_samples: int = 8,
    ) -> None:  # fmt: skip
        def rate(p: dict) -> float | None:
            return p.get("pass_rate")

        self.train = [p for p in problems if rate(p) is None or pending_max < rate(p) < 1.0]
        self.pending = sorted((p for p in problems if rate(p) is not None and rate(p) <= pending_max),
                              key=lambda p: (-rate(p), p["id"]))  # fmt: skip
        if not self.train and not self.pending:
            raise ValueError("dynamic curriculum: every problem is solved (pass_rate 1): nothing to train on")
        self.order = self.train + self.pending
        self.size = len(self.train) or len(self.pending)
        self.reader, self.run_id, self.metric = reader, run_id, metric
        self.retire_at, self.min_samples = retire_at, min_samples
        self.pending_ids = {p["id"] for p in self.pending}
        self.stats: dict[str, float] = {}
        self.chosen: tuple[int, list[dict]] = (-1, [])  # (step, its active set): refill rounds ask again

    def active(self, step: int) -> list[dict]:
        from reasonloop.storage.samplers import problem_accuracy  # the store is the data path

        if self.chosen[0] == step:
            return self.chosen[1]
        acc = problem_accuracy(self.reader, self.run_id, self.metric, before=step)

        def retired(p: dict) -> bool:
            n, a = acc.get(p["id"], (0, 0.0))
            return n >= self.min_samples and a > self.retire_at

        live = [p for p in self.order if not retired(p)]
        chosen = live[: self.size] or self.order[-self.size :]  # everything retired: keep the hardest
        self.stats = {
            "curriculum/active": float(len(chosen)), "curriculum/retired": float(len(self.order) - len(live)),
            "curriculum/from_pending": float(sum(p["id"] in self.pending_ids for p in chosen)),
            "curriculum/pending_left": float(sum(p["id"] in self.pending_ids for p in live[self.size :])),
        }  # fmt: skip
        self.chosen = (step, chosen)
        return chosen
