"""iGRPO's refinement-format SFT as a Prefect flow (tasks/recipes/igrpo_refine.py):

    refinement data (drafts sampled from the policy, committed as rollouts; samples into
    `sft_samples`, source `igrpo_refine`) -> SFT on the refinement rows mixed with the recipe's
    own chains (so single-pass skill is kept) -> two-pass evaluation of the start and the result:
    single-pass accuracy, draft -> refine accuracy, w->c and c->w

The result says whether the policy learned to use a draft (refine - draft before vs after). Import
after `configure_prefect`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from reasonloop.flows.pipelines import evaluate_task, sft_task
from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.igrpo_refine import RefineDataConfig
from reasonloop.trainers.config import SFTConfig


@task(name="igrpo-refine-data", cache_policy=NO_CACHE, retries=1)
def refine_data_task(root: str, model: str, config: dict) -> dict[str, int]:
    """Refinement samples from the policy at `model`'s own drafts."""
    from reasonloop.tasks.engines.transformers_engine import TransformersEngine
    from reasonloop.tasks.recipes.igrpo_refine import refine_data

    settings = RefineDataConfig(**config)
    if settings.from_run:  # the drafts are stored rollouts: only the tokenizer (chat rendering) is needed
        from reasonloop.tasks.models.loading import load_tokenizer

        return refine_data(ReplayStore(root), None, load_tokenizer(model), settings)
    engine = TransformersEngine(model, batch_size=256)
    return refine_data(ReplayStore(root), engine, engine.tokenizer, settings)


@flow(name="igrpo-refine-sft")
def refine_sft(
    root: str, model: str, out: str, *, run_id: str = "igrpo-refine-sft", data: dict | None = None,
    sft: dict | None = None, eval_source: str = "", eval_limit: int = 512, max_new_tokens: int = 64,
) -> dict[str, Any]:  # fmt: skip
    """Refinement data -> SFT (`sft`: SFTConfig fields; its default source '' mixes every train
    sft_samples source) -> two-pass evaluation before and after."""
    data_config = RefineDataConfig(**{"max_new_tokens": max_new_tokens, **(data or {})})
    counts = refine_data_task(root, model, asdict(data_config))
    checkpoint = sft_task(root, model, out, asdict(SFTConfig(**(sft or {}))), run_id)
    refine = {"template": data_config.template, "request": data_config.request}
    evals = {
        name: evaluate_task(root, path, "heldout", eval_source, eval_limit, max_new_tokens, refine=refine)
        for name, path in (("start", model), ("refine_sft", checkpoint))
    }
    return {"data": counts, "checkpoint": checkpoint, "evals": evals}
