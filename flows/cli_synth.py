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


MODE_HELP = "text (the scene graph in the prompt) | image (rendered, for vision-language models) | both."
CHAIN_HELP = "SFT targets: hier (global, local, relations, then the answer) | flat (the answer only)."


@app.command("cotzero")
def cotzero(
    scenes: Annotated[int, typer.Option(help="Scenes to draw.")] = 500,
    questions_per_scene: Annotated[int, typer.Option(help="Questions per scene (before negatives).")] = 4,
    mode: Annotated[str, typer.Option(help=MODE_HELP)] = "text",
    chain: Annotated[str, typer.Option(help=CHAIN_HELP)] = "hier",
    negative_rate: Annotated[float, typer.Option(help="Share of questions that also get a perturbed negative.")] = 0.5,
    heldout_percent: Annotated[int, typer.Option(help="Share of scene compositions held out.")] = 20,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    root: RootOption = None,
) -> None:
    """CoTZero: yes/no questions about composed scenes, at three levels, with lexical-perturbation
    negatives and hierarchical chain-of-thought targets; images into the store's media."""
    from reasonloop.storage import ReplayStore
    from reasonloop.tasks.recipes.cotzero import CoTZeroConfig, generate

    try:
        config = CoTZeroConfig(scenes=scenes, questions_per_scene=questions_per_scene, mode=mode, chain=chain,
                               negative_rate=negative_rate, heldout_percent=heldout_percent, seed=seed)  # fmt: skip
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    data = generate(config)
    store = ReplayStore(root)
    p, s = store.write("problems", data.problem_rows()), store.write("sft_samples", data.samples)
    typer.echo(f"cotzero: problems committed {p.committed} (duplicate {p.duplicates}, rejected {p.rejected}), "
               f"sft_samples committed {s.committed} (duplicate {s.duplicates}), images {len(data.images)}")  # fmt: skip


@app.command("arith-mc")
def arith_mc(
    n: Annotated[int, typer.Option(help="Problems to draw (duplicates dropped).")] = 5000,
    max_digits: Annotated[int, typer.Option(help="Longest operand.")] = 3,
    chat: Annotated[bool, typer.Option(help="Also as conversations (`messages`), for chat templates.")] = False,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    root: RootOption = None,
) -> None:
    """Multiple-choice addition (problems) with direct and deliberate targets (sft_samples): the
    set `reasonloop evaluate --ri` (Reinforcement Inference) is shown on."""
    from reasonloop.storage import ReplayStore
    from reasonloop.tasks.recipes.arith_choice import ArithChoiceConfig, generate
    from reasonloop.tasks.recipes.chat import as_chat

    problems, samples = generate(ArithChoiceConfig(n=n, max_digits=max_digits, seed=seed))
    if chat:
        problems, samples = as_chat(problems, samples)
    store = ReplayStore(root)
    p, s = store.write("problems", problems), store.write("sft_samples", samples)
    typer.echo(f"arith_mc: problems committed {p.committed} (duplicate {p.duplicates}), "
               f"sft_samples committed {s.committed} (duplicate {s.duplicates})")  # fmt: skip


@app.command("veritime")
def veritime(
    n: Annotated[int, typer.Option(help="Problems to draw (duplicates dropped).")] = 1000,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    chat: Annotated[bool, typer.Option(help="Also as conversations (`messages`), for chat templates.")] = False,
    chunks: Annotated[int, typer.Option(help="Chunk tasks of a Prefect flow; 1: one process, no Prefect.")] = 1,
    task_runner: Annotated[
        str,
        typer.Option(help="Where the chunk tasks run: threads | ray | ray=ADDRESS (pip install 'reasonloop[ray]')."),
    ] = "threads",
    batch_rows: Annotated[int, typer.Option(help="Rows per commit inside a chunk.")] = 2000,
    root: RootOption = None,
) -> None:
    """VeriTime time-series problems with process-verifiable steps (problems) and their CoT
    targets (sft_samples). With --chunks > 1, a Prefect flow of chunk tasks, each committing its
    own rows (the draws are the same however they are chunked or wherever they run)."""
    from dataclasses import asdict

    from reasonloop.storage import ReplayStore
    from reasonloop.tasks.recipes.veritime import VeriTimeConfig, generate

    config = VeriTimeConfig(n=n, seed=seed, chat=chat)
    store = ReplayStore(root)
    if chunks <= 1:
        problems, samples = generate(config)
        p, s = store.write("problems", problems), store.write("sft_samples", samples)
        typer.echo(f"veritime: problems committed {p.committed} (duplicate {p.duplicates}), "
                   f"sft_samples committed {s.committed} (duplicate {s.duplicates})")  # fmt: skip
        return
    from reasonloop.flows.prefect_env import configure_prefect

    configure_prefect(store.root)
    from reasonloop.flows.synthesis import run_chunked

    counts = run_chunked(str(store.root), asdict(config), chunks=chunks, runner=task_runner, batch_rows=batch_rows)
    typer.echo(f"veritime: {chunks} chunks on {task_runner}: problems committed {counts['problems']}, "
               f"sft_samples committed {counts['sft_samples']}, duplicates {counts['duplicates']}")  # fmt: skip
