"""The `reasonloop` command line. Store commands and the walkthrough never start Prefect."""

from __future__ import annotations

from typing import Annotated

import typer

from reasonloop.flows.cli_model import app as model_app
from reasonloop.flows.cli_model import generate as generate_command
from reasonloop.flows.cli_serve import check_retrain_command, serve
from reasonloop.flows.cli_store import RootOption
from reasonloop.flows.cli_store import app as store_app
from reasonloop.flows.cli_synth import app as synth_app
from reasonloop.flows.cli_train import rollout_worker as rollout_worker_command
from reasonloop.flows.cli_train import sft as sft_command
from reasonloop.flows.cli_train import train as train_command

app = typer.Typer(
    help="reasonloop: RL post-training of language models as a data pipeline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(store_app, name="store")
app.add_typer(model_app, name="model")
app.add_typer(synth_app, name="synth")
app.command("generate")(generate_command)
app.command("train")(train_command)
app.command("sft")(sft_command)
app.command("rollout-worker")(rollout_worker_command)
app.command("serve")(serve)
app.command("check-retrain")(check_retrain_command)


@app.command()
def walkthrough(
    root: RootOption = None,
    seed: Annotated[int, typer.Option(help="Seed for the synthetic data.")] = 0,
) -> None:
    """A tour of the replay store on synthetic data (ingest, quarantine, SQL, samplers, compaction)."""
    from reasonloop.flows.walkthrough import run_walkthrough

    run_walkthrough(root, typer.echo, seed)


@app.command("demo")
def demo_command(
    root: RootOption = None,
    quick: Annotated[
        bool, typer.Option(help="A short smoke run (still >= 2 real RL steps through the store).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for data, model and sampling.")] = 0,
    tokenizer: Annotated[
        str, typer.Option(help="char (the tiny Llama) or bpe (a Qwen2-shaped checkpoint, chat-templated data).")
    ] = "char",
) -> None:
    """The main job: tiny model -> VeriTime data -> SFT -> RL -> evaluation -> report (Prefect flows)."""
    from reasonloop.flows.cli_model import quiet_transformers
    from reasonloop.flows.prefect_env import configure_prefect
    from reasonloop.storage.layout import resolve_root

    store_root = resolve_root(root)
    configure_prefect(store_root)
    quiet_transformers()
    from reasonloop.flows.demo import demo
    from reasonloop.flows.progress import progress_bars
    from reasonloop.trainers.evaluate import paired_gain

    with progress_bars():
        result = demo(str(store_root), quick=quick, seed=seed, tokenizer=tokenizer)
    for stage, e in result["evals"].items():
        typer.echo(f"{stage:>5}: held-out accuracy {100 * e['accuracy']:.1f}% ± {100 * e['stderr']:.1f} (n={e['n']})")
    gain = paired_gain(result["evals"]["rl"], result["evals"]["sft"])
    typer.echo(f"SFT -> RL: {100 * gain.delta:+.1f} points ± {100 * gain.stderr:.1f} (paired standard error)")
    typer.echo(f"report: {result['report']}")
    typer.echo(
        f'store:  {result["store"]}  (try: reasonloop store query "SELECT * FROM train_metrics" --root {result["store"]})'
    )
    typer.echo(f"wall time: {result['wall_s']:.0f} s")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
