"""The CoTZero synthesis flow: scenes rendered, questions asked of their graphs, rows and images
committed to the store, in chunks of scenes Prefect runs as tasks.

    cotzero(root, config, chunks=4) -> {"problems", "sft_samples", "images", "rejected"}

Each chunk draws its own scene range (tasks/recipes/cotzero.py: scene i's RNG is (seed, i)), puts
its images into the store's media and commits its problems and targets, so a retried or rerun
chunk writes nothing twice (rows by id, images by hash). A summary artifact lists the rows per
level and split.
"""

from __future__ import annotations

import json
from collections import Counter

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from reasonloop.flows.synthesis import chunk_ranges
from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.cotzero import CoTZeroConfig


@task(name="synthesize-cotzero-chunk", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def cotzero_chunk(root: str, config: dict, start: int, stop: int) -> dict[str, int]:
    from reasonloop.tasks.recipes.cotzero import generate

    data = generate(CoTZeroConfig(**config), start, stop)
    store = ReplayStore(root)
    p = store.write("problems", data.problem_rows())
    s = store.write("sft_samples", data.samples)
    levels = Counter(f"level {json.loads(r['metadata'])['level']} {r['split']}" for r in data.problems)
    return {"problems": p.committed, "sft_samples": s.committed, "images": len(data.images),
            "rejected": p.rejected + s.rejected, **levels}  # fmt: skip


@flow(name="cotzero")
def cotzero(root: str, config: dict | None = None, chunks: int = 4) -> dict[str, int]:
    """Synthesize CoTZero rows (a CoTZeroConfig as a dict) into the store at `root`."""
    config = config or {}
    scenes = CoTZeroConfig(**config).scenes
    futures = [cotzero_chunk.submit(root, config, lo, hi) for lo, hi in chunk_ranges(scenes, chunks)]
    totals: Counter[str] = Counter()
    for future in futures:
        totals.update(future.result())
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(totals.items()))
    create_markdown_artifact(key="cotzero-synthesis", markdown=f"| what | rows |\n| --- | ---: |\n{rows}\n",
                             description="CoTZero rows committed, per level and split")  # fmt: skip
    return dict(totals)
