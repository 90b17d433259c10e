"""The trainer in async mode: rollouts come from worker processes through the store.

    workers (trainers/rollout_worker.py)           trainer (this file)
    load newest published weights (version v)      wait for enough eligible groups in the store
    sample + score groups, commit them         ->  eligible: policy_version >= step - k, complete,
      tagged policy_version = v                    used < R times, reward variance > 0 (DAPO)
                                                   train with truncated IS weights, then every M
                                               <-  steps publish weights only (a registered
                                                   `weights` checkpoint: model, config, tokenizer)

A full checkpoint (optimizer, RNG, usage counts) is written every `save_every` steps and at the end.
Which groups trained, and how often, is trainer state saved inside every full checkpoint
(atomically with the weights): a resumed trainer forgets what it consumed after its last full
checkpoint — those updates were lost with the process — so those rows train again, once; the
`consumed` table tells the killed attempt's rows from the ones that trained the final weights
(storage/lineage.py). Groups that are not eligible stay in the store.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from reasonloop.trainers.checkpoint import WEIGHTS_PREFIX, prune
from reasonloop.trainers.group_index import GroupIndex
from reasonloop.trainers.rl import RLTrainer


class StaleRowError(AssertionError):
    """A consumed row broke the staleness bound (a bug, never a data condition)."""


class AsyncRLTrainer(RLTrainer):
    def __init__(self, *args: Any, poll_s: float = 0.2, **kwargs: Any) -> None:
        if kwargs.get("engine") is None:  # workers sample, each with its own --engine; this process never does
            from reasonloop.tasks.engines.transformers_engine import TransformersEngine

            kwargs["engine"] = TransformersEngine(
                kwargs["model"], kwargs["tokenizer"], dtype=kwargs.get("compute_dtype")
            )
        super().__init__(*args, **kwargs)
        self.poll_s = poll_s
        self.stale_seen: set[str] = set()  # unused groups already counted as skipped for staleness
        self.withdrawn_seen: set[str] = set()  # groups sampled with weights a resume withdrew, counted as skipped
        self.resumed_from = 0  # the step this process started at
        self.index: GroupIndex | None = None

    # ------------------------------------------------------------------ state
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            **super().checkpoint_state(),
            "stale_seen": sorted(self.stale_seen),
            "withdrawn": sorted(self.withdrawn_seen),
        }

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        super().load_checkpoint_state(state)
        self.stale_seen = set(state.get("stale_seen", []))
        self.withdrawn_seen = set(state.get("withdrawn", []))

    def before_training(self) -> None:
        """Publish the version the workers start from (0, or the resumed step). A resumed trainer
        first withdraws weights its killed predecessor published after that step: they are not
        ancestors of what it trains now, so workers must not sample with them."""
        self.resumed_from = self.step
        for path in sorted(self.output_dir.glob(f"{WEIGHTS_PREFIX}*")):
            if int(path.name.rsplit("-", 1)[1]) > self.step:
                shutil.rmtree(path, ignore_errors=True)
                self.register(int(path.name.rsplit("-", 1)[1]), path, "deleted", None)
        self.publish()

    def after_step(self, saved: bool) -> None:
        if self.step % max(1, self.config.publish_every) == 0 and not saved:
            self.publish()  # a full checkpoint just written serves the workers as well

    def publish(self) -> None:
        """Weights only, atomically (temp folder + rename, then registered): workers load the
        newest; older weights folders beyond the last two are deleted (marked in the registry)."""
        self.save(weights_only=True)
        for old in prune(self.output_dir, WEIGHTS_PREFIX, 2):
            self.register(int(old.name.rsplit("-", 1)[1]), old, "deleted", None)

    # ------------------------------------------------------------------ the buffer
    def buffer_groups(self) -> list[dict]:
        """One row per group of this run: version, size, whether its rewards differ (read from the
        files committed since the last poll, see trainers/group_index.py)."""
        if self.index is None:
            self.index = GroupIndex(self.store, self.run_id)
        self.index.refresh()
        return [
            {
                "group_id": g,
                "version": info.version,
                "n": info.size,
                "spread": float(info.spread),
                "before_start": info.before_start,
            }
            for g, info in self.index.groups.items()
        ]

    def read_groups(self, group_ids: list[str]) -> pa.Table:
        """The rows of these groups, from the files the index saw them in (no listing, no scan);
        a file compacted away since falls back to one query."""
        files = sorted({f for g in group_ids for f in self.index.groups[g].files})
        try:
            rows = self.store.read_files("rollouts", files)
        except FileNotFoundError:
            rows = self.store.query(
                "SELECT * FROM rollouts WHERE run_id = $run AND list_contains($groups, group_id)",
                {"run": self.run_id, "groups": group_ids},
            )
        keep = pc.and_(pc.is_in(rows.column("group_id"), pa.array(group_ids)), pc.equal(rows.column("stage"), "single"))
        rows = rows.filter(keep)
        return rows.take(pc.sort_indices(rows, [("group_id", "ascending"), ("sample_idx", "ascending")]))

    def collect_batch(self, step: int, metrics: dict[str, float]) -> pa.Table:
        c = self.config
        low = max(0, step - c.max_staleness)
        need = c.prompts_per_step
        start, polls = time.perf_counter(), 0
        first_short: int | None = None
        while True:
            with self.timed("store_read"):
                groups = self.buffer_groups()
            # Complete groups sampled by an ancestor of these weights: not from a version ahead of
            # them, nor from weights a killed predecessor published after the resume point. (Left
            # open: a worker that still holds withdrawn weights may commit one more round after
            # this process started, tagged with a version it has not reached; telling those apart
            # would need the weights' identity on every row, not only their version.)
            done = [g for g in groups if g["n"] >= c.group_size]
            withdrawn = [g for g in done if g["before_start"] and g["version"] > self.resumed_from]
            complete = [
                g for g in done if g["version"] <= step and not (g["before_start"] and g["version"] > self.resumed_from)
            ]
            fresh = [g for g in complete if g["version"] >= low and self.usage.get(g["group_id"], 0) < c.max_uses]
            spread = [g for g in fresh if g["spread"] > 0] if c.uses_dynamic_sampling else fresh
            if first_short is None:
                first_short = max(0, need - len(spread))
            if len(spread) >= need:
                break
            if time.perf_counter() - start > c.wait_timeout_s:
                raise TimeoutError(
                    f"step {step + 1}: {len(spread)} of {need} eligible groups after {c.wait_timeout_s:.0f} s "
                    f"(policy_version >= {low}); are rollout workers running for run {self.run_id!r}?"
                )
            polls += 1
            time.sleep(self.poll_s)
        # Least used first, then the oldest still within the bound (first in, first out: the
        # freshest would leave older groups to go stale); the group id makes the choice reproducible.
        chosen = sorted(spread, key=lambda g: (self.usage.get(g["group_id"], 0), g["version"], g["group_id"]))[:need]
        stale = [g for g in complete if g["version"] < low and g["group_id"] not in self.usage]
        new_stale = [g for g in stale if g["group_id"] not in self.stale_seen]
        self.stale_seen.update(g["group_id"] for g in new_stale)
        new_withdrawn = [g for g in withdrawn if g["group_id"] not in self.withdrawn_seen]
        self.withdrawn_seen.update(g["group_id"] for g in new_withdrawn)
        with self.timed("store_read"):
            batch = self.read_groups([g["group_id"] for g in chosen])
        self.files_since_compaction = self.store.delta_file_count("rollouts", f"run_id={self.run_id}")
        versions = batch.column("policy_version").to_pylist()
        if min(versions) < low:  # the bound, asserted on every consumed row
            raise StaleRowError(f"step {step + 1}: consumed policy_version {min(versions)} < {low}")
        self._count_uses(batch)
        uses = [self.usage[g["group_id"]] for g in chosen]
        metrics.update({
            "async/staleness_mean": step - sum(versions) / len(versions), "async/staleness_max": float(step - min(versions)),
            "async/min_version": float(min(versions)),
            "async/wait_s": time.perf_counter() - start, "async/polls": float(polls),
            "async/rows_waited_for": float((first_short or 0) * c.group_size),
            "async/rows_skipped_stale": float(sum(g["n"] for g in new_stale)),
            "async/rows_skipped_withdrawn": float(sum(g["n"] for g in new_withdrawn)),
            "async/groups_zero_variance_left": float(len(fresh) - len(spread)),
            "async/reuse_mean": sum(uses) / len(uses), "async/reused_groups": float(sum(u > 1 for u in uses)),
            "sequences_generated": 0.0,
        })  # fmt: skip
        return batch
