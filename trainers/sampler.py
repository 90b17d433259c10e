"""Sampling groups for a run and committing them to the store: what the trainer does before each
update, and all a rollout worker or the `rollout` flow needs (no optimizer, no reference model).

    pick problems -> render + encode prompts -> generate a group per draw -> rewards, group
    advantages -> COMMIT rollouts

Prompts follow tasks/prompts.py (chat template for problems with `messages`); a prompt over
`max_prompt_length` tokens is left-truncated or skipped (counted). Each draw of a problem is its
own group, even when a problem is drawn twice in a step. A reward of None (a verifier with no
verdict) is left out of its group's mean and std and gets no advantage: it is never a silent 0.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from reasonloop.tasks import prompts as prompt_policy
from reasonloop.tasks.engines.backtrack import apply_backtrack
from reasonloop.tasks.engines.base import Completion, Engine, ImagePrompt, Prompt, SamplingParams
from reasonloop.tasks.recipes.safety import prefill_attack
from reasonloop.tasks.rewards import CompositeReward
from reasonloop.tasks.rollout_rows import rollout_rows
from reasonloop.trainers.algos import ADVANTAGES
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.distributed import Dist
from reasonloop.trainers.engines import judge_scorer, reward_functions, rollout_engine
from reasonloop.trainers.images import ImageIds, ImageInputs, text_only_error
from reasonloop.trainers.step_utils import derive_seed, typed_rollouts

if TYPE_CHECKING:
    from reasonloop.storage import ReplayStore


class Groups(NamedTuple):
    result: Any  # the store's CommitResult
    completions: list[Completion]
    rewards: Any  # RewardResult, aligned with completions
    rows: list[dict]  # rollouts rows, aligned with completions
    problems: list[dict]  # the problems sampled (prompts over the length limit skipped)
    draws: list[int]  # their global draw indices (what keys their groups and seeds)


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
        compute_dtype: torch.dtype | None = None,
        dist: Dist | None = None,
        processor: Any = None,
    ) -> None:
        """`compute_dtype`: what the model's forward passes run in (None: its parameters' dtype;
        fp32 masters with bf16 compute run under autocast, trainers/policy.py). `dist`: this
        process's rank under torchrun (trainers/distributed.py); each rank samples a share.
        `processor`: a vision-language model's (AutoProcessor): problems with a `media_ref` are
        then asked with their image (trainers/images.py)."""
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.config, self.model, self.tokenizer, self.store, self.run_id = config, model, tokenizer, store, run_id
        self.dist = dist or Dist()
        self.compute_dtype = compute_dtype
        self.images = ImageInputs(processor, store.media) if processor is not None else None
        self.engine = engine or rollout_engine(
            config, model, tokenizer, compute_dtype, distributed=self.dist.active, processor=processor
        )
        self.reward = reward or CompositeReward(config.reward_weights(), reward_functions(config, model, tokenizer))
        self.advantage_fn = ADVANTAGES.get(config.advantage_name)
        self.reader = store.reader(threads=1)  # one long-lived DuckDB connection for the run
        self.problems = self._load_problems()
        self.problem_by_id = {p["id"]: p for p in self.problems}
        self.curriculum = self._dynamic_curriculum()
        # iGRPO's judge-graded selection: drafts are ranked by a judge's verdict, not the reward
        self.draft_judge = judge_scorer(config) if config.algo == "igrpo" and config.igrpo_select == "judge" else None
        self.generation_calls = 0
        self.timings: dict[str, float] = {}
        self.files_since_compaction = 0
        # group_id -> (salt, global draw) of the groups this process generated at `draw_version`:
        # group ids hash the run id, so ordering groups by id would make which group comes first
        # (a problem drawn twice in a step, a refill) and the update's summation order depend on
        # the run's name; the draw order does not (`group_order`). One version's worth is kept, so a
        # long-running rollout worker holds no more than a step's groups.
        self.draw_of: dict[str, tuple[str, int]] = {}
        self.draw_version = -1
        # Commits skip fsync: they stay atomic, and a trainer's resume regenerates everything after
        # its last checkpoint anyway, so the checkpoint (and its registry row) is the durable point.
        self.producer = producer or f"trainer:{config.algo}" + (f":rank{self.dist.rank}" if self.dist.active else "")

    # ------------------------------------------------------------------ data
    def _load_problems(self) -> list[dict]:
        from reasonloop.storage.samplers import split_filter  # the store is passed in; imported at run time

        where, params = split_filter(self.config.split, self.config.source)
        rows = self.reader.query(
            "SELECT id, prompt, messages, answer, answer_type, process_labels, rubric, pass_rate, media_ref "
            f"FROM problems WHERE {where} ORDER BY id",
            params,
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

    def _dynamic_curriculum(self) -> Any:
        if not self.config.dynamic_curriculum:
            return None
        from reasonloop.trainers.curriculum import DynamicCurriculum

        c = self.config
        return DynamicCurriculum(
            self.problems, self.reader, self.run_id, metric=c.curriculum_metric or next(iter(c.reward_weights())),
            pending_max=c.curriculum_pending_max, retire_at=c.curriculum_retire_at, min_samples=c.curriculum_min_samples,
        )  # fmt: skip

    def pick_problems(self, step: int, stage: str, count: int) -> list[dict]:
        """A step's prompts: with a curriculum file the next `count` in its order (the first round
        of a step; a position derived from the step, so a resume picks the same), else a seeded
        sample of the problems — of the dynamic curriculum's active set when it is on."""
        if self.config.curriculum and stage == "pick/0":
            start = step * count  # step = policy version: 0 takes the curriculum's first prompts
            return [self.problems[(start + i) % len(self.problems)] for i in range(count)]
        pool = self.curriculum.active(step) if self.curriculum is not None else self.problems
        rng = random.Random(derive_seed(self.config.seed, step, stage))
        if count <= len(pool):
            return rng.sample(pool, count)
        return [rng.choice(pool) for _ in range(count)]

    def step_metrics(self) -> dict[str, float]:
        """What the reward functions (judge calls, cache hits) and the curriculum did this step."""
        out = self.reward.drain_metrics() if hasattr(self.reward, "drain_metrics") else {}
        if self.draft_judge is not None:
            out |= {f"igrpo/{k}": v for k, v in self.draft_judge.drain_metrics().items()}
        return out | (self.curriculum.stats if self.curriculum is not None else {})

    def my_share(self, problems: list[dict]) -> tuple[list[dict], int]:
        """This rank's contiguous share of a step's problems, and the global index of its first."""
        lo, hi = self.dist.share(len(problems))
        return problems[lo:hi], lo

    def sampling(self, step: int, stage: str, draws: Sequence[int] | None = None) -> SamplingParams:
        """`draws`: the global indices of the call's prompts; each gets its own seed (a draw samples
        the same tokens whichever rank, batch or call generates it)."""
        c = self.config
        seeds = tuple(derive_seed(c.seed, step, f"{stage}/{d}") for d in draws) if draws is not None else ()
        return SamplingParams(
            temperature=c.temperature, top_p=c.top_p, top_k=c.top_k, max_new_tokens=c.max_completion_length,
            seed=derive_seed(c.seed, step, stage), seeds=seeds, ignore_eos=c.ignore_eos, stop=c.stop_strings,
        )  # fmt: skip

    def prefills(self, problems: list[dict], step: int, stage: str, draws: Sequence[int]) -> list[str]:
        """Per problem, the forced start of its response ("" for none): with `prefill_fraction`, that
        share of prompts with a safety context get a violation minus its last two characters
        (the prefill attack), the same for every sample of the group, seeded by the draw."""
        if not self.config.prefill_fraction:
            return [""] * len(problems)
        out = []
        for problem, draw in zip(problems, draws, strict=True):
            rng = random.Random(derive_seed(self.config.seed, step, f"prefill/{stage}/{draw}"))
            attack = rng.random() < self.config.prefill_fraction
            out.append((prefill_attack(problem["prompt"], rng) or "") if attack else "")
        return out

    def render(self, problem: dict) -> Prompt:
        """The problem's prompt as the model sees it: chat messages (templated) or plain text, with
        its image when it has one."""
        rendered = prompt_policy.render(
            self.tokenizer, problem["prompt"], problem.get("messages"), self.config.chat_template
        )
        if not problem.get("media_ref"):
            return rendered
        if self.images is None:
            raise text_only_error(f"problem {problem.get('id', problem['prompt'][:40])!r}")
        return self.images.prompt(rendered, problem["media_ref"])

    @property
    def processing_class(self) -> Any:
        """What a checkpoint saves beside the weights (TRL's term): a vision-language model's
        processor (its tokenizer, image processor and chat template), else the tokenizer."""
        return self.images.processor if self.images is not None else self.tokenizer

    def attach_images(self, prompts: list, problem_ids: list[str]) -> list:
        """Prompt ids read back from the store with their problems' images (a vision-language run)."""
        refs = [self.problem_by_id.get(pid, {}).get("media_ref") for pid in problem_ids]
        return self.images.attach(prompts, refs) if self.images is not None and any(refs) else prompts

    def encode(
        self, prompts: list[Prompt], metrics: dict[str, float] | None = None
    ) -> tuple[list, list[str], list[bool]]:
        """(what to give the engine, the prompt text as seen, kept) per prompt: token ids (the
        engine's own tokenizer would agree; ids also carry a truncation) or, for an engine that
        takes only text, the text. Over `max_prompt_length`: left-truncated, or not kept (skip)."""
        c = self.config
        ids = [self.images.encode(p) if isinstance(p, ImagePrompt) else prompt_policy.encode(self.tokenizer, p)
               for p in prompts]  # fmt: skip
        texts = [prompt_policy.display(self.tokenizer, p) for p in prompts]
        kept = [True] * len(ids)
        for i, x in enumerate(ids):
            if len(x) <= c.max_prompt_length:
                continue
            # An image prompt is never cut (its image tokens would lose their image): skipped.
            truncate = c.prompt_truncation == "left" and not isinstance(x, ImageIds)
            key = "prompts_truncated" if truncate else "prompts_skipped"
            if metrics is not None:
                metrics[key] = metrics.get(key, 0.0) + 1
            if truncate:
                ids[i] = x[-c.max_prompt_length :]
                texts[i] = self.tokenizer.decode(ids[i], skip_special_tokens=False)
            else:
                kept[i] = False
        if getattr(self.engine, "accepts_token_ids", False):
            # ids with their images where the engine takes them (transformers), else the image prompt
            whole = not getattr(self.engine, "accepts_image_ids", False)
            inputs = [replace(p, token_ids=tuple(i)) if whole and isinstance(i, ImageIds) else i
                      for p, i in zip(prompts, ids, strict=True)]  # fmt: skip
            return inputs, texts, kept
        return (
            [p if len(i) <= c.max_prompt_length else t for p, i, t in zip(prompts, ids, texts, strict=True)],
            texts,
            kept,
        )

    def generate(
        self, prompts: list, n: int, step: int, stage: str, draws: Sequence[int] | None = None
    ) -> list[Completion]:
        """n samples per prompt; `draws` (default 0..len-1) are the prompts' global draw indices."""
        self.generation_calls += 1
        return self.engine.generate(prompts, n, self.sampling(step, stage, draws or range(len(prompts))))

    def score(self, completions: list[Completion], prompts: list[str], problems: list[dict], reward: Any = None) -> Any:
        """Rewards with the problem's columns (answer, process labels) aligned to each completion,
        on the text a user sees (after backtrack decoding, whose counts arrive as `backtrack`)."""
        return self.score_texts(
            [prompts[c.prompt_index] for c in completions], [c.final_text for c in completions],
            [c.token_ids for c in completions], [problems[c.prompt_index] for c in completions],
            backtrack=[c.extra.get("backtrack") for c in completions], prompt_ids=[c.prompt_ids for c in completions],
            reward=reward,
        )  # fmt: skip

    def score_texts(
        self, prompts: list, texts: list[str], ids: list[list[int]], problems: list[dict], reward: Any = None,
        **columns: Any,
    ) -> Any:  # fmt: skip
        """The run's reward functions (or `reward`) on completions, each with its own problem's columns."""
        return (reward or self.reward)(
            prompts, texts, completion_ids=ids, answer=[r["answer"] for r in problems],
            answer_type=[r.get("answer_type") for r in problems], process_labels=[r.get("process_labels") for r in problems],
            rubric=[r.get("rubric") for r in problems],
            max_completion_length=self.config.max_completion_length, **columns,
        )  # fmt: skip

    def group_advantages(self, groups: Sequence[Hashable], totals: list[float | None]) -> list[float | None]:
        """Advantages within each group (`groups`: a key per sample, e.g. its draw) over the scored
        samples only; None where unscored."""
        scored = [k for k, t in enumerate(totals) if t is not None]
        out: list[float | None] = [None] * len(totals)
        if not scored:
            return out
        rewards = torch.tensor([totals[k] for k in scored], dtype=torch.float64)
        index = {key: i for i, key in enumerate(sorted({groups[k] for k in scored}))}  # dense group ids
        dense = torch.tensor([index[groups[k]] for k in scored], dtype=torch.long)
        adv = self.advantage_fn(rewards, dense, scale_by_batch_std=self.config.scale_adv_by_batch_std)
        for k, a in zip(scored, adv.tolist(), strict=True):
            out[k] = a
        return out

    def commit_groups(self, problems: list[dict], n: int, step: int, stage: str, *, salt: str, **extra: Any) -> Any:
        """Generate n completions per problem, score, compute group advantages, commit them.
        Returns Groups(commit result, completions, reward result, rows in completion order, the
        problems kept — completions' `prompt_index` indexes these). `prompts`
        (rendered prompts, e.g. iGRPO refinements) replace the problems' own; `metrics` counts
        truncated or skipped prompts; skipped problems are left out of everything returned.
        `draws`: the problems' global draw indices (default 0..n-1; a data-parallel rank's share
        starts further on), which key their groups and seeds."""
        metrics = extra.pop("metrics", None)
        reward = extra.pop("reward", None) or self.reward  # a round's own (self-verification's label match)
        given = extra.pop("draws", None)
        all_draws = list(given) if given is not None else list(range(len(problems)))
        prompts = extra.pop("prompts", None) or [self.render(p) for p in problems]
        prefixes = self.prefills(problems, step, stage, all_draws)
        if any(prefixes):  # the response is forced to start with the prefix: it ends the prompt
            prompts = [prompt_policy.display(self.tokenizer, p) + x if x else p
                       for p, x in zip(prompts, prefixes, strict=True)]  # fmt: skip
        inputs, texts, kept = self.encode(prompts, metrics)
        draws = [d for d, k in zip(all_draws, kept, strict=True) if k]
        if not all(kept):
            prefixes = [x for x, k in zip(prefixes, kept, strict=True) if k]
            problems = [p for p, k in zip(problems, kept, strict=True) if k]
            inputs, texts = (
                [x for x, k in zip(inputs, kept, strict=True) if k],
                [t for t, k in zip(texts, kept, strict=True) if k],
            )
            if "parent_ids" in extra:
                extra["parent_ids"] = [x for x, k in zip(extra["parent_ids"], kept, strict=True) if k]
        prompts = texts
        with self.timed("generate"):
            completions = self.generate(inputs, n, step, f"{stage}/{salt}", draws) if inputs else []
            for c in completions:  # what a user sees: prefix (a prefill) + continuation, backtracked
                prefix = prefixes[c.prompt_index]
                if self.config.backtrack:
                    apply_backtrack(c, self.tokenizer, prefix=prefix)
                elif prefix:
                    c.visible_text = prefix + c.text
        with self.timed("reward"):
            rewards = self.score(completions, prompts, problems, reward)
            draws_of = [c.prompt_index for c in completions]
            advantages = self.group_advantages(draws_of, rewards.totals) if extra.pop("train", True) else None
        if metrics is not None:
            metrics["rewards_none"] = metrics.get("rewards_none", 0.0) + sum(t is None for t in rewards.totals)
        with self.timed("store_write"):
            rows = rollout_rows(
                completions, prompts, run_id=self.run_id, policy_version=step, rewards=rewards, source="train",
                problem_ids=[p["id"] for p in problems], stage=stage, salt=salt, advantages=advantages, draws=draws,
                **extra,
            )  # fmt: skip
            result = self.store.write(
                "rollouts", typed_rollouts(rows), run_id=self.run_id, producer=self.producer, sync=False
            ) if rows else self.store.write("rollouts", [], run_id=self.run_id)  # fmt: skip
            self.files_since_compaction += len(result.files)
        if result.rejected:
            raise RuntimeError(f"the trainer's own rollouts were rejected: {result.rejections[0].reason}")
        if step != self.draw_version:
            self.draw_of.clear()
            self.draw_version = step
        for row, completion in zip(rows, completions, strict=True):
            self.draw_of[row["group_id"]] = (salt, draws[completion.prompt_index])
        return Groups(result, completions, rewards, rows, problems, draws)

    def group_order(self, group_id: str) -> tuple:
        """A sort key for a group that does not depend on the run id: its (salt, draw) when this
        process generated it at the current policy version, else its id (replayed groups, from
        earlier versions, or a worker's)."""
        draw = self.draw_of.get(group_id)
        return (0, *draw) if draw is not None else (1, group_id)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the block's wall time to this step's `time/<phase>` metric."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start
