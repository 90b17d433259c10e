"""Synthesis that calls a shared engine endpoint, at scale: sample k scored completions for stored
problems (pass-rate annotation, candidate solutions) in chunks, as Prefect tasks.

- Each chunk is a task tagged `engine:<endpoint>`: a Prefect tag concurrency limit on that tag
  (`prefect concurrency-limit create engine:<endpoint> 4`, or `engine_concurrency=` here) caps the
  calls every flow on the server makes to one endpoint at once.
- A chunk retries with exponential backoff and jitter (a flaky endpoint); its rows are committed
  when it succeeds, with ids derived from (run, problem, sample), so a rerun duplicates nothing.
- An error-rate breaker (flows/breaker.py) counts chunks that failed after their retries; past the
  configured fraction the flow stops submitting, lets the chunks in flight finish, and fails with
  BreakerOpen. What succeeded stays in the store.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from reasonloop.flows.breaker import BreakerConfig, BreakerOpen, ErrorRateBreaker
from reasonloop.storage import ReplayStore
from reasonloop.storage.samplers import split_filter


def engine_tag(engine: dict[str, Any]) -> str:
    """The concurrency tag of an engine spec: its endpoint (base_url) or model."""
    where = str(engine.get("base_url") or engine.get("model") or engine["name"])
    return "engine:" + re.sub(r"^https?://", "", where).rstrip("/")


@task(
    name="sample-chunk", cache_policy=NO_CACHE, retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=1), retry_jitter_factor=0.5,
)  # fmt: skip
def sample_chunk(
    root: str, engine: dict[str, Any], problem_ids: list[str], k: int, max_new_tokens: int, run_id: str, seed: int
) -> int:
    """k completions per problem from the engine, scored by exact answer, committed as rollouts."""
    from reasonloop.tasks.engines import SamplingParams, make_engine
    from reasonloop.tasks.rewards import get_reward
    from reasonloop.tasks.rollout_rows import rollout_rows

    store = ReplayStore(root)
    problems = store.query(
        "SELECT id, prompt, answer, source FROM problems WHERE list_contains($ids, id) ORDER BY id",
        {"ids": problem_ids},
    ).to_pylist()
    spec = dict(engine)
    out = make_engine(spec.pop("name"), **spec).generate(
        [p["prompt"] for p in problems], k, SamplingParams(max_new_tokens=max_new_tokens, seed=seed)
    )
    prompts = [p["prompt"] for p in problems]
    scores = get_reward("exact")(
        [prompts[c.prompt_index] for c in out], [c.text for c in out],
        answer=[problems[c.prompt_index]["answer"] for c in out],
    )  # fmt: skip
    rows = rollout_rows(
        out, prompts, run_id=run_id, policy_version=0, rewards=None, source=problems[0]["source"] if problems else "",
        problem_ids=[p["id"] for p in problems],
    )  # fmt: skip
    for row, score in zip(rows, scores, strict=True):
        row["reward"] = score
        row["rewards"] = {"exact": score} if score is not None else None
    result = store.write("rollouts", rows, run_id=run_id, producer=f"synth:{engine['name']}")
    if result.rejected:  # quarantined rows are kept with their reasons; the chunk counts as failed
        raise ValueError(f"{result.rejected} of {len(rows)} rows rejected (see the `rejected` table)")
    return result.committed


@flow(name="synthesize-with-engine")
def synthesize_with_engine(
    root: str, engine: dict[str, Any], run_id: str = "synth-engine", source: str = "", split: str = "train",
    limit: int = 256, chunk_size: int = 32, k: int = 4, max_new_tokens: int = 48, seed: int = 0,
    max_in_flight: int = 4, engine_concurrency: int = 0, max_failure_rate: float = 0.2, min_calls: int = 5,
    chunk_retries: int = 3,
) -> dict[str, Any]:  # fmt: skip
    """Sample `k` scored completions for up to `limit` problems, `chunk_size` per task (retried
    `chunk_retries` times with backoff); `engine_concurrency` > 0 sets the endpoint tag's limit."""
    tag = engine_tag(engine)
    if engine_concurrency:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            client.create_concurrency_limit(tag=tag, concurrency_limit=engine_concurrency)
    where, params = split_filter(split, source)
    ids = ReplayStore(root).query(
        f"SELECT id FROM problems WHERE {where} ORDER BY id LIMIT $n", {**params, "n": limit}
    ).column("id").to_pylist()  # fmt: skip
    if not ids:
        raise ValueError(f"no problems with split={split!r}" + (f" and source={source!r}" if source else ""))
    chunks = [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]
    breaker = ErrorRateBreaker(BreakerConfig(max_failure_rate, min_calls))
    chunk_task = sample_chunk.with_options(tags=[tag], retries=chunk_retries)
    pending, in_flight = deque(enumerate(chunks)), deque()
    committed, failed, error = 0, 0, None
    while in_flight or (pending and error is None):
        while pending and len(in_flight) < max_in_flight and error is None:
            i, chunk = pending.popleft()
            in_flight.append(chunk_task.submit(root, engine, chunk, k, max_new_tokens, run_id, seed + i))
        state = in_flight.popleft()
        state.wait()
        ok = state.state.is_completed()
        if ok:
            committed += state.result()
        else:
            failed += 1
        if error is None:
            try:
                breaker.record(ok)
            except BreakerOpen as exc:
                error = exc  # stop submitting; the chunks in flight finish and keep their rows
    summary = {"chunks": len(chunks), "failed": failed, "committed": committed, "calls": breaker.calls}
    if error is not None:
        raise BreakerOpen(f"{error} ({summary})")
    return summary
