"""`reasonloop serve` and `reasonloop check-retrain`: the deployments on a Prefect server."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from reasonloop.flows.cli_store import RootOption

TablesOption = Annotated[
    list[str] | None, typer.Option("--table", help="Source table counted for the retrain threshold (repeatable).")
]


def _require_server() -> str:
    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        raise typer.BadParameter(
            "deployments need a Prefect server: start one with `prefect server start --host 127.0.0.1` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (Prefect's temporary per-process server runs no "
            "event triggers)",
            param_hint="PREFECT_API_URL",
        )
    return url


def serve(
    base_model: Annotated[str, typer.Option(help="Model served (and retrained) until a checkpoint is promoted.")],
    root: RootOption = None,
    cron: Annotated[str, typer.Option(help="Cron schedule of the synthesis deployment.")] = "0 * * * *",
    synth_n: Annotated[int, typer.Option(help="VeriTime problems per scheduled synthesis run.")] = 2000,
    threshold: Annotated[int, typer.Option(help="New source rows that make a retrain due.")] = 1000,
    tables: TablesOption = None,
    watch_seconds: Annotated[
        int, typer.Option(help="Interval of the threshold check (the watch deployment; 0: none).")
    ] = 300,
    retrain_steps: Annotated[int, typer.Option(help="RL steps per retrain.")] = 50,
    retrain_config: Annotated[
        str, typer.Option(help="JSON object of TrainConfig fields overriding the retrain defaults.")
    ] = "{}",
    eval_limit: Annotated[int, typer.Option(help="Held-out problems evaluated before a promotion.")] = 512,
    eval_source: Annotated[str, typer.Option(help="Source of the held-out problems ('' = all).")] = "veritime",
) -> None:
    """Register and serve the deployments (synthesize, watch, retrain, evaluate-and-promote) on the
    Prefect server at PREFECT_API_URL; runs execute in this process's subprocesses. Ctrl-C stops
    (and pauses the schedules)."""
    _require_server()
    from reasonloop.flows.prefect_env import configure_prefect
    from reasonloop.storage.layout import resolve_root

    store_root = resolve_root(root)
    configure_prefect(store_root)
    from prefect import serve as prefect_serve

    from reasonloop.flows.deployments import ServeSettings, build_deployments
    from reasonloop.flows.deployments import retrain_config as default_retrain

    config = {**default_retrain(), "steps": retrain_steps, **json.loads(retrain_config)}
    settings = ServeSettings(
        root=str(store_root), base_model=base_model, cron=cron, synth_n=synth_n, watch_seconds=watch_seconds,
        threshold=threshold, tables=tuple(tables or ("problems",)), retrain=config, eval_limit=eval_limit,
        eval_source=eval_source,
    )  # fmt: skip
    prefect_serve(*build_deployments(settings))


def check_retrain_command(
    root: RootOption = None,
    threshold: Annotated[int, typer.Option(help="New source rows that make a retrain due.")] = 1000,
    tables: TablesOption = None,
) -> None:
    """Count source rows committed since the newest trained checkpoint; emit the retrain event if due."""
    _require_server()
    from reasonloop.flows.prefect_env import configure_prefect
    from reasonloop.storage.layout import resolve_root

    store_root = resolve_root(root)
    configure_prefect(store_root)
    from reasonloop.flows.retrain import check_retrain

    result = check_retrain(str(store_root), threshold, list(tables or ["problems"]))
    typer.echo(json.dumps({k: result[k] for k in ("new_rows", "total", "due")} | {"run_id": result.get("run_id")}))
