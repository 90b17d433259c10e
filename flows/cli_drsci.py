"""`reasonloop drsci ...`: Dr. SCI's science data, curation flow and exploration-expanding SFT rows
(flows/drsci.py). Training uses `reasonloop train --rewards unified --dynamic-curriculum`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from reasonloop.flows.cli_store import RootOption

app = typer.Typer(help="Dr. SCI: science data, curation, rubric rewards, curriculum.", no_args_is_help=True)


@app.command("synth")
def synth(
    n: Annotated[int, typer.Option(help="Items to draw (duplicates dropped).")] = 3000,
    open_fraction: Annotated[float, typer.Option(help="Share of open-ended (rubric) items.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    chat: Annotated[bool, typer.Option(help="Also as conversations (`messages`), for chat templates.")] = False,
    root: RootOption = None,
) -> None:
    """`dr_sci` problems (verifiable with units or options; open-ended with rubrics) and gold chains."""
    from reasonloop.flows.drsci import synth_drsci
    from reasonloop.storage.layout import resolve_root

    config = {"n": n, "open_fraction": open_fraction, "seed": seed}
    typer.echo(json.dumps(synth_drsci(str(resolve_root(root)), config, chat)))


@app.command("curate")
def curate(
    source: Annotated[str, typer.Option(help="Problems source to curate (default: every source).")] = "",
    out_source: Annotated[str, typer.Option(help="Source of the curated rows.")] = "dr_sci_curated",
    model: Annotated[
        str, typer.Option(help="Policy whose pass rate over k samples is the difficulty (empty: no annotation).")
    ] = "",
    k: Annotated[int, typer.Option(help="Samples per problem for the pass rate.")] = 8,
    judge_url: Annotated[
        str,
        typer.Option(
            help="An OpenAI-compatible judge (subjects, rubrics, open-ended "
            "grading); default: rules and the keyword judge."
        ),
    ] = "",
    judge_model: Annotated[str, typer.Option(help="The judge's served name, or a local model folder.")] = "",
    eval_source: Annotated[
        list[str] | None,
        typer.Option(help="Sources whose rows count as evaluation data for decontamination (repeatable)."),
    ] = None,
    near_dup_threshold: Annotated[float, typer.Option(help="Jaccard of character 5-grams.")] = 0.85,
    root: RootOption = None,
) -> None:
    """The curation flow: clean, classify, split, dedup, decontaminate, rubrics, pass rate; drops in `rejected`."""
    from reasonloop.flows.prefect_env import flows_module

    store_root, flows = flows_module(root, "drsci")
    config = {"out_source": out_source, "k": k, "near_dup_threshold": near_dup_threshold,
              "decontam_threshold": near_dup_threshold}  # fmt: skip
    summary = flows.curate_drsci(store_root, source, config, model=model, judge_url=judge_url,
                                 judge_model=judge_model, eval_sources=eval_source or [])  # fmt: skip
    typer.echo(json.dumps(summary, indent=1))


@app.command("eesft")
def eesft(
    model: Annotated[list[str], typer.Option(help="Models that write candidates (repeatable).")],
    source: Annotated[str, typer.Option(help="Problems source.")] = "dr_sci_curated",
    temperatures: Annotated[str, typer.Option(help="Comma-separated sampling temperatures.")] = "0.7,1.0,1.3",
    samples: Annotated[int, typer.Option(help="Samples per problem, model and temperature.")] = 4,
    per_problem: Annotated[int, typer.Option(help="Responses kept per problem.")] = 2,
    unit: Annotated[str, typer.Option(help="n-grams over words or chars.")] = "word",
    out_source: Annotated[str, typer.Option(help="sft_samples source of the picks.")] = "dr_sci_eesft",
    root: RootOption = None,
) -> None:
    """Exploration-expanding SFT rows: correct candidates picked greedily for unseen 4-grams (vs random)."""
    from reasonloop.flows.prefect_env import flows_module

    store_root, flows = flows_module(root, "drsci")
    out = flows.eesft_task.fn(store_root, source, model, temperatures=[float(t) for t in temperatures.split(",")],
                              samples=samples, per_problem=per_problem, unit=unit, out_source=out_source)  # fmt: skip
    typer.echo(json.dumps(out))
