"""A rollout worker: a separate process that samples for an async training run through the store.

Loop: find the run's newest registered checkpoint (the trainer publishes one every M steps, written
to a temp folder and renamed, registered only after the rename, so a worker never loads a
half-written one) -> load its weights and its TrainConfig -> sample `prompts_per_step` groups of
`group_size`, score them, compute group advantages, commit them tagged with that checkpoint's step
as `policy_version` -> repeat until it has committed `rounds_per_version` steps' worth of usable
groups for this version (with DAPO's dynamic sampling, only groups whose rewards differ count; at
most `rounds_per_version * (1 + max_refill_rounds)` rounds) — backpressure, so a worker does not
run far ahead of the trainer. With a staleness bound k >= 1 its first version gets one extra
step's worth, which keeps it one step ahead: it samples version v while the trainer trains on v - 1. It stops when the published version reaches the
run's final step. Each worker writes only its own files (the worker id is in every group's salt).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reasonloop.storage import ReplayStore
from reasonloop.trainers.checkpoint import load_meta
from reasonloop.trainers.config import TrainConfig


@dataclass
class WorkerStats:
    versions_loaded: int = 0
    rounds: int = 0
    groups: int = 0
    last_version: int = -1
    top_ups: int = 0  # rounds beyond the quota because the trainer stalled


def newest_published(store: ReplayStore, run_id: str) -> tuple[int, Path] | None:
    """The run's newest registered weights (full or weights-only) whose folder is not deleted."""
    rows = store.query(
        "SELECT step, path FROM checkpoints WHERE run_id = $r AND kind <> 'deleted' AND path NOT IN "
        "(SELECT path FROM checkpoints WHERE run_id = $r AND kind = 'deleted') ORDER BY step DESC, kind LIMIT 1",
        {"r": run_id},
    ).to_pylist()
    return (rows[0]["step"], Path(rows[0]["path"])) if rows else None


def count_useful(rows: list[dict], dynamic_sampling: bool) -> int:
    """Groups the trainer can use: all of them, or with DAPO's dynamic sampling only those whose
    rewards differ (the others stay in the store, unused)."""
    by_group: dict[str, set] = {}
    for row in rows:
        scored = by_group.setdefault(row["group_id"], set())
        if row["reward"] is not None:
            scored.add(row["reward"])
    return sum(1 for rewards in by_group.values() if not dynamic_sampling or len(rewards) > 1)


