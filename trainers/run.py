"""Whole runs as plain functions (load, train, save, register): what the CLI and the Prefect
tasks both call. The store is passed in; nothing here imports Prefect."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonloop.trainers.checkpoint import latest_checkpoint, load_meta
from reasonloop.trainers.config import SFTConfig, TrainConfig

if TYPE_CHECKING:
    from reasonloop.storage import ReplayStore


@dataclass
class RunResult:
    checkpoint: Path
    steps: int
    generation_calls: int
    final_metrics: dict[str, float]


def run_rl(
    store: ReplayStore,
    config: TrainConfig,
    *,
    run_id: str,
    model: str | Path = "",
    output_dir: Path | None = None,
    resume: bool = False,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    data_watermark: dict[str, int] | None = None,
) -> RunResult:
    """Train `run_id` to `config.steps` (with `resume`, from its last checkpoint, whose config,
    seed included, wins over `config` except for `steps`). `data_watermark` is recorded on the
    checkpoints (see RLTrainer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasonloop.trainers.rl import RLTrainer

    out = output_dir or store.root / "checkpoints" / run_id
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {out}")
    if checkpoint is not None:
        config = TrainConfig(**{**load_meta(checkpoint).config, "steps": config.steps})
        model = checkpoint
    if not model:
        raise ValueError("a model is required (or resume)")
    from reasonloop.trainers.step_utils import resolve_device

    policy = AutoModelForCausalLM.from_pretrained(model).to(resolve_device(config.device))
    tokenizer = AutoTokenizer.from_pretrained(model)
    if config.async_rollouts:
        from reasonloop.trainers.async_trainer import AsyncRLTrainer as RLTrainer  # rollouts from worker processes
    trainer = RLTrainer(
        config, model=policy, tokenizer=tokenizer, store=store, run_id=run_id, output_dir=out,
        data_watermark=data_watermark,
    )  # fmt: skip
    if checkpoint is not None:
        trainer.restore(checkpoint)
    path, metrics = trainer.train(config.steps, on_step)
    return RunResult(path, trainer.step, trainer.generation_calls, metrics)


def run_sft_to(
    store: ReplayStore, config: SFTConfig, *, model: str | Path, out: Path, run_id: str = "sft",
    on_step: Callable[[dict], None] | None = None,
) -> RunResult:  # fmt: skip
    """SFT on the store's sft_samples (split/source from the config); the model is saved to `out`
    and registered in `checkpoints`, the loss curve in `train_metrics`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasonloop.storage.samplers import split_filter
    from reasonloop.trainers.sft import run_sft

    where, params = split_filter(config.split, config.source)
    samples = store.query(f"SELECT prompt, target, loss_mask_spans FROM sft_samples WHERE {where} ORDER BY id", params)
    from reasonloop.trainers.step_utils import resolve_device

    policy = AutoModelForCausalLM.from_pretrained(model).to(resolve_device(config.device))
    tokenizer = AutoTokenizer.from_pretrained(model)
    history = run_sft(config, model=policy, tokenizer=tokenizer, samples=samples.to_pylist(), log=on_step)
    out = Path(out)
    policy.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    store.write(
        "checkpoints",
        [{"step": config.steps, "path": str(out.resolve()), "kind": "weights"}],
        run_id=run_id,
        producer="sft",
    )
    rows = [
        {"step": h["step"], "loss": h["loss"], "metrics": {"grad_norm": h["grad_norm"], "lr": h["lr"]}} for h in history
    ]
    store.write("train_metrics", rows, run_id=run_id, producer="sft")
    return RunResult(out, config.steps, 0, {"loss": history[-1]["loss"], "samples": float(samples.num_rows)})


def evaluate_model(
    store: ReplayStore, model: str | Path, *, split: str = "heldout", source: str = "", limit: int = 512,
    max_new_tokens: int = 64, pass_k: int = 4, pass_k_limit: int = 128, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Greedy accuracy per task type (with n and binomial standard error) and pass@k on a fixed
    held-out list (ordered by id, so every model sees the same problems)."""
    from reasonloop.storage.samplers import split_filter
    from reasonloop.tasks.engines import SamplingParams
    from reasonloop.tasks.engines.transformers_engine import TransformersEngine
    from reasonloop.tasks.rewards import get_reward

    where, params = split_filter(split, source)
    params["n"] = limit
    problems = store.query(
        f"SELECT id, prompt, answer, taxonomy FROM problems WHERE {where} ORDER BY id LIMIT $n", params
    ).to_pylist()
    engine = TransformersEngine(model, batch_size=256)
    exact = get_reward("exact")
    prompts, answers = [p["prompt"] for p in problems], [p["answer"] for p in problems]
    greedy = engine.generate(prompts, 1, SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
    scores = exact(prompts, [c.text for c in greedy], answer=answers)
    by_task: dict[str, list[float]] = {}
    for p, s in zip(problems, scores, strict=True):
        by_task.setdefault(p["taxonomy"] or "all", []).append(float(s == 1.0))
    result: dict[str, Any] = {"n": len(scores), **_acc(scores), "per_task": {t: _acc(v) for t, v in by_task.items()}}
    # Per-problem results, so two models on the same problems can be compared pairwise.
    result["ids"] = [p["id"] for p in problems]
    result["correct"] = [int(s == 1.0) for s in scores]
    head = problems[:pass_k_limit]
    sampled = engine.generate(
        [p["prompt"] for p in head], pass_k, SamplingParams(max_new_tokens=max_new_tokens, seed=seed)
    )
    hits = exact([head[c.prompt_index]["prompt"] for c in sampled], [c.text for c in sampled],
                 answer=[head[c.prompt_index]["answer"] for c in sampled])  # fmt: skip
    solved = [any(h == 1.0 for h in hits[i * pass_k : (i + 1) * pass_k]) for i in range(len(head))]
    result[f"pass@{pass_k}"] = sum(solved) / max(1, len(solved))
    return result


def _acc(scores: list) -> dict[str, float]:
    n = len(scores)
    acc = sum(s == 1.0 for s in scores) / max(1, n)
    return {"accuracy": acc, "n": n, "stderr": math.sqrt(acc * (1 - acc) / max(1, n))}
