"""`reasonloop safety ...`: the safety recipe's data, evaluation and whole flow (flows/safety.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from reasonloop.flows.cli_store import RootOption

app = typer.Typer(help="Safety: BSAFE+ data, RLBF, DPO + OGPSA, and their evaluation.", no_args_is_help=True)


def _flows(root: str | None) -> tuple[str, object]:
    """(store root, the flows.safety module), with Prefect configured for the store first."""
    from reasonloop.flows.prefect_env import flows_module

    return flows_module(root, "safety")


@app.command("synth")
def synth(
    n: Annotated[int, typer.Option(help="Problems to draw.")] = 3000,
    max_digits: Annotated[int, typer.Option(help="Longest operand.")] = 2,
    inject_fraction: Annotated[float, typer.Option(help="Prompts with an injected instruction.")] = 0.5,
    unsafe_fraction: Annotated[float, typer.Option(help="Base SFT targets that carry a violation.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    root: RootOption = None,
) -> None:
    """Safety-recipe problems (protected data in the prompt) and a base SFT mix (tasks/recipes/safety.py)."""
    store_root, flows = _flows(root)
    config = {"n": n, "max_digits": max_digits, "inject_fraction": inject_fraction,
              "unsafe_fraction": unsafe_fraction, "seed": seed}  # fmt: skip
    typer.echo(json.dumps(flows.synth_safety_task.fn(store_root, config)))  # type: ignore[attr-defined]


@app.command("bsafe")
def bsafe(
    model: Annotated[
        str, typer.Option(help="The policy whose tokenizer counts X (and whose engine writes violations).")
    ],
    origin: Annotated[
        str, typer.Option("--from", help="gold (the recipe's safe chains) | rollouts (of --run-id).")
    ] = "gold",
    run_id: Annotated[
        str, typer.Option(help="With --from rollouts: the run whose safe, correct rollouts are used.")
    ] = "",
    clean_fraction: Annotated[float, typer.Option(help="Rows kept clean (no signal).")] = 0.3,
    violations: Annotated[
        str, typer.Option(help="template | engine (the policy continues after an unsafe cue).")
    ] = "template",
    seed: Annotated[int, typer.Option(help="Seed of cut points and categories.")] = 0,
    root: RootOption = None,
) -> None:
    """BSAFE+ sft_samples (source `bsafe`): violation injected, loss-masked, signal, safe continuation."""
    store_root, flows = _flows(root)
    config = {"clean_fraction": clean_fraction, "violations": violations, "seed": seed}
    typer.echo(json.dumps(flows.bsafe_data_task.fn(store_root, model, config, origin, run_id)))  # type: ignore[attr-defined]


@app.command("preferences")
def preferences(
    kind: Annotated[
        str, typer.Option(help="violations (recipe pairs) | groups (best vs worst) | critic (safe vs unsafe).")
    ] = "violations",
    run_id: Annotated[str, typer.Option(help="groups/critic: the run whose rollout groups are paired.")] = "",
    seed: Annotated[int, typer.Option(help="Seed (violations).")] = 0,
    root: RootOption = None,
) -> None:
    """Preference pairs into `preferences` (source `preferences`), for `reasonloop dpo`."""
    store_root, flows = _flows(root)
    typer.echo(json.dumps(flows.preferences_task.fn(store_root, kind, run_id, seed)))  # type: ignore[attr-defined]


@app.command("eval")
def evaluate(
    model: Annotated[str, typer.Option(help="Model folder.")],
    limit: Annotated[int, typer.Option(help="Held-out safety problems (and as many clean arith ones).")] = 256,
    max_new_tokens: Annotated[int, typer.Option(help="Completion cap.")] = 96,
    root: RootOption = None,
) -> None:
    """Violation rates (plain, prefill attack), backtrack and over-trigger rates, task accuracy."""
    store_root, flows = _flows(root)
    typer.echo(json.dumps(flows.safety_eval_task.fn(store_root, model, limit, max_new_tokens), indent=1))  # type: ignore[attr-defined]


@app.command("run")
def run(
    model: Annotated[str, typer.Option(help="A policy that knows the task (e.g. SFT'd on the safety base mix).")],
    out: Annotated[str, typer.Option(help="Folder for the trained models.")] = "safety-out",
    run_id: Annotated[str, typer.Option(help="Prefix of the runs.")] = "safety",
    sft_steps: Annotated[int, typer.Option(help="BSAFE+ SFT steps.")] = 200,
    sft_lr: Annotated[float, typer.Option(help="BSAFE+ SFT learning rate.")] = 5e-4,
    rl_steps: Annotated[int, typer.Option(help="RLBF steps.")] = 30,
    rl_lr: Annotated[float, typer.Option(help="RLBF learning rate.")] = 2e-5,
    sft_coef: Annotated[float, typer.Option(help="RLBF: α of the SFT term on BSAFE+ rows.")] = 0.1,
    prefill_fraction: Annotated[float, typer.Option(help="RLBF: share of prompts prefill-attacked.")] = 0.5,
    dpo_steps: Annotated[int, typer.Option(help="DPO steps on recipe pairs (0: no DPO arm).")] = 0,
    ogpsa_ref_sets: Annotated[str, typer.Option(help="DPO: OGPSA capability sets (sft_samples sources).")] = "",
    eval_limit: Annotated[int, typer.Option(help="Held-out problems per evaluation.")] = 256,
    root: RootOption = None,
) -> None:
    """The safety flow: synthesize -> BSAFE+ data -> SFT -> RLBF (-> DPO) -> evaluation of each model."""
    store_root, flows = _flows(root)
    rlbf = {"steps": rl_steps, "lr": rl_lr, "sft_coef": sft_coef, "prefill_fraction": prefill_fraction,
            "max_completion_length": 96, "group_size": 8}  # fmt: skip
    dpo = {"steps": dpo_steps, "lr": 1e-4, "ogpsa_ref_sets": ogpsa_ref_sets, "ogpsa_every": 5} if dpo_steps else None
    result = flows.safety(  # type: ignore[attr-defined]
        store_root, model, out, run_id=run_id, sft={"steps": sft_steps, "lr": sft_lr}, rlbf=rlbf, dpo=dpo,
        eval_limit=eval_limit,
    )  # fmt: skip
    for name, e in result["evals"].items():
        typer.echo(f"{name:>10}: violations {100 * e['violation_rate']:.1f}%, under prefill "
                   f"{100 * e['prefill_violation_rate']:.1f}%, backtracks {100 * e['backtrack_rate']:.1f}%, "
                   f"over-trigger {100 * e['over_trigger_rate']:.1f}%, accuracy {100 * e['accuracy']:.1f}%")  # fmt: skip
