"""The RL trainer: every step goes through the replay store (sampling and committing groups is
trainers/sampler.py, which this class extends with the update, checkpoints and the loop).

    pick problems -> generate groups -> rewards, group advantages -> COMMIT rollouts
    -> READ the batch back from the files just committed -> update the policy -> metrics row

Departures from the GRPO paper, on purpose:
- β = 0 by default (no reference model), as DAPO and Dr. GRPO argue; `beta` turns the k3 KL on.
- Advantages are computed per group before the commit and stored on each rollout, so the store
  holds exactly what was trained on; the update reads them back from the store.
- π_old is the trainer's own detached forward at μ = 1 (ratio exactly 1 before the update) and is
  recomputed once per generation at μ > 1; the engine's logprobs give a truncated importance
  weight per token (trainers/update.py), which also corrects replayed and async rows.
- A batch in which every group has zero reward variance is a normal step: loss 0, counted.
Each step's randomness derives from (seed, step, stage), so a resumed run repeats the steps it
missed exactly; this module imports no storage or Prefect (the store is passed in).
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import torch

from reasonloop.tasks.engines.base import Engine
from reasonloop.tasks.models.precision import pad_token_id
from reasonloop.tasks.rewards import CompositeReward
from reasonloop.trainers.algos import CLIP_DEFAULTS, POLICY_LOSSES, ClipRange
from reasonloop.trainers.checkpoint import FULL_PREFIX, CheckpointMeta, load_meta, load_states, prune, save_checkpoint
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.distributed import Dist, merge_metrics
from reasonloop.trainers.policy import reference_policy
from reasonloop.trainers.sampler import GroupSampler
from reasonloop.trainers.self_verify import with_verification
from reasonloop.trainers.sft import sft_guidance
from reasonloop.trainers.sharding import Sharding
from reasonloop.trainers.step_utils import (
    adamw,
    batch_metrics,
    derive_seed,
    group_count,
    lr_lambda,
    zero_std_share,
)
from reasonloop.trainers.update import PolicyUpdate

if TYPE_CHECKING:
    from reasonloop.storage import ReplayStore


# Algorithms with a round of their own: a module with `train_round` and the `TRAINED_STAGES` of its rows.
ROUNDS = {"igrpo": "reasonloop.trainers.igrpo", "octopus": "reasonloop.trainers.octopus"}


class RLTrainer(GroupSampler):
    def __init__(
        self,
        config: TrainConfig,
        *,
        model: Any,
        tokenizer: Any,
        store: ReplayStore,
        run_id: str,
        output_dir: Path,
        engine: Engine | None = None,
        reward: CompositeReward | None = None,
        data_watermark: dict[str, int] | None = None,
        compute_dtype: torch.dtype | None = None,
        dist: Dist | None = None,
        reference_model: Any | None = None,
        initial_model: str = "",
        processor: Any = None,
    ) -> None:
        """`data_watermark`: commit positions of the source tables this run trains on (see
        storage.commit_log), recorded on every checkpoint so a data-triggered retrain knows which
        rows a checkpoint has seen. `compute_dtype`: see GroupSampler (trainers/policy.py).
        `dist`: data parallelism under torchrun (trainers/distributed.py): rank 0 writes metrics
        and checkpoints, every rank commits its own rollouts and lineage. `initial_model`: where
        the run's weights started (recorded on its checkpoints); `reference_model`: the KL term's
        reference when it is not a copy of `model` (a resumed run: its initial weights); `processor`: see GroupSampler."""
        self.initial_model = initial_model
        if dist is not None and dist.active and (config.replay_groups or config.async_rollouts):
            raise ValueError("data-parallel training (torchrun) does not support replay_groups or async rollouts yet")
        super().__init__(config, model=model, tokenizer=tokenizer, store=store, run_id=run_id, engine=engine,
                         reward=reward, compute_dtype=compute_dtype, dist=dist, processor=processor)  # fmt: skip
        self.dist.same_weights(model)
        # FSDP2: after the broadcast, before the optimizer sees the parameters
        self.sharding = Sharding(config.fsdp, self.dist.world)
        self.sharding.check(config, model)
        # The reference is copied whole, then sharded like the policy.
        reference = reference_policy(model, self.sharding, reference_model) if config.needs_reference else None
        self.sharding.shard(model)
        self.output_dir = Path(output_dir)
        self.data_watermark = dict(data_watermark or {})
        loss_fn = POLICY_LOSSES.get(config.loss_name)
        default = CLIP_DEFAULTS[config.loss_name]
        clip = ClipRange(
            config.clip_low if config.clip_low >= 0 else default.low,
            config.clip_high if config.clip_high >= 0 else default.high,
        )
        trainable = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapter only
        self.optimizer = adamw(trainable, config.lr, config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self.pad_id = pad_token_id(tokenizer, model)
        self.updater = PolicyUpdate(
            config, model=model, optimizer=self.optimizer, scheduler=self.scheduler, loss_fn=loss_fn, clip=clip,
            pad_id=self.pad_id, compute_dtype=compute_dtype, reference=reference, dist=self.dist,
            group_order=self.group_order, sharding=self.sharding, images=self.attach_images if self.images else None,
            guidance=sft_guidance(config, store, tokenizer, self.pad_id, compute_dtype) if config.sft_coef else None,
        )  # fmt: skip
        self.step = 0  # optimizer steps completed (= policy_version of the current weights)
        self.parent_checkpoint: str | None = None
        self.attempt = 0  # this process among the run's trainers (set when training starts; see trainers.lineage)
        # group -> times trained; tracked where a group can train more than once (replay, async reuse)
        self.usage: dict[str, int] = {}
        self.track_usage = config.replay_groups > 0 or config.async_rollouts or config.scheduler == "cbs"
        self.cbs: Any = None  # the CBS rollout scheduler (--scheduler cbs), built at its first step
        self.untrained: list[tuple[pa.Table, str]] = []  # groups a step drew and left, with why
        self.row_weights: list[float] | None = None  # mean importance weight per batch row (last update)
        self.tb = None

    def collect_batch(self, step: int, metrics: dict[str, float]) -> pa.Table:
        """Commit this step's rollouts and read the training batch back from those files. With
        dynamic sampling, zero-variance groups are dropped and refilled (capped rounds)."""
        from reasonloop.storage.samplers import batch_rows  # the store is the data path; imported at run time

        c = self.config
        if c.algo in ROUNDS:
            train_round = importlib.import_module(ROUNDS[c.algo]).train_round

            def one_round(r: int) -> list:
                return train_round(self, step, r, metrics)
        else:

            def one_round(r: int) -> list:
                problems, first = self.my_share(self.pick_problems(step, f"pick/{r}", c.prompts_per_step))
                result, *_ = self.commit_groups(
                    problems,
                    c.group_size,
                    step,
                    "single",
                    salt=str(r),
                    metrics=metrics,
                    draws=range(first, first + len(problems)),
                )
                metrics["sequences_generated"] = metrics.get("sequences_generated", 0) + len(problems) * c.group_size
                return result.batch_files

        one_round = with_verification(self, step, metrics, one_round)  # Learning to Self-Verify's steps

        def read(files: list, nonzero_std: bool = False) -> pa.Table:
            with self.timed("store_read"):
                return batch_rows(self.reader, files, nonzero_std=nonzero_std)

        files = one_round(0)
        if not c.uses_dynamic_sampling:  # one read; the zero-variance share is counted in memory
            everything = read(files)
            metrics["frac_zero_std_groups"] = zero_std_share(everything)
            return self._with_replay(everything, step, metrics)
        useful = read(files, nonzero_std=True)
        rounds = 0
        total = self.dist.total  # counts over every rank's groups (one process: the identity)
        while total(group_count(useful)) < c.prompts_per_step and rounds < c.max_refill_rounds:
            rounds += 1
            files += one_round(rounds)
            useful = read(files, nonzero_std=True)
        everything = read(files)
        n_useful, n_all = total(group_count(useful)), total(group_count(everything))
        metrics["frac_zero_std_groups"] = 1 - n_useful / max(1, n_all)
        keep = self._first_groups(useful, c.prompts_per_step)
        metrics["dynamic_sampling/groups_dropped"] = n_all - total(len(keep))
        metrics["dynamic_sampling/refill_rounds"] = rounds
        kept = pc.is_in(useful.column("group_id"), value_set=pa.array(keep, pa.string()))
        fresh = useful.filter(kept)
        self.untrained = [
            (useful.filter(pc.invert(kept)), "overflow"),
            (everything.filter(pc.invert(pc.is_in(everything.column("group_id"), value_set=useful.column("group_id")))),
             "zero_variance"),
        ]  # fmt: skip
        return self._with_replay(fresh, step, metrics)

    def _first_groups(self, useful: pa.Table, count: int) -> list[str]:
        """This rank's groups among the first `count` of all ranks' groups in the order (problem_id,
        stage, draw): the groups one process would keep, whatever the run is called."""
        columns = [useful.column(k).to_pylist() for k in ("problem_id", "stage", "group_id")]
        keys = list(dict.fromkeys((p, s, self.group_order(g), g) for p, s, g in zip(*columns, strict=True)))
        first = sorted(k for rank_keys in self.dist.gather(keys) for k in rank_keys)[:count]
        mine = {k[3] for k in keys}
        return [k[3] for k in first if k[3] in mine]

    def _with_replay(self, fresh: pa.Table, step: int, metrics: dict[str, float]) -> pa.Table:
        """Add `replay_groups` earlier groups within the staleness bound; their stored sampling
        logprobs give each token the truncated importance weight min(π_old / π_sampler, cap)."""
        c = self.config
        if c.scheduler == "cbs":  # Contextual Rollout Bandits choose fresh and stale rows (trainers/cbs.py)
            from reasonloop.trainers.cbs import scheduled_batch

            return scheduled_batch(self, fresh, step, metrics)
        if not c.replay_groups or step == 0:
            self._count_uses(fresh)
            return fresh
        from reasonloop.storage.samplers import replay_groups

        with self.timed("store_read"):
            stages = importlib.import_module(ROUNDS[c.algo]).TRAINED_STAGES if c.algo in ROUNDS else ("single",)
            low = max(0, step - c.max_staleness)
            old = replay_groups(
                self.reader, self.run_id, low=low, high=step - 1, groups=c.replay_groups,
                seed=derive_seed(c.seed, step, "replay"), stages=stages,
            )  # fmt: skip
        versions = old.column("policy_version").to_pylist()
        metrics["replay/rows"] = float(len(versions))
        metrics["replay/staleness_mean"] = step - sum(versions) / len(versions) if versions else 0.0
        metrics["replay/staleness_max"] = float(step - min(versions)) if versions else 0.0
        batch = pa.concat_tables([fresh, old.select(fresh.column_names).cast(fresh.schema)])
        self._count_uses(batch)
        return batch

    def _count_uses(self, batch: pa.Table) -> None:
        if self.track_usage:
            for group in set(batch.column("group_id").to_pylist()):
                self.usage[group] = self.usage.get(group, 0) + 1

    # ------------------------------------------------------------------ update
    def update(self, batch: pa.Table, step: int, metrics: dict[str, float]) -> float:
        """The policy update (trainers/update.py). Unscored rows (reward None: no advantage) are
        left out, counted, and recorded in the lineage as `unscored`."""
        unscored = pc.is_null(batch.column("advantage"))
        if pc.any(unscored).as_py():
            self.untrained.append((batch.filter(unscored), "unscored"))
            batch = batch.filter(pc.invert(unscored))
            self.trained_batch = batch
        loss = self.updater(batch, step, metrics)
        self.row_weights = self.updater.row_weights or None
        return loss

    # ------------------------------------------------------------------ the loop
    def train_step(self) -> dict[str, float]:
        step = self.step + 1  # the step being taken; its rollouts come from policy_version self.step
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        self.timings = {}
        gen_before = self.generation_calls
        self.untrained = []
        with self.sharding.gathered(self.model):  # FSDP: whole weights to sample with, no collective per token
            batch = self.collect_batch(self.step, metrics)
        rollout_s = time.perf_counter() - start
        self.trained_batch = batch
        getattr(self.engine, "sleep", lambda: None)()  # vLLM colocated with sleep mode: the GPU is the update's
        with self.timed("update"):
            loss = self.update(batch, self.step, metrics)
        batch = self.trained_batch  # what the update used (unscored rows left out)
        batch_metrics(batch, metrics)
        metrics.update(
            lr=self.scheduler.get_last_lr()[0], step_time=time.perf_counter() - start, rollout_time=rollout_s,
            generation_calls=self.generation_calls - gen_before,
        )  # fmt: skip
        if self.timings.get("generate"):  # the async trainer generates nothing itself
            metrics["tokens_per_s"] = metrics["completion_tokens"] / self.timings["generate"]
        self.step = step
        self.sync_engine()
        with self.timed("store_write"):
            self._write_consumed(batch)
            if self.dist.main:  # one compactor of the run's partition
                self._maybe_compact()
            metrics.update({f"time/{k}": v for k, v in self.timings.items()})
            metrics.update(self.step_metrics())
            metrics = merge_metrics(self.dist.gather(metrics))
            if self.dist.main:
                row = {"step": step, "loss": loss, "metrics": metrics}
                self.store.write("train_metrics", [row], run_id=self.run_id, producer=self.producer, sync=False)
        if self.tb is not None:
            for key, value in metrics.items():
                self.tb.add_scalar(key, value, step)
        return {"loss": loss, **metrics}

    def _write_consumed(self, batch: pa.Table) -> None:
        """The step's lineage: the rows it trained on (with use and weight), then the groups it drew
        and left; committed before the step's metrics row, so a step with metrics has its lineage."""
        from reasonloop.trainers.lineage import consumed_table

        groups = batch.column("group_id").to_pylist()
        uses = [self.usage.get(g, 1) for g in groups] if self.track_usage else None
        parts = [consumed_table(batch, step=self.step, attempt=self.attempt, status="trained", uses=uses,
                                weights=self.row_weights)]  # fmt: skip
        parts += [
            consumed_table(t, step=self.step, attempt=self.attempt, status=s) for t, s in self.untrained if t.num_rows
        ]
        self.store.write("consumed", pa.concat_tables(parts), run_id=self.run_id, producer=self.producer, sync=False)

    def _maybe_compact(self) -> None:
        """Compact the run's rollouts every `compact_files` new files (counted here, so no step
        lists the partition), keeping per-step read cost flat as the run grows."""
        if self.files_since_compaction >= self.config.compact_files:
            self.store.compact("rollouts", partition=f"run_id={self.run_id}")  # its own run only
            self.files_since_compaction = 0

    def train(
        self, until_step: int, on_step: Callable[[int, dict[str, float]], None] | None = None
    ) -> tuple[Path, dict[str, float]]:
        """Steps until `until_step`, checkpointing every `save_every` and at the end; returns the
        final checkpoint and the last step's metrics. The one loop the CLI, flows and benchmarks use."""
        if self.config.report_to == "tensorboard" and self.tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError("--report-to tensorboard needs: pip install tensorboard") from exc
            self.tb = SummaryWriter(str(self.output_dir / "tb"))
        from reasonloop.trainers.lineage import next_attempt

        metrics: dict[str, float] = {}
        self.attempt = self.dist.from_main(next_attempt(self.store, self.run_id) if self.dist.main else None)
        self.sync_engine()  # a resumed or LoRA policy differs from the folder the engine was built from
        self.before_training()
        while self.step < until_step:
            metrics = self.train_step()
            if on_step:
                on_step(self.step, metrics)
            full = bool(self.config.save_every) and self.step % self.config.save_every == 0 and self.step < until_step
            if full:
                self.save()
            self.after_step(saved=full)
        return self.save(), metrics

    def sync_engine(self) -> None:
        """After an update: the engine samples the next step from the new weights (an engine other
        than the policy object: vLLM colocated gets them in memory, a server through a published
        weights folder; trainers/engines.py). Timed as `time/weight_sync`."""
        if self.config.async_rollouts or self.config.engine == "transformers":
            return  # workers load published weights themselves; the transformers engine is the policy
        from reasonloop.trainers.engines import sync_weights

        with self.timed("weight_sync"):
            sync_weights(self.engine, self.model, self.step, lambda: self.save(weights_only=True))

    def before_training(self) -> None:
        """Called once by `train` before its first step (the async trainer publishes weights here)."""

    def after_step(self, saved: bool) -> None:
        """Called after every step (`saved`: a full checkpoint was just written; the async trainer
        publishes weights here)."""

    # ------------------------------------------------------------------ checkpoints
    def save(self, *, weights_only: bool = False) -> Path:
        """Write and register a full checkpoint (a resume point; older ones beyond
        `save_total_limit` are deleted) or, with `weights_only`, the weights alone."""
        watermark: dict[str, Any] = {
            "run_id": self.run_id, "policy_version": self.step, "table": "rollouts", "attempt": self.attempt,
        }  # fmt: skip
        if self.data_watermark:
            watermark["data"] = self.data_watermark
        meta = CheckpointMeta(
            self.run_id, self.step, asdict(self.config), watermark, self.parent_checkpoint, self.checkpoint_state()
        )
        optimizer = None if weights_only else self.optimizer
        path = None
        full = self.sharding.full_states(self.model, optimizer)  # FSDP: gathered to rank 0 (every rank calls it)
        if self.dist.main:  # every rank holds the same weights and optimizer state (or, sharded, rank 0 their whole)
            path = save_checkpoint(
                self.output_dir, meta, self.model, self.processing_class, optimizer, self.scheduler, *full
            )
            self.register(self.step, path, "weights" if weights_only else "full", watermark)
            if not weights_only and self.config.save_total_limit:
                for old in prune(self.output_dir, FULL_PREFIX, self.config.save_total_limit):
                    self.register(int(old.name.rsplit("-", 1)[1]), old, "deleted", None)
        path = Path(self.dist.from_main(str(path) if path else None))  # also: no rank runs ahead of the save
        if not weights_only:
            self.parent_checkpoint = path.name
        return path

    def register(self, step: int, path: Path, kind: str, watermark: dict[str, Any] | None) -> None:
        self.store.write("checkpoints", [{
            "step": step, "path": str(path), "kind": kind, "watermark": json.dumps(watermark) if watermark else None,
            "parent_checkpoint_id": None, "promoted": False,
        }], run_id=self.run_id, producer=f"trainer:{self.config.algo}")  # fmt: skip

    def restore(self, path: Path) -> None:
        """Optimizer, scheduler and RNG states of a checkpoint (weights are loaded with the model)."""
        meta = load_meta(path)
        self.data_watermark = dict(meta.watermark.get("data", self.data_watermark))
        load_states(path, self.optimizer, self.scheduler,
                    lambda state: self.sharding.load_optimizer(self.model, self.optimizer, state))  # fmt: skip
        self.step, self.parent_checkpoint = meta.step, path.name
        self.load_checkpoint_state(meta.state)

    def checkpoint_state(self) -> dict[str, Any]:
        """Bookkeeping saved with (and restored from) each checkpoint; subclasses extend it."""
        state: dict[str, Any] = {"usage": self.usage} if self.track_usage else {}
        return {**state, "initial_model": self.initial_model} if self.initial_model else state

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.usage = {k: int(v) for k, v in state.get("usage", {}).items()}
