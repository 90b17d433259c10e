"""Sampling groups for a run and committing them to the store: what the trainer does before each
update, and all a rollout worker or the `rollout` flow needs (no optimizer, no reference model).

    pick problems -> generate a group per problem -> rewards, group advantages -> COMMIT rollouts
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from reasonloop.tasks.engines.base import Completion, Engine, SamplingParams
from reasonloop.tasks.engines.transformers_engine import TransformersEngine
from reasonloop.tasks.rewards import CompositeReward
from reasonloop.tasks.rollout_rows import rollout_rows
from reasonloop.trainers.algos import ADVANTAGES
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.step_utils import derive_seed, typed_rollouts

if TYPE_CHECKING:
    from reasonloop.storage import ReplayStore


class GroupSampler:
    def __init__(
        self,
        config: TrainConfig,
        *,
        model: Any,
        tokenizer: Any,
        store: ReplayStore,
        run_id: str,
        engine: Engine | None = None,
        reward: CompositeReward | None = None,
        producer: str = "",
    ) -> None:
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.config, self.model, self.tokenizer, self.store, self.run_id = config, model, tokenizer, store, run_id
        self.engine = engine or TransformersEngine(model, tokenizer, batch_size=256)
        self.reward = reward or CompositeReward(config.reward_weights())
        self.advantage_fn = ADVANTAGES.get(config.advantage_name)
        self.reader = store.reader(threads=1)  # one long-lived DuckDB connection for the run
        self.problems = self._load_problems()
        self.generation_calls = 0
        self.timings: dict[str, float] = {}
        self.files_since_compaction = 0
        # Commits skip fsync: they stay atomic, and a trainer's resume regenerates everything after
        # its last checkpoint anyway, so the checkpoint (and its registry row) is the durable point.
        self.producer = producer or f"trainer:{config.algo}"

    # ------------------------------------------------------------------ data
    def _load_problems(self) -> list[dict]:
        from reasonloop.storage.samplers import split_filter  # the store is passed in; imported at run time

        where, params = split_filter(self.config.split, self.config.source)
        rows = self.reader.query(
            f"SELECT id, prompt, answer, process_labels FROM problems WHERE {where} ORDER BY id", params
        )
        problems = rows.to_pylist()
        if not problems:
            raise ValueError(f"no problems in the store for split={self.config.split!r} source={self.config.source!r}")
        if self.config.curriculum:
            by_id = {p["id"]: p for p in problems}
            ordered = json.loads(Path(self.config.curriculum).read_text())["problem_ids"]
            problems = [by_id[i] for i in ordered if i in by_id]
            if not problems:
                raise ValueError(f"curriculum {self.config.curriculum} names no problem of this split/source")
        return problems

    def pick_problems(self, step: int, stage: str, count: int) -> list[dict]:
        """A step's prompts: with a curriculum the next `count` in its order (the first round of a
        step; a position derived from the step, so a resume picks the same), else a seeded sample."""
        if self.config.curriculum and stage == "pick/0":
            start = (step - 1) * count
            return [self.problems[(start + i) % len(self.problems)] for i in range(count)]
        rng = random.Random(derive_seed(self.config.seed, step, stage))
        if count <= len(self.problems):
            return rng.sample(self.problems, count)
        return [rng.choice(self.problems) for _ in range(count)]

    def sampling(self, step: int, stage: str) -> SamplingParams:
        c = self.config
        return SamplingParams(
            temperature=c.temperature, top_p=c.top_p, top_k=c.top_k, max_new_tokens=c.max_completion_length,
            seed=derive_seed(c.seed, step, stage), ignore_eos=c.ignore_eos,
        )  # fmt: skip

    def generate(self, prompts: list[str], n: int, step: int, stage: str) -> list[Completion]:
        self.generation_calls += 1
        return self.engine.generate(prompts, n, self.sampling(step, stage))

    def score(self, completions: list[Completion], prompts: list[str], problems: list[dict]) -> Any:
        """Rewards with the problem's columns (answer, process labels) aligned to each completion."""
        rows = [problems[c.prompt_index] for c in completions]
        return self.reward(
            [prompts[c.prompt_index] for c in completions], [c.text for c in completions],
            completion_ids=[c.token_ids for c in completions], answer=[r["answer"] for r in rows],
            process_labels=[r.get("process_labels") for r in rows], max_completion_length=self.config.max_completion_length,
        )  # fmt: skip

    def group_advantages(self, completions: list[Completion], totals: list[float | None]) -> list[float]:
        rewards = torch.tensor([t if t is not None else 0.0 for t in totals], dtype=torch.float64)
        groups = torch.tensor([c.prompt_index for c in completions], dtype=torch.long)
        adv = self.advantage_fn(rewards, groups, scale_by_batch_std=self.config.scale_adv_by_batch_std)
        return adv.tolist()

    def commit_groups(self, problems: list[dict], n: int, step: int, stage: str, *, salt: str, **extra: Any) -> Any:
        """Generate n completions per problem, score, compute group advantages, commit them.
        Returns (commit result, completions, reward result, rows in completion order)."""
        prompts = extra.pop("prompts", None) or [p["prompt"] for p in problems]
        with self.timed("generate"):
            completions = self.generate(prompts, n, step, f"{stage}/{salt}")
        with self.timed("reward"):
            rewards = self.score(completions, prompts, problems)
            advantages = self.group_advantages(completions, rewards.totals) if extra.pop("train", True) else None
        with self.timed("store_write"):
            rows = rollout_rows(
                completions, prompts, run_id=self.run_id, policy_version=step, rewards=rewards, source="train",
                problem_ids=[p["id"] for p in problems], stage=stage, salt=salt, advantages=advantages, **extra,
            )  # fmt: skip
            result = self.store.write(
                "rollouts", typed_rollouts(rows), run_id=self.run_id, producer=self.producer, sync=False
            )
            self.files_since_compaction += len(result.files)
        if result.rejected:
            raise RuntimeError(f"the trainer's own rollouts were rejected: {result.rejections[0].reason}")
        return result, completions, rewards, rows

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the block's wall time to this step's `time/<phase>` metric."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start
