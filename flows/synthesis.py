"""Synthesis fanned out in chunk tasks, on threads (default) or on a Ray cluster through
`prefect-ray`'s task runner (`--task-runner ray[=ADDRESS]`, `pip install 'reasonloop[ray]'`).

Each chunk draws its index range (tasks/recipes/veritime.py::generate_range: a draw's RNG is its
own, so the chunking does not change the rows), commits its rows to the store in batches of
`batch_rows`, and returns counts only: no data goes through Prefect results or Ray's object store.
A chunk that dies mid-way (an exception: Prefect retries it; its worker process killed: Ray
re-runs it) commits again from the start, and the batches it had committed are the same
content-addressed files, so the store takes them as duplicates: nothing twice, nothing lost.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.veritime import VeriTimeConfig


def task_runner(spec: str) -> Any:
    """`threads` | `ray` (a local cluster started for the flow) | `ray=ADDRESS` (e.g. 127.0.0.1:6379)."""
    if spec == "threads":
        return ThreadPoolTaskRunner()
    name, _, address = spec.partition("=")
    if name != "ray":
        raise ValueError(f"unknown task runner {spec!r}: threads, ray or ray=ADDRESS")
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as exc:
        raise ImportError("--task-runner ray needs: pip install 'reasonloop[ray]'") from exc
    return RayTaskRunner(address=address or None)


def chunk_ranges(n: int, chunks: int) -> list[tuple[int, int]]:
    size = -(-n // max(1, chunks))
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


@task(name="synthesize-veritime-chunk", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def veritime_chunk(root: str, config: dict, start: int, stop: int, batch_rows: int) -> dict[str, int]:
    from reasonloop.tasks.recipes.veritime import generate_range

    problems, samples = generate_range(VeriTimeConfig(**config), start, stop)
    store = ReplayStore(root)
    counts = {"problems": 0, "sft_samples": 0, "duplicates": 0, "rejected": 0}
    for lo in range(0, len(problems), batch_rows):
        for table, rows in (
            ("problems", problems[lo : lo + batch_rows]),
            ("sft_samples", samples[lo : lo + batch_rows]),
        ):
            result = store.write(table, rows)
            counts[table] += result.committed
            counts["duplicates"] += result.duplicates
            counts["rejected"] += result.rejected
    return counts


@flow(name="synth_veritime_chunked")
def synth_veritime_chunked(root: str, config: dict, chunks: int = 4, batch_rows: int = 2000) -> dict[str, int]:
    """VeriTime's `config["n"]` draws in `chunks` chunk tasks on the flow's task runner."""
    n = VeriTimeConfig(**config).n
    futures = [veritime_chunk.submit(root, config, lo, hi, batch_rows) for lo, hi in chunk_ranges(n, chunks)]
    total = {"problems": 0, "sft_samples": 0, "duplicates": 0, "rejected": 0}
    for future in futures:
        for key, value in future.result().items():
            total[key] += value
    return total


def run_chunked(root: str, config: dict, *, chunks: int, runner: str = "threads", batch_rows: int = 2000) -> dict:
    return synth_veritime_chunked.with_options(task_runner=task_runner(runner))(root, config, chunks, batch_rows)
