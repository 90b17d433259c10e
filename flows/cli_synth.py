"""`reasonloop synth RECIPE`: write a recipe's rows to the store. Never starts Prefect."""

from __future__ import annotations

from typing import Annotated

import typer

from reasonloop.flows.cli_store import RootOption

app = typer.Typer(help="Synthesize training data into the store.", no_args_is_help=True)


@app.command("arith")
def arith(
    n: Annotated[int, typer.Option(help="Problems to draw (duplicates dropped).")] = 5000,
    min_digits: Annotated[int, typer.Option(help="Shortest operand.")] = 1,
    max_digits: Annotated[int, typer.Option(help="Longest operand.")] = 3,
    heldout_percent: Annotated[int, typer.Option(help="Share of prompt-hash space held out for evaluation.")] = 10,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    root: RootOption = None,
) -> None:
    """Addition problems (problems) and their step-by-step targets (sft_samples)."""
    from reasonloop.storage import ReplayStore
    from reasonloop.tasks.recipes.arith import ArithConfig, generate

    config = ArithConfig(n=n, min_digits=min_digits, max_digits=max_digits, heldout_percent=heldout_percent, seed=seed)
    problems, samples = generate(config)
    store = ReplayStore(root)
    p, s = store.write("problems", problems), store.write("sft_samples", samples)
    typer.echo(f"arith: problems committed {p.committed} (duplicate {p.duplicates}), "
               f"sft_samples committed {s.committed} (duplicate {s.duplicates})")  # fmt: skip
