"""The `reasonloop` command line. Store commands and the walkthrough never start Prefect."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli_model import app as model_app
from flows.cli_model import generate as generate_command
from flows.cli_store import RootOption
from flows.cli_store import app as store_app
from flows.cli_synth import app as synth_app
from flows.cli_train import sft as sft_command
from flows.cli_train import train as train_command

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


@app.command()
def walkthrough(
    root: RootOption = None,
    seed: Annotated[int, typer.Option(help="Seed for the synthetic data.")] = 0,
) -> None:
    """A tour of the replay store on synthetic data (ingest, quarantine, SQL, samplers, compaction)."""
    from flows.walkthrough import run_walkthrough

    run_walkthrough(root, typer.echo, seed)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