def run_worker(
    store: ReplayStore, run_id: str, worker_id: str, *, rounds_per_version: int = 1, poll_s: float = 0.2,
    wait_timeout_s: float = 300.0, on_round: Callable[[WorkerStats], None] | None = None,
    engine: dict[str, Any] | None = None,
) -> WorkerStats:  # fmt: skip
    """Sample for `run_id` until its final version is published (or nothing new for `wait_timeout_s`).
    `engine`: this worker's engine settings (TrainConfig's engine fields), over the run's."""
    from reasonloop.tasks.models.loading import dtype_source, load_causal_lm, load_tokenizer
    from reasonloop.tasks.models.precision import resolve_dtype
    from reasonloop.trainers.sampler import GroupSampler
    from reasonloop.trainers.step_utils import resolve_device

    stats = WorkerStats()
    sampler: Any = None
    produced = 0  # rounds at the loaded version (in the rows' salt: a restarted worker repeats, not duplicates)
    owed = rounds_left = 0  # usable groups still owed to the trainer, and the rounds allowed for them
    idle_since = loaded_at = time.monotonic()
    interval = 0.0
    top_ups_at_load = 0
    loaded: Path | None = None
    while True:
        newest = newest_published(store, run_id)
        # Newer weights, or other weights at any version (a resumed trainer withdrew its killed
        # predecessor's newer ones and published its own).
        if newest is not None and newest[1] != loaded:
            version, path = newest
            try:
                # The run's settings, with this worker's own engine (a server per worker, say).
                config = replace(TrainConfig(**load_meta(path).config), **(engine or {}))
                if version >= config.steps:
                    return stats  # the run is finished
                model = None
                if config.engine != "openai":  # a server holds its own copy: it loads `path` itself
                    # Inference only: the weights in the compute dtype, no fp32 masters.
                    device = resolve_device(config.device)
                    dtype = resolve_dtype(config.dtype, dtype_source(path), device)
                    model = load_causal_lm(path, dtype=dtype).to(device)
            except OSError:  # deleted while we read it (superseded): take the next newest
                time.sleep(poll_s)
                continue
            loaded = path
            if sampler is None:
                if config.engine == "openai" and not config.engine_model:
                    config = replace(config, engine_model=str(path))
                sampler = GroupSampler(
                    config, model=model, tokenizer=load_tokenizer(path), store=store, run_id=run_id,
                    producer=f"rollout-worker:{worker_id}",
                )  # fmt: skip
            if config.engine == "openai":
                if getattr(sampler.engine, "syncs_weights", False):
                    sampler.engine.load_weights(path, version)  # before sampling anything tagged `version`
            elif sampler.model is not model:
                if hasattr(sampler.engine, "update_weights"):  # vLLM in this worker
                    sampler.engine.update_weights(model.state_dict())
                else:
                    sampler.model.load_state_dict(model.state_dict())
            # Owed: a step's worth per trainer step since the last version seen (versions can be
            # skipped), and with k >= 1 one more at the start, which keeps this worker a step ahead:
            # it samples version v while the trainer trains on v - 1. Capped at what k lets the
            # trainer use.
            steps = (
                max(1, version - stats.last_version) if stats.last_version >= 0 else 1 + min(1, config.max_staleness)
            )
            per_step = rounds_per_version * config.prompts_per_step
            owed = min(owed + steps * per_step, (config.max_staleness + 1) * per_step)
            rounds_left = min(rounds_left + steps * rounds_per_version * (1 + config.max_refill_rounds),
                              (config.max_staleness + 1) * rounds_per_version * (1 + config.max_refill_rounds))  # fmt: skip
            stats.last_version, stats.versions_loaded, produced = version, stats.versions_loaded + 1, 0
            now = time.monotonic()
            # How long the trainer takes per published version, from versions that needed no top-up:
            # a stalled version's time is the stall's, and counting it would lengthen the next wait
            # before topping up (3x the interval), which lengthens the next stall, and so on.
            if stats.versions_loaded > 1 and stats.top_ups == top_ups_at_load:
                interval = 0.7 * interval + 0.3 * (now - loaded_at) if interval else now - loaded_at
            loaded_at = idle_since = now
            top_ups_at_load = stats.top_ups
        quota_met = sampler is not None and (owed <= 0 or rounds_left <= 0)
        waited = time.monotonic() - idle_since
        if (quota_met or sampler is None) and waited > wait_timeout_s:
            raise TimeoutError(f"worker {worker_id}: no new version of {run_id!r} for {wait_timeout_s:.0f} s")
        # Quota met but no new version for 3x the usual interval: the trainer is probably short of
        # eligible groups (e.g. resumed, or groups went stale), so top up by one round, then wait again.
        stalled = quota_met and waited >= max(5.0, 3 * interval)
        if sampler is None or (quota_met and not stalled):
            time.sleep(poll_s)
            continue
        if stalled:
            stats.top_ups += 1
            idle_since = time.monotonic()
        c = sampler.config
        stage = f"worker/{worker_id}/{produced}"
        problems = sampler.pick_problems(stats.last_version + 1, stage, c.prompts_per_step)
        rows = sampler.commit_groups(
            problems, c.group_size, stats.last_version, "single", salt=f"{worker_id}/{produced}"
        ).rows
        produced += 1
        owed -= count_useful(rows, c.uses_dynamic_sampling)
        rounds_left -= 1
        stats.rounds += 1
        stats.groups += len(problems)
        if on_round:
            on_round(stats)
