"""Data-triggered retraining as Prefect flows: check -> (event) -> retrain -> (event) -> evaluate and promote.

    check-retrain          counts new source rows by commit order; if due, emits RETRAIN_DUE
    retrain                trains from the served checkpoint; registers it with its data watermark;
                           emits CHECKPOINT_READY
    evaluate-and-promote   evaluates candidate and incumbent on the same held-out problems, records
                           the decision in `promotions`, then re-checks the threshold, so rows that
                           arrived while the retrain ran are not forgotten

The events name the store (their resource id) and the run; the deployments' triggers
(flows/deployments.py) turn them into runs. storage/ knows nothing of Prefect: the flows emit.
Import after `flows.prefect_env.configure_prefect`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from reasonloop.flows.artifacts import artifact_key, training_summary
from reasonloop.flows.pipelines import evaluate_task, synthesize, train_task
from reasonloop.flows.promotion import checkpoint_id, current_incumbent, decide, record_decision
from reasonloop.flows.watermarks import RetrainPolicy, data_positions, pending_rows, retrain_run_id
from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.veritime import VeriTimeConfig
from reasonloop.trainers.config import TrainConfig

RETRAIN_DUE = "reasonloop.retrain.due"
CHECKPOINT_READY = "reasonloop.checkpoint.registered"
DEFAULT_TABLES = ["problems"]


def retrain_config() -> dict[str, Any]:
    """What a retrain runs unless told otherwise: a short dapo run on VeriTime problems."""
    return asdict(TrainConfig(
        algo="dapo", steps=50, prompts_per_step=8, group_size=8, lr=2e-5, temperature=0.7,
        max_completion_length=48, rewards="veritime", source="veritime",
    ))  # fmt: skip


def store_resource_id(root: str | Path) -> str:
    """The event resource a store's events carry and its deployments' triggers match."""
    return f"reasonloop.store.{Path(root).expanduser().resolve()}"


def emit_store_event(event: str, root: str, payload: dict[str, Any]) -> None:
    """A Prefect event whose resource is this store (what the deployments' triggers match)."""
    emit_event(event, resource={"prefect.resource.id": store_resource_id(root)}, payload={"root": root, **payload})


@flow(name="check-retrain")
def check_retrain(root: str, threshold: int = 1000, tables: list[str] | None = None) -> dict[str, Any]:
    """Count rows committed to `tables` since the newest trained checkpoint's watermark; emit
    RETRAIN_DUE naming the store and the run when they reach `threshold`."""
    policy = RetrainPolicy(threshold, tuple(tables or DEFAULT_TABLES))
    pending = pending_rows(ReplayStore(root), policy)
    result = {**asdict(pending), "total": pending.total, "due": pending.due}
    if pending.due:
        result["run_id"] = retrain_run_id(pending.positions)
        emit_store_event(RETRAIN_DUE, root, {"run_id": result["run_id"], "new_rows": pending.total})
    return result


@flow(name="synthesize-and-check")
def synthesize_and_check(
    root: str, n: int = 2000, seed: int | None = None, threshold: int = 1000, tables: list[str] | None = None
) -> dict[str, Any]:
    """The cron deployment's flow: VeriTime problems (a fresh seed per scheduled run, from its
    scheduled time, so each run adds new problems and a retry of one run adds nothing), then the
    retrain check, so crossing the threshold emits the event at once."""
    if seed is None:
        from prefect.runtime import flow_run

        scheduled = flow_run.scheduled_start_time
        seed = int(scheduled.timestamp()) if scheduled is not None else 0
    written = synthesize(root, asdict(VeriTimeConfig(n=n, seed=seed)))
    return {"seed": seed, "written": written, "check": check_retrain(root, threshold, tables)}


def finished_checkpoint(store: ReplayStore, run_id: str, steps: int) -> str | None:
    """The path of run `run_id`'s checkpoint at its last step `steps`, if that run already finished."""
    rows = store.query(
        "SELECT path FROM checkpoints WHERE run_id = $run AND step = $step AND kind <> 'deleted' "
        "ORDER BY kind DESC LIMIT 1",
        {"run": run_id, "step": steps},
    ).column("path")
    return rows[0].as_py() if len(rows) else None


@flow(name="retrain")
def retrain(
    root: str, run_id: str, base_model: str, config: dict | None = None, tables: list[str] | None = None
) -> dict[str, Any]:
    """RL from the served checkpoint (the base model until one is promoted) on the store's problems
    (`config`: TrainConfig fields, default `retrain_config()`). The checkpoint records the positions
    of `tables` it started from (its data watermark)."""
    store = ReplayStore(root)
    train_config = TrainConfig(**(config or retrain_config()))
    done = finished_checkpoint(store, run_id, train_config.steps)
    if done is not None:
        # A late duplicate event for this run (one the trigger's concurrency limit could not cancel
        # because the first run had already finished): the run is done, so nothing is trained or emitted.
        return {"run_id": run_id, "checkpoint": done, "skipped": "already trained"}
    positions = data_positions(store, tuple(tables or DEFAULT_TABLES))
    incumbent = current_incumbent(store, base_model)
    checkpoint = train_task.with_options(name="retrain")(
        root, incumbent.path, run_id, asdict(train_config), data_watermark=positions
    )
    training_summary(store, run_id, checkpoint, [
        f"- started from: `{incumbent.path}` (generation {incumbent.generation}); data watermark {positions}",
        "- next: the evaluate-and-promote deployment decides whether this checkpoint is served",
    ])  # fmt: skip
    emit_store_event(CHECKPOINT_READY, root, {"run_id": run_id, "checkpoint": checkpoint, "step": train_config.steps})
    return {"run_id": run_id, "checkpoint": checkpoint, "watermark": positions, "from": incumbent.path}


@flow(name="evaluate-and-promote")
def evaluate_and_promote(
    root: str, run_id: str, checkpoint: str, step: int, base_model: str, source: str = "", limit: int = 512,
    max_new_tokens: int = 48, threshold: int = 1000, tables: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Promote `checkpoint` over the served one only if it is better by more than the noise; the
    decision (either way) goes to `promotions` and a report. Then re-check the retrain threshold."""
    store = ReplayStore(root)
    incumbent = current_incumbent(store, base_model)
    candidate_eval = evaluate_task(root, checkpoint, "heldout", source, limit, max_new_tokens)
    incumbent_eval = evaluate_task(root, incumbent.path, "heldout", source, limit, max_new_tokens)
    decision = decide(candidate_eval, incumbent_eval)
    watermark = store.query(
        "SELECT watermark FROM checkpoints WHERE id = $id", {"id": checkpoint_id(run_id, int(step), checkpoint)}
    ).column("watermark")
    report = store.root / "reports" / f"promotion-{run_id}.md"
    lines = [
        f"# Evaluate and promote `{run_id}`", "",
        f"**Decision: {'promoted' if decision.promoted else 'rejected'}** — {decision.reason}", "",
        "| model | path | held-out accuracy | n |", "| --- | --- | ---: | ---: |",
        f"| candidate | `{checkpoint}` | {100 * candidate_eval['accuracy']:.1f}% | {candidate_eval['n']} |",
        f"| incumbent (generation {incumbent.generation}) | `{incumbent.path}` | "
        f"{100 * incumbent_eval['accuracy']:.1f}% | {incumbent_eval['n']} |",
    ]  # fmt: skip
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    generation = record_decision(
        store, run_id=run_id, candidate_id=checkpoint_id(run_id, int(step), checkpoint), candidate_path=checkpoint,
        incumbent=incumbent, decision=decision, candidate_eval=candidate_eval, incumbent_eval=incumbent_eval,
        watermark=json.loads((watermark.to_pylist() or ["{}"])[0] or "{}"), report=str(report),
    )  # fmt: skip
    create_markdown_artifact(
        "\n".join(lines) + f"\n\nReport: `{report}`", key=artifact_key("promotion", run_id), description="decision"
    )
    recheck = check_retrain(root, threshold, tables)
    return {
        "decision": "promoted" if decision.promoted else "rejected", "generation": generation,
        "delta": decision.gain.delta, "stderr": decision.gain.stderr, "report": str(report),
        "retrain_due_again": recheck["due"],
    }  # fmt: skip
