"""The `reasonloop` command line. Store commands and the walkthrough never start Prefect."""

from __future__ import annotations

from typing import Annotated

import typer

from reasonloop.flows.cli_drsci import app as drsci_app
from reasonloop.flows.cli_evaluate import evaluate as evaluate_command
from reasonloop.flows.cli_igrpo import app as igrpo_app
from reasonloop.flows.cli_model import app as model_app
from reasonloop.flows.cli_model import generate as generate_command
from reasonloop.flows.cli_safety import app as safety_app
from reasonloop.flows.cli_serve import check_retrain_command, serve
from reasonloop.flows.cli_store import RootOption
from reasonloop.flows.cli_store import app as store_app
from reasonloop.flows.cli_synth import app as synth_app
from reasonloop.flows.cli_train import dpo as dpo_command
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
app.add_typer(safety_app, name="safety")
app.add_typer(drsci_app, name="drsci")
app.add_typer(igrpo_app, name="igrpo")
app.command("generate")(generate_command)
app.command("train")(train_command)
app.command("sft")(sft_command)
app.command("dpo")(dpo_command)
app.command("evaluate")(evaluate_command)
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


@app.command("octopus")
def octopus_command(
    model: Annotated[str, typer.Option(help="The policy to start from (an SFT'd checkpoint folder or hub id).")],
    out: Annotated[str, typer.Option(help="Folder for the cold-start model.")] = "octopus-out",
    run_id: Annotated[str, typer.Option(help="Prefix of the runs (<run-id>-sft, -stage1, -stage2).")] = "octopus",
    cold_limit: Annotated[int, typer.Option(help="Problems for cold-start data (0 = all of the train split).")] = 512,
    mode: Annotated[str, typer.Option(help="Cold start: mixed (o2: the gold chain) | in_distribution.")] = "mixed",
    sft_steps: Annotated[int, typer.Option(help="Cold-start SFT steps.")] = 200,
    stage1_steps: Annotated[int, typer.Option(help="RL steps of stage I (o2 only, KL on o1).")] = 60,
    stage2_steps: Annotated[int, typer.Option(help="RL steps of stage II (o1 unmasked for cc/ww).")] = 60,
    selection: Annotated[str, typer.Option(help="Recombined pairs by the paper's rule or the code's.")] = "code",
    group_size: Annotated[int, typer.Option(help="Samples per prompt n (augmented to 2n).")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Completion cap (o1, separator and o2 together).")] = 128,
    lr: Annotated[float, typer.Option(help="RL learning rate.")] = 1e-6,
    corrections: Annotated[int, typer.Option(help="Forced corrections at evaluation (test-time scaling).")] = 1,
    eval_limit: Annotated[int, typer.Option(help="Held-out problems evaluated.")] = 512,
    root: RootOption = None,
) -> None:
    """Octopus on problems in the store: cold-start data -> SFT -> RL stage I -> stage II -> evaluation
    (Prefect flow; the store must hold problems and their gold chains, e.g. `reasonloop synth arith`)."""
    from reasonloop.flows.cli_model import quiet_transformers
    from reasonloop.flows.prefect_env import configure_prefect
    from reasonloop.storage.layout import resolve_root

    store_root = resolve_root(root)
    configure_prefect(store_root)
    quiet_transformers()
    from reasonloop.flows.octopus import octopus

    stage = {"group_size": group_size, "max_completion_length": max_new_tokens, "lr": lr,
             "octopus_selection": selection}  # fmt: skip
    result = octopus(
        str(store_root), model, out, run_id=run_id, cold={"limit": cold_limit, "mode": mode,
        "max_new_tokens": max_new_tokens}, sft={"steps": sft_steps}, stage1={**stage, "steps": stage1_steps},
        stage2={**stage, "steps": stage2_steps}, eval_limit=eval_limit, max_new_tokens=max_new_tokens,
        corrections=corrections,
    )  # fmt: skip
    for name, e in result["evals"].items():
        fixed = e.get("corrections", {})
        typer.echo(f"{name:>10}: accuracy {100 * e['accuracy']:.1f}% (n={e['n']}); after {fixed.get('k', 0)} forced "
                   f"correction(s): {100 * fixed.get('final_accuracy', 0):.1f}%, w->c {100 * fixed.get('w_to_c', 0):.1f}%, "
                   f"c->w {100 * fixed.get('c_to_w', 0):.1f}%")  # fmt: skip
    typer.echo(f"final checkpoint: {result['stage2']}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
