"""Processes that reasonloop starts (servers, serve runners, trainers, rollout workers): each in its
own process group, stopped by PID — SIGTERM, then SIGKILL — whatever happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def spawn_cli(
    args: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None,
    launcher: tuple[str, ...] = (),
) -> subprocess.Popen:  # fmt: skip
    """`python -m reasonloop.flows.cli ARGS` (the `reasonloop` command) in a new process group, output
    appended to `log`. `launcher`: python options before it, e.g. `-m torch.distributed.run
    --nproc_per_node 2` (torchrun's workers are in the group too, so stop_process stops them all)."""
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, *launcher, "-m", "reasonloop.flows.cli", *args], env=env, cwd=cwd, stdout=fh,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def torchrun(nproc: int, port: int) -> tuple[str, ...]:
    """`spawn_cli`'s launcher for `nproc` torchrun processes on this host (rendezvous on 127.0.0.1)."""
    return ("-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(port))  # fmt: skip


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the process group (background Prefect processes ignore SIGINT), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for(what: str, check: Callable[[], Any], timeout: float = 240.0, every: float = 0.3) -> Any:
    """Poll `check` until it returns something truthy (returned); TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
