"""Synthesis chunk tasks on a Ray cluster through prefect-ray's task runner: a local Ray head on
127.0.0.1 started here (stopped by PID), 20,000 VeriTime draws in 4 chunks give exactly the rows of
the thread-runner run, and a chunk whose Ray worker is killed mid-way is re-run without duplicates."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from reasonloop.flows.local_server import free_port
from reasonloop.flows.processes import stop_process, wait_for
from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.veritime import VeriTimeConfig

N, CHUNKS, BATCH = 20_000, 4, 200


def ray_worker_pids() -> list[int]:
    """Ray workers running a chunk task (Ray titles a busy worker `ray::<name>`; prefect-ray names
    the remote call after the Prefect task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith("ray::synthesize-veritime-chunk"):
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def ray_head(harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`ray start --head --block` in its own process group; its workers inherit the Prefect API URL,
    so task runs report to this session's server. Token authentication (Ray's default since 2.5x)
    with a token made here, given to the head and to this process's driver. Stopped by PID (the
    whole group) after the test."""
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray = str(Path(sys.executable).parent / "ray")
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value() or "", RAY_USAGE_STATS_ENABLED="0")
    log = open(tmp_path / "ray.log", "wb")  # closed below, after the process
    proc = subprocess.Popen(
        [ray, "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
         "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for("the Ray head", lambda: b"Ray runtime started" in (tmp_path / "ray.log").read_bytes(), timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc, timeout=10)  # the whole group: raylet, GCS, workers
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.poll() is not None


def committed_prompts(store: ReplayStore) -> set[str]:
    try:
        return set(store.query("SELECT prompt FROM problems").column("prompt").to_pylist())
    except Exception:  # nothing committed yet
        return set()


def prompts_of_each_chunk(config: dict) -> list[set[str]]:
    """The prompts only chunk i draws (prompts two chunks share would blur whose batch landed)."""
    from reasonloop.flows.synthesis import chunk_ranges
    from reasonloop.tasks.recipes.veritime import generate_range

    per_chunk = [{row["prompt"] for row in generate_range(VeriTimeConfig(**config), lo, hi)[0]}
                 for lo, hi in chunk_ranges(N, CHUNKS)]  # fmt: skip
    return [
        drawn - set().union(*(other for j, other in enumerate(per_chunk) if j != i))
        for i, drawn in enumerate(per_chunk)
    ]


def rows(store: ReplayStore, table: str) -> list[str]:
    return store.query(f"SELECT id FROM {table} ORDER BY id").column("id").to_pylist()


def test_ray_chunks_give_the_thread_runs_rows_and_a_killed_chunk_reruns(ray_head: str, tmp_path: Path) -> None:
    from reasonloop.flows.synthesis import run_chunked

    config = asdict(VeriTimeConfig(n=N, seed=5))
    threads = ReplayStore(tmp_path / "threads")
    by_threads = run_chunked(str(threads.root), config, chunks=CHUNKS, runner="threads", batch_rows=BATCH)
    assert by_threads["problems"] > 0.9 * N and by_threads["duplicates"] < 0.1 * N

    on_ray = ReplayStore(tmp_path / "ray")
    killed: list[int] = []
    done = threading.Event()

    chunk_prompts = prompts_of_each_chunk(config)

    def kill_one_mid_way() -> None:
        """Kill a busy worker only while every running chunk has committed some batches and not all:
        with two task slots (`--num-cpus 2`), two chunks mid-way means both busy workers are on one
        that has committed batches, whichever of them is killed."""
        while not done.is_set() and not killed:
            committed = committed_prompts(on_ray)
            mid_way = [drawn for drawn in chunk_prompts if 0 < len(drawn & committed) < len(drawn)]
            busy = ray_worker_pids()
            if len(mid_way) == 2 and busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_mid_way)
    killer.start()
    try:
        by_ray = run_chunked(str(on_ray.root), config, chunks=CHUNKS, runner=f"ray={ray_head}", batch_rows=BATCH)
    finally:
        done.set()
        killer.join()
    assert killed, "no Ray worker was killed: the test proved nothing about retries"
    for table in ("problems", "sft_samples"):
        ids = rows(on_ray, table)
        assert len(ids) == len(set(ids)), f"{table}: an id twice after the re-run"
        assert ids == rows(threads, table), f"{table}: Ray's rows differ from the threads' rows"
    assert by_ray["duplicates"] > by_threads["duplicates"], "the killed chunk's re-run found its committed batches"
