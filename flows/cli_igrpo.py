"""`reasonloop igrpo ...`: iGRPO's refinement-format data and SFT (flows/igrpo.py); the two-pass
evaluation is `reasonloop evaluate --refine` (flows/cli_evaluate.py).
Training is `reasonloop train --algo igrpo [--igrpo-select judge] [--igrpo-template review]`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from reasonloop.flows.cli_store import RootOption
from reasonloop.tasks.recipes.igrpo_refine import DEFAULT_REQUEST

app = typer.Typer(help="iGRPO: refinement-format SFT data and its flow.", no_args_is_help=True)

Template = Annotated[
    str, typer.Option(help="Refinement prompt: repeat | review | a template with {question}, {draft}.")
]
Request = Annotated[str, typer.Option(help="Chat prompts: the user turn after the draft.")]


def _data(drafts: int, temperature: float, target: str, right_share: float, template: str, request: str,
          source: str, limit: int, max_new_tokens: int, seed: int) -> dict:  # fmt: skip
    return {"drafts": drafts, "temperature": temperature, "target": target, "max_right_share": right_share,
            "template": template, "request": request, "source": source, "limit": limit,
            "max_new_tokens": max_new_tokens, "seed": seed}  # fmt: skip


@app.command("refine-data")
def refine_data(
    model: Annotated[str, typer.Option(help="The policy whose drafts are refined.")],
    drafts: Annotated[int, typer.Option(help="Drafts sampled per problem.")] = 4,
    temperature: Annotated[float, typer.Option(help="Draft sampling temperature.")] = 1.0,
    target: Annotated[str, typer.Option(help="Wrong drafts' target: policy_first (a right sibling) | gold.")] = (
        "policy_first"
    ),
    right_share: Annotated[float, typer.Option(help="Most rows that keep a right draft, per problem.")] = 0.5,
    template: Template = "repeat",
    request: Request = DEFAULT_REQUEST,
    source: Annotated[str, typer.Option(help="Problems of this source only ('' = all).")] = "",
    limit: Annotated[int, typer.Option(help="Train problems used (0 = all).")] = 2000,
    max_new_tokens: Annotated[int, typer.Option(help="Draft length cap.")] = 64,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    from_run: Annotated[str, typer.Option(help="Use this run's stored rollouts as the drafts (no sampling).")] = "",
    from_stage: Annotated[str, typer.Option(help="With --from-run: rollouts of this stage only.")] = "",
    root: RootOption = None,
) -> None:
    """sft_samples (source `igrpo_refine`): question, the policy's draft, request -> corrected chain."""
    from reasonloop.flows.prefect_env import flows_module

    store_root, flows = flows_module(root, "igrpo")
    config = _data(drafts, temperature, target, right_share, template, request, source, limit, max_new_tokens, seed)
    config |= {"from_run": from_run, "from_stage": from_stage}
    typer.echo(json.dumps(flows.refine_data_task.fn(store_root, model, config)))  # type: ignore[attr-defined]


@app.command("refine-sft")
def refine_sft(
    model: Annotated[str, typer.Option(help="The policy to start from.")],
    out: Annotated[str, typer.Option(help="Folder for the refinement-SFT model.")] = "igrpo-refine-sft",
    drafts: Annotated[int, typer.Option(help="Drafts sampled per problem.")] = 4,
    target: Annotated[str, typer.Option(help="policy_first | gold.")] = "policy_first",
    template: Template = "repeat",
    request: Request = DEFAULT_REQUEST,
    source: Annotated[str, typer.Option(help="Problems (and evaluation) of this source only.")] = "",
    limit: Annotated[int, typer.Option(help="Train problems for the data (0 = all).")] = 2000,
    sft_steps: Annotated[int, typer.Option(help="SFT steps on the mix (refinement rows + every train chain).")] = 200,
    sft_lr: Annotated[float, typer.Option(help="SFT learning rate.")] = 1e-4,
    max_new_tokens: Annotated[int, typer.Option(help="Draft and answer length cap.")] = 64,
    eval_limit: Annotated[int, typer.Option(help="Held-out problems in the two-pass evaluation.")] = 512,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    root: RootOption = None,
) -> None:
    """Refinement data -> SFT -> two-pass evaluation before and after (Prefect flow)."""
    from reasonloop.flows.prefect_env import flows_module

    store_root, flows = flows_module(root, "igrpo")
    data = _data(drafts, 1.0, target, 0.5, template, request, source, limit, max_new_tokens, seed)
    result = flows.refine_sft(  # type: ignore[attr-defined]
        store_root, model, out, data=data, sft={"steps": sft_steps, "lr": sft_lr, "seed": seed},
        eval_source=source, eval_limit=eval_limit, max_new_tokens=max_new_tokens,
    )  # fmt: skip
    for name, e in result["evals"].items():
        t = e["two_pass"]
        typer.echo(f"{name:>10}: single-pass {100 * t['draft_accuracy']:.1f}%, draft->refine "
                   f"{100 * t['refine_accuracy']:.1f}% (w->c {100 * t['w_to_c']:.1f}%, c->w {100 * t['c_to_w']:.1f}%)")  # fmt: skip
    typer.echo(json.dumps({"data": result["data"], "checkpoint": result["checkpoint"]}))
