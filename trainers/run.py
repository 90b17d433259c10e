"""Whole runs as plain functions (load, train, save, register): what the CLI and the Prefect
tasks both call. The store is passed in; nothing here imports Prefect."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonloop.tasks.recipes.igrpo_refine import DEFAULT_REQUEST
from reasonloop.trainers.checkpoint import latest_checkpoint, load_meta
from reasonloop.trainers.config import DPOConfig, OfflineOptions, SFTConfig, TrainConfig
from reasonloop.trainers.distributed import Dist

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
    from reasonloop.trainers.policy import load_policy
    from reasonloop.trainers.rl import RLTrainer

    out = output_dir or store.root / "checkpoints" / run_id
    # The run's starting weights (`initial`): the KL term's reference, also after a resume.
    checkpoint, config, model, initial = resume_point(out, resume, config, model)
    dist = Dist.from_env(config.device)  # under torchrun: this rank (before loading: it picks the GPU)
    try:
        policy = load_policy(model, config)
        # A resumed run's reference is its initial weights, not the checkpoint's (a LoRA run's is
        # the frozen base with the adapter off, whatever the checkpoint).
        resumed_reference = checkpoint is not None and config.needs_reference and not config.lora_r
        reference = load_policy(initial, config).model if resumed_reference else None
        if config.async_rollouts:
            from reasonloop.trainers.async_trainer import AsyncRLTrainer as RLTrainer  # rollouts from worker processes
        trainer = RLTrainer(
            config, model=policy.model, tokenizer=policy.tokenizer, store=store, run_id=run_id, output_dir=out,
            data_watermark=data_watermark, compute_dtype=policy.compute_dtype, dist=dist, reference_model=reference,
            initial_model=initial, processor=policy.processor,
        )  # fmt: skip
        if checkpoint is not None:
            trainer.restore(checkpoint)
        path, metrics = trainer.train(config.steps, on_step if dist.main else None)
        return RunResult(path, trainer.step, trainer.generation_calls, metrics)
    finally:
        dist.close()


def resume_point(out: Path, resume: bool, config: Any, model: str | Path) -> tuple[Path | None, Any, str | Path, str]:
    """(the checkpoint to resume from or None, the config to run — a checkpoint's own, but for
    `steps` —, the weights to load, the run's initial weights)."""
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {out}")
    initial = str(Path(model).resolve()) if model and Path(model).exists() else str(model)
    if checkpoint is not None:
        meta = load_meta(checkpoint)
        config = type(config)(**{**meta.config, "steps": config.steps})
        initial = meta.state.get("initial_model") or str(checkpoint)  # (checkpoints before it was recorded)
        model = checkpoint
    if not model:
        raise ValueError("a model is required (or resume)")
    return checkpoint, config, model, initial


def image_inputs_for(policy: Any, store: ReplayStore) -> Any:
    """A vision-language policy's images from the store (trainers/images.py); None for a text model."""
    from reasonloop.trainers.images import ImageInputs

    return ImageInputs(policy.processor, store.media) if policy.processor is not None else None


def run_sft_to(
    store: ReplayStore, config: SFTConfig, *, model: str | Path, out: Path, run_id: str = "sft",
    on_step: Callable[[dict], None] | None = None,
) -> RunResult:  # fmt: skip
    """SFT on the store's sft_samples (split/source from the config); the model (a LoRA run: its
    adapter) is saved to `out` and registered in `checkpoints`, the loss curve in `train_metrics`."""
    from reasonloop.storage.samplers import sft_rows
    from reasonloop.trainers.policy import load_policy
    from reasonloop.trainers.sft import run_sft

    samples = sft_rows(store, config.split, config.source)
    policy = load_policy(model, config)
    history = run_sft(
        config, model=policy.model, tokenizer=policy.tokenizer, samples=samples, log=on_step,
        compute_dtype=policy.compute_dtype, reference_sets=reference_sets(store, config),
        images=image_inputs_for(policy, store),
    )  # fmt: skip
    return _save_run(store, policy, out, run_id, "sft", history, {"samples": float(len(samples))})


def run_dpo_to(
    store: ReplayStore, config: DPOConfig, *, model: str | Path = "", out: Path, run_id: str = "dpo",
    on_step: Callable[[dict], None] | None = None, resume: bool = False,
) -> RunResult:  # fmt: skip
    """DPO (trainers/dpo.py) on the store's `preferences` (split/source from the config), saved and
    registered as an SFT run is; OGPSA with `ogpsa_ref_sets`. Resume points (`save_every`) go to
    <out>/checkpoints; `resume` continues from the newest (its config wins, except `steps`), with
    the run's initial weights as the reference."""
    from dataclasses import asdict

    from reasonloop.storage.samplers import split_filter
    from reasonloop.trainers.checkpoint import CheckpointMeta, load_states, save_checkpoint
    from reasonloop.trainers.dpo import run_dpo
    from reasonloop.trainers.policy import load_policy

    checkpoints = Path(out) / "checkpoints"
    checkpoint, config, model, initial = resume_point(checkpoints, resume, config, model)
    where, params = split_filter(config.split, config.source)
    pairs = store.query(f"SELECT prompt, chosen, rejected FROM preferences WHERE {where} ORDER BY id", params)
    policy = load_policy(model, config)

    history: list[dict] = []
    written = 0

    def log(record: dict) -> None:
        history.append(record)
        if on_step:
            on_step(record)

    def save(step: int, optimizer: Any, scheduler: Any) -> None:
        nonlocal written
        meta = CheckpointMeta(run_id, step, asdict(config), {"table": "preferences"}, None, {"initial_model": initial})
        path = save_checkpoint(checkpoints, meta, policy.model, policy.processing_class, optimizer, scheduler)
        store.write("checkpoints", [{"step": step, "path": str(path.resolve()), "kind": "full"}], run_id=run_id,
                    producer="dpo")  # fmt: skip
        _write_metrics(store, run_id, "dpo", history[written:])  # the metrics up to a resume point survive a crash
        written = len(history)

    def restore(optimizer: Any, scheduler: Any) -> int:
        load_states(checkpoint, optimizer, scheduler)
        return load_meta(checkpoint).step

    run_dpo(
        config, model=policy.model, tokenizer=policy.tokenizer, pairs=pairs.to_pylist(), log=log,
        compute_dtype=policy.compute_dtype, reference_sets=reference_sets(store, config), save=save,
        reference_model=load_policy(initial, config).model if checkpoint is not None else None,
        resume=restore if checkpoint is not None else None,
    )  # fmt: skip
    return _save_run(store, policy, out, run_id, "dpo", history, {"pairs": float(pairs.num_rows)}, written)


def _write_metrics(store: ReplayStore, run_id: str, producer: str, history: list[dict]) -> None:
    rows = [{"step": h["step"], "loss": h["loss"], "metrics": {k: v for k, v in h.items() if k not in ("step", "loss")}}
            for h in history]  # fmt: skip
    store.write("train_metrics", rows, run_id=run_id, producer=producer)


def _save_run(
    store: ReplayStore, policy: Any, out: Path, run_id: str, producer: str, history: list[dict], extra: dict,
    written: int = 0,
) -> RunResult:  # fmt: skip
    """Save the weights (a LoRA run: its adapter) and tokenizer, register the checkpoint, and write
    the per-step metrics to `train_metrics`."""
    from reasonloop.trainers.policy import save_weights

    out = Path(out)
    save_weights(policy.model, out, merged=False)
    policy.processing_class.save_pretrained(out)
    steps = history[-1]["step"] if history else 0
    store.write(
        "checkpoints",
        [{"step": steps, "path": str(out.resolve()), "kind": "weights"}],
        run_id=run_id,
        producer=producer,
    )
    _write_metrics(store, run_id, producer, history[written:])  # `written`: already written at resume points
    return RunResult(out, steps, 0, {"loss": history[-1]["loss"] if history else float("nan"), **extra})


def reference_sets(store: ReplayStore, config: OfflineOptions) -> list[list[dict]]:
    """OGPSA's capability sets: the first `ogpsa_samples` train sft_samples (by id) of each source named."""
    from reasonloop.storage.samplers import sft_rows

    sets = []
    for source in config.ogpsa_sources:
        rows = sft_rows(store, "train", source, config.ogpsa_samples)
        if not rows:
            raise ValueError(f"--ogpsa-ref-sets: no train sft_samples of source {source!r}")
        sets.append(rows)
    return sets


def evaluate_model(
    store: ReplayStore, model: str | Path, *, split: str = "heldout", source: str = "", limit: int = 512,
    max_new_tokens: int = 64, pass_k: int = 4, pass_k_limit: int = 128, seed: int = 0, device: str = "auto",
    dtype: str = "auto", chat_template: str = "auto", batch_size: int = 256, engine: str = "transformers",
    engine_url: str = "", corrections: int = 0, backtrack: bool = False, refine: bool = False,
    refine_template: str = "repeat", refine_request: str = DEFAULT_REQUEST,
) -> dict[str, Any]:  # fmt: skip
    """Greedy accuracy per task type (with n and binomial standard error) and pass@k on a fixed
    held-out list (ordered by id, so every model sees the same problems). Each completion is
    scored by its problem's `answer_type` (tasks/rewards/by_answer_type.py); problems with no
    verifier (rubric) are counted (`unscored`) and left out of the accuracy. Prompts follow the
    chat-template policy of training (tasks/prompts.py), on `device` in `dtype`. `engine`:
    transformers | vllm (this process) | openai (a server at `engine_url` serving `model`; prompts
    are rendered and tokenized here, as in training). Completions written o1 ⊕ separator ⊕ o2
    (Octopus) also get `self_correction`: first- and final-answer accuracy, w→c and c→w rates;
    `corrections` = k appends the separator k more times and continues greedily (test-time
    scaling), reported as `corrections`. `backtrack`: backtrack decoding (BSAFE+) on the engine;
    answers are judged on the text a user would see. `refine`: iGRPO's second pass (the greedy
    answer as a draft in the refinement prompt, answered greedily), reported as `two_pass`."""
    from reasonloop.tasks import prompts as prompt_policy
    from reasonloop.tasks.engines import SamplingParams
    from reasonloop.tasks.models.loading import load_tokenizer
    from reasonloop.tasks.recipes.octopus import SEPARATOR
    from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type
    from reasonloop.tasks.rewards.self_correction import correction_stats
    from reasonloop.trainers.eval_setup import eval_engine, eval_problems, with_images
    from reasonloop.trainers.evaluate import with_corrections

    problems = eval_problems(store, split, source, limit)
    tokenizer = load_tokenizer(model)
    sampler = eval_engine(model, tokenizer, engine=engine, engine_url=engine_url, batch_size=batch_size,
                          device=device, dtype=dtype)  # fmt: skip
    if backtrack:
        from reasonloop.tasks.engines.backtrack import BacktrackingEngine

        sampler = BacktrackingEngine(sampler, tokenizer)
    rendered = [prompt_policy.render(tokenizer, p["prompt"], p["messages"], chat_template) for p in problems]
    rendered = with_images(store, rendered, problems)
    prompts = prompt_policy.engine_inputs(sampler, tokenizer, rendered)

    def score(rows: list[dict], texts: list[str]) -> list[float | None]:
        return score_by_answer_type([r["prompt"] for r in rows], texts, [r["answer"] for r in rows],
                                    [r["answer_type"] for r in rows])  # fmt: skip

    greedy = sampler.generate(prompts, 1, SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
    raw = score(problems, [c.final_text for c in greedy])
    verdicts = [(p, s) for p, s in zip(problems, raw, strict=True) if s is not None]
    scores = [s for _, s in verdicts]
    by_task: dict[str, list[float]] = {}
    for p, s in verdicts:
        by_task.setdefault(p["taxonomy"] or "all", []).append(float(s == 1.0))
    result: dict[str, Any] = {"n": len(scores), **_acc(scores), "per_task": {t: _acc(v) for t, v in by_task.items()}}
    result["unscored"] = len(raw) - len(scores)
    texts, answers, kinds = (
        [c.final_text for c in greedy],
        [p["answer"] for p in problems],
        [p["answer_type"] for p in problems],
    )
    if any(SEPARATOR in t for t in texts):
        result["self_correction"] = correction_stats(texts, answers, kinds)
    if corrections:
        longer = with_corrections(
            sampler, tokenizer, [c.prompt_ids for c in greedy], texts, corrections, max_new_tokens
        )
        result["corrections"] = {"k": corrections, **correction_stats(longer, answers, kinds)}
    if refine:
        from reasonloop.trainers.evaluate import refine_greedy, two_pass_stats

        second = refine_greedy(sampler, tokenizer, problems, rendered, texts, template=refine_template,
                               request=refine_request, max_new_tokens=max_new_tokens)  # fmt: skip
        pairs = [(a == 1.0, b == 1.0) for a, b in zip(raw, score(problems, second), strict=True) if a is not None]
        result["two_pass"] = two_pass_stats([a for a, _ in pairs], [b for _, b in pairs])
    # Per-problem results, so two models on the same problems can be compared pairwise.
    result["ids"] = [p["id"] for p, _ in verdicts]
    result["correct"] = [int(s == 1.0) for s in scores]
    if not pass_k:
        return result
    head = problems[:pass_k_limit]
    sampled = sampler.generate(prompts[:pass_k_limit], pass_k, SamplingParams(max_new_tokens=max_new_tokens, seed=seed))
    hits = score([head[c.prompt_index] for c in sampled], [c.final_text for c in sampled])
    solved = [any(h == 1.0 for h in hits[i * pass_k : (i + 1) * pass_k]) for i in range(len(head))]
    result[f"pass@{pass_k}"] = sum(solved) / max(1, len(solved))
    return result


def _acc(scores: list) -> dict[str, float]:
    n = len(scores)
    acc = sum(s == 1.0 for s in scores) / max(1, n)
    return {"accuracy": acc, "n": n, "stderr": math.sqrt(acc * (1 - acc) / max(1, n))}
