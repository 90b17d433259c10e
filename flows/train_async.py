"""`train_async`: the async trainer and N rollout workers as processes, watched by a Prefect flow.

The flow starts `reasonloop train --async` and `reasonloop rollout-worker` processes (each in its
own process group), restarts a worker that dies (up to `max_restarts` in all) and resumes a trainer
that dies (from its last checkpoint, same budget), and stops every process by PID when the trainer
finishes or the flow fails. The PIDs are written to `<output_dir>/processes.json` for operators.
Training itself is one process, not a task per step: Prefect watches, it is not in the loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from reasonloop.flows.processes import spawn_cli, stop_process
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.step_utils import resolve_device


def _options(config: TrainConfig) -> list[str]:
    """TrainConfig as `reasonloop train` options (the CLI is generated from the same fields)."""
    out = []
    for f in fields(TrainConfig):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + f.name.replace("_", "-"))
        else:
            out += [flag, str(value)]
    return out


@flow(name="train_async")
def train_async(
    root: str, model: str, run_id: str, config: dict[str, Any] | None = None, workers: int = 1,
    rounds_per_version: int = 1, max_restarts: int = 3, poll_s: float = 0.5, output_dir: str = "",
) -> dict[str, Any]:  # fmt: skip
    """Train `run_id` asynchronously; returns the final checkpoint, restarts and process exit codes."""
    logger = get_run_logger()
    cfg = TrainConfig(**{**(config or {}), "async_rollouts": True})
    if not cfg.torch_threads and resolve_device(cfg.device).type == "cpu":
        # The trainer and the workers share the CPU: split its cores instead of letting every
        # process start one thread per core (oversubscribed, async ran at 0.69x of sync on 2 cores;
        # one thread each: 0.93x; benchmarks/RESULTS.md).
        cfg = replace(cfg, torch_threads=max(1, (os.cpu_count() or 1) // (workers + 1)))
    out = Path(output_dir) if output_dir else Path(root) / "checkpoints" / run_id
    out.mkdir(parents=True, exist_ok=True)
    common = ["--root", root]
    trainer_args = ["train", "--run-id", run_id, "--model", model, "--output-dir", str(out), *common, *_options(cfg)]
    trainer = spawn_cli(trainer_args, out / "trainer.log")

    def worker(i: int) -> subprocess.Popen:
        return spawn_cli(["rollout-worker", "--run-id", run_id, "--worker-id", str(i),
                       "--rounds-per-version", str(rounds_per_version), *common], out / f"worker-{i}.log")  # fmt: skip

    pool = {i: worker(i) for i in range(workers)}
    restarts = {"workers": 0, "trainer": 0}

    def record() -> None:
        pids = {"trainer": trainer.pid, "workers": {str(i): p.pid for i, p in pool.items()}, "restarts": restarts}
        (out / "processes.json").write_text(json.dumps(pids))

    record()
    try:
        while True:
            code = trainer.poll()
            if code == 0:
                break
            if code is not None:  # the trainer died: resume it from its last checkpoint
                if sum(restarts.values()) >= max_restarts:
                    raise RuntimeError(f"trainer exited with {code}; restart budget spent (see {out / 'trainer.log'})")
                restarts["trainer"] += 1
                logger.warning("trainer exited with %s; resuming from its last checkpoint", code)
                trainer = spawn_cli([*trainer_args, "--resume"], out / "trainer.log")
                record()
            for i, proc in list(pool.items()):
                code = proc.poll()
                if code is not None and code != 0:
                    if sum(restarts.values()) >= max_restarts:
                        raise RuntimeError(f"worker {i} exited with {code}; restart budget spent")
                    restarts["workers"] += 1
                    logger.warning("worker %s exited with %s; restarting it", i, code)
                    pool[i] = worker(i)
                    record()
            time.sleep(poll_s)
    finally:
        stop_process(trainer)
        for proc in pool.values():
            stop_process(proc)
    from reasonloop.flows.artifacts import training_summary
    from reasonloop.storage import ReplayStore
    from reasonloop.trainers.checkpoint import latest_checkpoint

    final = latest_checkpoint(out)
    training_summary(ReplayStore(root), run_id, str(final), [
        f"- async: {workers} rollout worker(s), staleness bound k = {cfg.max_staleness}, restarts {restarts}",
    ])  # fmt: skip
    return {"checkpoint": str(final), "restarts": restarts, "config": asdict(cfg)}
