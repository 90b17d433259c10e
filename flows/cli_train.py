"""`reasonloop train` and `reasonloop sft`: options generated from the config dataclasses, so every
option has the field's help text. Neither starts Prefect."""

# No `from __future__ import annotations` here: typer reads these annotations at run time.
import inspect
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli_model import quiet_transformers
from flows.cli_store import RootOption
from trainers.config import SFTConfig, TrainConfig


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
    root: RootOption = None,
    **config: Any,
) -> None:
    """RL on problems already in the store (GRPO, Dr. GRPO, DAPO, GSPO, iGRPO)."""
    quiet_transformers()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from storage import ReplayStore
    from trainers.checkpoint import latest_checkpoint, load_meta
    from trainers.rl import RLTrainer

    store = ReplayStore(root)
    out = output_dir or store.root / "checkpoints" / run_id
    values = _split_config(TrainConfig, config)
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        typer.echo(f"error: --resume: no checkpoint in {out}", err=True)
        raise typer.Exit(2)
    if checkpoint is not None:  # the run's own config (seed included); only --steps may change
        values = {**load_meta(checkpoint).config, "steps": values["steps"]}
        model = str(checkpoint)
    elif not model:
        typer.echo("error: --model is required (or --resume)", err=True)
        raise typer.Exit(2)
    try:
        cfg = TrainConfig(**values)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    policy = AutoModelForCausalLM.from_pretrained(model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    trainer = RLTrainer(cfg, model=policy, tokenizer=tokenizer, store=store, run_id=run_id, output_dir=out)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(f"{cfg.algo} {run_id}", total=cfg.steps, completed=trainer.step)
        while trainer.step < cfg.steps:
            metrics = trainer.train_step()
            progress.update(task, completed=trainer.step, description=f"{cfg.algo} reward {metrics['reward_mean']:.3f}")
            if cfg.save_every and trainer.step % cfg.save_every == 0 and trainer.step < cfg.steps:
                trainer.save()
    path = trainer.save()
    typer.echo(
        f"trained {run_id} to step {trainer.step} ({trainer.generation_calls} generation calls); checkpoint {path}"
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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from storage import ReplayStore
    from trainers.sft import run_sft

    cfg = SFTConfig(**_split_config(SFTConfig, config))
    store = ReplayStore(root)
    where = "split = $split" + (" AND source = $source" if cfg.source else "")
    params = {"split": cfg.split, **({"source": cfg.source} if cfg.source else {})}
    samples = store.query(f"SELECT prompt, target, loss_mask_spans FROM sft_samples WHERE {where} ORDER BY id", params)
    policy = AutoModelForCausalLM.from_pretrained(model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    history = run_sft(cfg, model=policy, tokenizer=tokenizer, samples=samples.to_pylist())
    policy.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    store.write("checkpoints", [{"step": cfg.steps, "path": str(out.resolve())}], run_id=run_id, producer="sft")
    store.write(
        "train_metrics",
        [
            {"step": h["step"], "loss": h["loss"], "metrics": {"grad_norm": h["grad_norm"], "lr": h["lr"]}}
            for h in history
        ],
        run_id=run_id,
        producer="sft",
    )
    typer.echo(
        f"sft: {cfg.steps} steps on {samples.num_rows} samples, final loss {history[-1]['loss']:.4f}; model in {out}"
    )
