"""The deployments `reasonloop serve` registers (and prefect.yaml declares for work pools).

    synthesize             cron        synthesize-and-check: new VeriTime problems, then the threshold check
    watch                  interval    check-retrain: catches rows that arrived by other paths (ingest, CLI)
    retrain                event       RETRAIN_DUE from this store -> one run at a time, a burst cancelled
    evaluate-and-promote   event       CHECKPOINT_READY from this store -> queued, one at a time (the
                                       promotion generation is a counter)

prefect.yaml in the repository root declares the same four for `prefect deploy --all`; a test
checks that both register the same names, schedules, triggers and concurrency limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType
from prefect.events import DeploymentEventTrigger

from reasonloop.flows.retrain import (
    CHECKPOINT_READY,
    DEFAULT_TABLES,
    RETRAIN_DUE,
    check_retrain,
    evaluate_and_promote,
    retrain,
    retrain_config,
    store_resource_id,
    synthesize_and_check,
)  # fmt: skip

# Runs load the flow from the installed package by module path, not from a file of the working
# directory (which may be a project with its own `flows/`).
MODULE = EntrypointType.MODULE_PATH
DEPLOYMENT_NAMES = ("synthesize", "watch", "retrain", "evaluate-and-promote")


@dataclass(frozen=True)
class ServeSettings:
    root: str
    base_model: str  # served until a checkpoint is promoted
    cron: str = "0 * * * *"  # synthesis schedule
    synth_n: int = 2000  # problems per scheduled synthesis run
    watch_seconds: int = 300  # threshold check interval; 0: no watch deployment (synthesis checks after it writes)
    threshold: int = 1000  # new rows that make a retrain due
    tables: tuple[str, ...] = tuple(DEFAULT_TABLES)
    retrain: dict[str, Any] = field(default_factory=retrain_config)
    eval_source: str = "veritime"
    eval_limit: int = 512
    max_new_tokens: int = 48


def build_deployments(s: ServeSettings) -> list:
    """RunnerDeployments for `prefect.serve` (names, schedules, triggers, limits as documented above)."""
    tables = list(s.tables)
    resource = {"prefect.resource.id": store_resource_id(s.root)}
    synth = synthesize_and_check.to_deployment(
        entrypoint_type=MODULE,
        name="synthesize", cron=s.cron,
        parameters={"root": s.root, "n": s.synth_n, "threshold": s.threshold, "tables": tables},
    )  # fmt: skip
    retrain_deployment = retrain.to_deployment(
        entrypoint_type=MODULE,
        name="retrain",
        parameters={"root": s.root, "run_id": "retrain-manual", "base_model": s.base_model, "config": s.retrain,
                    "tables": tables},
        triggers=[DeploymentEventTrigger(
            name="retrain when new data crossed the threshold", expect={RETRAIN_DUE}, match=resource,
            parameters={"run_id": "{{ event.payload.run_id }}"},
        )],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
    )  # fmt: skip
    promote = evaluate_and_promote.to_deployment(
        entrypoint_type=MODULE,
        name="evaluate-and-promote",
        parameters={"root": s.root, "run_id": "", "checkpoint": "", "step": 0, "base_model": s.base_model,
                    "source": s.eval_source, "limit": s.eval_limit, "max_new_tokens": s.max_new_tokens,
                    "threshold": s.threshold, "tables": tables},
        triggers=[DeploymentEventTrigger(
            name="evaluate each new checkpoint", expect={CHECKPOINT_READY}, match=resource,
            parameters={"run_id": "{{ event.payload.run_id }}", "checkpoint": "{{ event.payload.checkpoint }}",
                        "step": "{{ event.payload.step }}"},
        )],
        concurrency_limit=1,
    )  # fmt: skip
    if s.watch_seconds <= 0:
        return [synth, retrain_deployment, promote]
    watch = check_retrain.to_deployment(
        entrypoint_type=MODULE,
        name="watch", interval=timedelta(seconds=s.watch_seconds),
        parameters={"root": s.root, "threshold": s.threshold, "tables": tables},
    )  # fmt: skip
    return [synth, watch, retrain_deployment, promote]
