"""`reasonloop train` and `reasonloop sft`: options generated from the config dataclasses, so every
option has the field's help text. Neither starts Prefect."""

# No `from __future__ import annotations` here: typer reads these annotations at run time.
import inspect
import os
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from reasonloop.flows.cli_model import quiet_transformers
from reasonloop.flows.cli_store import RootOption
from reasonloop.trainers.config import DPOConfig, SFTConfig, TrainConfig


def with_config_options(config_cls: type) -> Any:
    """Decorator: append one --option per config field (type, default and help from the field)."""

    def deco(fn: Any) -> Any:
        params = list(inspect.signature(fn).parameters.values())
        params = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
        for f in fields(config_cls):
            annotation = Annotated[type(f.default), typer.Option(help=f.metadata.get("help", ""))]
            fn.__annotations__[f.name] = annotation
            params.append(
                inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=annotation)
            )
        fn.__annotations__.pop("config", None)
        fn.__signature__ = inspect.Signature(params)
        return fn

    return deco


def _split_config(config_cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(config_cls)}
    return {k: v for k, v in kwargs.items() if k in names}


@with_config_options(TrainConfig)
def train(
    run_id: Annotated[str, typer.Option(help="Run id: partitions its rollouts, metrics and checkpoints.")],
    model: Annotated[str, typer.Option(help="Initial policy (folder or HF id); ignored with --resume.")] = "",
    resume: Annotated[bool, typer.Option(help="Continue the run from its last checkpoint up to --steps.")] = False,
    output_dir: Annotated[Path | None, typer.Option(help="Checkpoints (default <root>/checkpoints/<run-id>).")] = None,
    async_mode: Annotated[
        bool, typer.Option("--async", help="Train on rollouts that `reasonloop rollout-worker` processes commit.")
    ] = False,
    root: RootOption = None,
    **config: Any,
) -> None:
    """RL on problems already in the store (GRPO, Dr. GRPO, DAPO, GSPO, iGRPO, Octopus)."""
    if async_mode:
        config["async_rollouts"] = True
    quiet_transformers()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from reasonloop.storage import ReplayStore
    from reasonloop.trainers.run import run_rl

    try:
        cfg = TrainConfig(**_split_config(TrainConfig, config))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        bar = progress.add_task(f"{cfg.algo} {run_id}", total=cfg.steps)

        def on_step(step: int, metrics: dict[str, float]) -> None:
            progress.update(bar, completed=step, description=f"{cfg.algo} reward {metrics['reward_mean']:.3f}")

        try:
            result = run_rl(ReplayStore(root), cfg, run_id=run_id, model=model, output_dir=output_dir, resume=resume,
                            on_step=on_step)  # fmt: skip
        except (FileNotFoundError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        typer.echo(
            f"trained {run_id} to step {result.steps} ({result.generation_calls} generation calls); "
            f"checkpoint {result.checkpoint}"
        )


@with_config_options(SFTConfig)
def sft(
    model: Annotated[str, typer.Option(help="Model to fine-tune (folder or HF id).")],
    out: Annotated[Path, typer.Option(help="Folder for the fine-tuned model.")],
    run_id: Annotated[str, typer.Option(help="run_id of the checkpoint row.")] = "sft",
    root: RootOption = None,
    **config: Any,
) -> None:
    """Supervised fine-tuning on sft_samples in the store (loss-masked spans excluded)."""
    quiet_transformers()
    from reasonloop.storage import ReplayStore
    from reasonloop.trainers.run import run_sft_to

    cfg = SFTConfig(**_split_config(SFTConfig, config))
    result = run_sft_to(ReplayStore(root), cfg, model=model, out=out, run_id=run_id)
    typer.echo(
        f"sft: {cfg.steps} steps on {result.final_metrics['samples']:.0f} samples, "
        f"final loss {result.final_metrics['loss']:.4f}; model in {out}"
    )


def rollout_worker(
    run_id: Annotated[str, typer.Option(help="The async training run to sample for.")],
    worker_id: Annotated[str, typer.Option(help="This worker's name (in every group it commits).")] = "0",
    rounds_per_version: Annotated[int, typer.Option(help="Steps' worth of usable groups per published version.")] = 1,
    wait_timeout_s: Annotated[float, typer.Option(help="Exit when no new version appears for this long.")] = 300.0,
    engine: Annotated[str, typer.Option(help="This worker's engine: transformers | vllm | openai.")] = "transformers",
    engine_url: Annotated[
        str, typer.Option(help="openai engine: this worker's server, e.g. http://127.0.0.1:8000.")
    ] = "",
    engine_model: Annotated[str, typer.Option(help="openai engine: the served model name.")] = "",
    engine_weight_sync: Annotated[
        str, typer.Option(help="openai engine: server path that loads each published version (empty: fixed weights).")
    ] = "/reasonloop/load_weights",
    root: RootOption = None,
) -> None:
    """Sample groups for an async run from its newest published weights (model and settings come
    from the store: the run's newest registered checkpoint) and commit them, until the run ends."""
    quiet_transformers()
    from reasonloop.storage import ReplayStore
    from reasonloop.trainers.rollout_worker import run_worker

    options = {"engine": engine, "engine_url": engine_url, "engine_model": engine_model,
               "engine_weight_sync": engine_weight_sync}  # fmt: skip
    stats = run_worker(ReplayStore(root), run_id, worker_id, rounds_per_version=rounds_per_version, engine=options,
                       wait_timeout_s=wait_timeout_s, on_round=lambda s: typer.echo(
                           f"worker {worker_id}: version {s.last_version}, {s.groups} groups", err=True))  # fmt: skip
    typer.echo(f"worker {worker_id}: {stats.groups} groups over {stats.versions_loaded} versions")


@with_config_options(DPOConfig)
def dpo(
    out: Annotated[Path, typer.Option(help="Folder for the trained model (resume points in <out>/checkpoints).")],
    model: Annotated[
        str, typer.Option(help="Model to train (folder or HF id), also the reference; not with --resume.")
    ] = "",
    run_id: Annotated[str, typer.Option(help="run_id of the checkpoint and metrics rows.")] = "dpo",
    resume: Annotated[bool, typer.Option(help="Continue from the newest resume point in <out>/checkpoints.")] = False,
    root: RootOption = None,
    **config: Any,
) -> None:
    """DPO on the store's `preferences` (with --ogpsa-ref-sets: OGPSA's projection off capability sets)."""
    quiet_transformers()
    from reasonloop.storage import ReplayStore
    from reasonloop.trainers.run import run_dpo_to

    try:
        cfg = DPOConfig(**_split_config(DPOConfig, config))
        result = run_dpo_to(ReplayStore(root), cfg, model=model, out=out, run_id=run_id, resume=resume)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"dpo: {cfg.steps} steps on {result.final_metrics['pairs']:.0f} pairs, final loss "
        f"{result.final_metrics['loss']:.4f}; model in {out}"
    )
