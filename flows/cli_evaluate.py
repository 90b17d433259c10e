"""`reasonloop evaluate`: greedy accuracy per task type and pass@k (the `evaluate` flow), with
--refine iGRPO's draft -> refine second pass, or with --ri Reinforcement Inference (the
`reinforcement-inference` flow: a deliberate second attempt only where the first was unsure)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from reasonloop.flows.cli_igrpo import Request, Template
from reasonloop.flows.cli_store import RootOption
from reasonloop.tasks.inference.reinforcement import DELIBERATE
from reasonloop.tasks.recipes.igrpo_refine import DEFAULT_REQUEST, template_text

PER_QUESTION = ("ids", "correct", "greedy_correct", "second_correct", "p", "dev_p")


def evaluate(
    model: Annotated[str, typer.Option(help="Model folder or hub id.")],
    split: Annotated[str, typer.Option(help="Problems of this split.")] = "heldout",
    source: Annotated[str, typer.Option(help="Problems of this source only ('' = all).")] = "",
    limit: Annotated[int, typer.Option(help="Problems, in id order.")] = 512,
    max_new_tokens: Annotated[int, typer.Option(help="Completion cap (with --ri: of the second attempt).")] = 64,
    engine: Annotated[str, typer.Option(help="transformers | vllm | openai (with --engine-url).")] = "transformers",
    engine_url: Annotated[str, typer.Option(help="openai: the server's base URL.")] = "",
    refine: Annotated[bool, typer.Option(help="Also iGRPO's draft -> refine second pass.")] = False,
    template: Template = "repeat",
    request: Request = DEFAULT_REQUEST,
    ri: Annotated[bool, typer.Option(help="Reinforcement Inference on the multiple-choice problems.")] = False,
    ri_signal: Annotated[str, typer.Option(help="--ri: entropy | msp.")] = "entropy",
    ri_rate: Annotated[float, typer.Option(help="--ri: share of the dev split re-asked (sets the threshold).")] = 0.61,
    ri_threshold: Annotated[float | None, typer.Option(help="--ri: a fixed threshold (no calibration).")] = None,
    ri_dev_split: Annotated[
        str, typer.Option(help="--ri: the split the threshold is calibrated on (not one the model trained on).")
    ] = "test",
    ri_dev_limit: Annotated[int, typer.Option(help="--ri: dev questions.")] = 256,
    ri_include_first: Annotated[bool, typer.Option(help="--ri: the second prompt shows the first answer.")] = False,
    ri_instruction: Annotated[str, typer.Option(help="--ri: the deliberate instruction.")] = DELIBERATE,
    ri_marker: Annotated[str, typer.Option(help="--ri: the text the option letter follows.")] = "#",
    ri_reask_all: Annotated[bool, typer.Option(help="--ri: also re-ask every question (the baseline).")] = True,
    root: RootOption = None,
) -> None:
    """Evaluate a model on stored problems (Prefect flows); JSON out."""
    from reasonloop.flows.prefect_env import flows_module
    from reasonloop.tasks.inference.reinforcement import RIConfig

    if ri and refine:
        raise typer.BadParameter("choose one second pass: --refine or --ri", param_hint="--ri")
    if ri:
        fields = {
            "signal": ri_signal,
            "target_rate": ri_rate,
            "threshold": ri_threshold,
            "marker": ri_marker,
            "include_first": ri_include_first,
            "instruction": ri_instruction,
            "second_tokens": max_new_tokens,
        }
        try:
            RIConfig(**fields)  # validated before Prefect starts
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--ri-*") from None
        store_root, flows = flows_module(root, "inference")
        result = flows.reinforcement_inference(  # type: ignore[attr-defined]
            store_root, model, fields, split, source, limit, ri_dev_split, ri_dev_limit, ri_reask_all, engine,
            engine_url,
        )  # fmt: skip
    else:
        try:
            template_text(template)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--template") from None
        store_root, flows = flows_module(root, "pipelines")
        second = {"template": template, "request": request} if refine else None
        result = flows.evaluate(  # type: ignore[attr-defined]
            store_root, model, split, source, limit, max_new_tokens, engine, engine_url, refine=second
        )
    typer.echo(json.dumps({k: v for k, v in result.items() if k not in PER_QUESTION}))
