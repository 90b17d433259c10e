"""`reasonloop model init` and `reasonloop generate`. Neither starts Prefect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from reasonloop.flows.cli_store import RootOption

app = typer.Typer(help="Build and inspect policy models.", no_args_is_help=True)


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@app.command("init")
def init(
    out: Annotated[Path, typer.Option(help="Folder to write the Hugging Face model into.")],
    size: Annotated[str, typer.Option(help="tiny (~0.45M params) or small (~3.2M).")] = "tiny",
    seed: Annotated[int, typer.Option(help="Weight-init seed; the same seed writes the same weights.")] = 0,
    tokenizer: Annotated[
        str,
        typer.Option(
            help="char: a Llama with a character tokenizer (the demo's); bpe: a Qwen2 with a byte-level "
            "BPE, a ChatML template, two EOS ids, no pad token, bf16 weights (a real checkpoint's shape)."
        ),
    ] = "char",
    vision: Annotated[
        bool,
        typer.Option(
            help="A LLaVA-style vision-language model: a CLIP vision tower and the BPE Qwen2, with its "
            "processor (AutoProcessor / AutoModelForImageTextToText load it); implies --tokenizer bpe."
        ),
    ] = False,
) -> None:
    """Build a small model with a tokenizer trained here (loads with from_pretrained, no network)."""
    quiet_transformers()
    from reasonloop.tasks.models import KINDS, init_model

    if tokenizer not in KINDS:
        typer.echo("error: --tokenizer must be char or bpe", err=True)
        raise typer.Exit(2)
    try:
        path = init_model("vision" if vision else tokenizer, out, size=size, seed=seed)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"model written to {path}")


def generate(
    model: Annotated[str, typer.Option(help="Model folder or Hugging Face id.")],
    prompt: Annotated[list[str], typer.Option(help="Prompt text (repeat for several).")],
    n: Annotated[int, typer.Option("-n", help="Completions per prompt.")] = 4,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (1 = off).")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Top-k sampling (0 = off).")] = 0,
    max_new_tokens: Annotated[int, typer.Option(help="Completion length cap in tokens.")] = 64,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list, one object per completion.")] = False,
    store: Annotated[bool, typer.Option("--store", help="Also write the completions as rollouts.")] = False,
    backtrack: Annotated[
        bool,
        typer.Option(help="Backtrack decoding (BSAFE+): show the text after [CATEGORY_c][BACKTRACK_BY_X] signals."),
    ] = False,
    root: RootOption = None,
    run_id: Annotated[str, typer.Option(help="run_id of stored rollouts.")] = "generate",
) -> None:
    """Sample completions with the transformers engine; logprobs are log_softmax(logits/T)."""
    quiet_transformers()
    from reasonloop.tasks.engines import SamplingParams, make_engine

    sampling = SamplingParams(
        temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens, seed=seed
    )
    engine = make_engine("transformers", model=model)
    if backtrack:
        from reasonloop.tasks.engines.backtrack import BacktrackingEngine

        engine = BacktrackingEngine(engine, engine.tokenizer)
    completions = engine.generate(prompt, n, sampling)
    if as_json:
        typer.echo(json.dumps([{
            "text": c.final_text, "raw_text": c.text, "token_ids": c.token_ids, "logprobs": c.logprobs,
            "entropies": c.entropies,
            "prompt_ids": c.prompt_ids, "finish_reason": c.finish_reason,
        } for c in completions]))  # fmt: skip
    else:
        for c in completions:
            mean_lp = sum(c.logprobs) / max(1, len(c.logprobs))
            typer.echo(
                f"[{c.prompt_index}] {c.final_text!r}  ({len(c.token_ids)} tokens, {c.finish_reason}, "
                f"mean logprob {mean_lp:.3f}, mean entropy {c.mean_entropy or 0:.3f})"
            )
    if store:
        from reasonloop.storage import ReplayStore
        from reasonloop.tasks.rollout_rows import rollout_rows

        rows = rollout_rows(completions, prompt, run_id=run_id, policy_version=0, rewards=None, source="generate")
        result = ReplayStore(root).write("rollouts", rows, run_id=run_id, producer="cli:generate")
        message = f"stored {result.committed} rollouts (duplicate {result.duplicates}, rejected {result.rejected})"
        typer.echo(message, err=as_json)
