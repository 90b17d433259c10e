"""The Octopus recipe as one Prefect flow (SPECS §3):

    cold-start data (o1 from the policy, o2 from the gold chain or a teacher) -> SFT on it
    -> RL stage I (o2 only, KL on o1) -> RL stage II (o1 unmasked for cc/ww) -> evaluate both
       ends: first- and final-answer accuracy, w→c / c→w, and k forced corrections

Thin: each step is a task around a plain function (tasks/recipes/octopus_data.py,
trainers/run.py); the store holds every row in between. Import after `configure_prefect`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from reasonloop.flows.pipelines import evaluate_task, sft_task, train_task
from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.octopus_data import SOURCE, ColdStartConfig
from reasonloop.trainers.config import SFTConfig, TrainConfig


@task(name="octopus-cold-start", cache_policy=NO_CACHE, retries=1)
def cold_start_task(root: str, model: str, config: dict) -> dict[str, int]:
    """Cold-start samples from the policy at `model` (teacher: the recipe's gold chain)."""
    from reasonloop.tasks.engines.transformers_engine import TransformersEngine
    from reasonloop.tasks.recipes.octopus_data import cold_start

    engine = TransformersEngine(model, batch_size=256)
    return cold_start(ReplayStore(root), engine, engine.tokenizer, ColdStartConfig(**config))


@flow(name="octopus")
def octopus(
    root: str, model: str, out: str, *, run_id: str = "octopus", cold: dict | None = None, sft: dict | None = None,
    stage1: dict | None = None, stage2: dict | None = None, eval_limit: int = 512, max_new_tokens: int = 64,
    corrections: int = 1,
) -> dict:  # fmt: skip
    """Cold start -> SFT -> stage I -> stage II -> evaluation of the cold-start model and the
    final one. `stage1`/`stage2`: TrainConfig fields (algo and stage are set here)."""
    counts = cold_start_task(root, model, asdict(ColdStartConfig(**(cold or {}))))
    sft_config = asdict(SFTConfig(**{**(sft or {}), "source": SOURCE}))
    start = sft_task(root, model, str(Path(out) / "cold-start"), sft_config, f"{run_id}-sft")
    octopus_config = {"algo": "octopus"}
    first_config = TrainConfig(**{**(stage1 or {}), **octopus_config, "octopus_stage": 1})
    first = train_task(root, start, f"{run_id}-stage1", asdict(first_config))
    final_config = TrainConfig(**{**(stage2 or stage1 or {}), **octopus_config, "octopus_stage": 2})
    final = train_task(root, first, f"{run_id}-stage2", asdict(final_config))
    evals = {
        name: evaluate_task(root, path, "heldout", "", eval_limit, max_new_tokens, corrections=corrections)
        for name, path in (("cold_start", start), ("octopus", final))
    }
    return {"cold_start": counts, "sft": start, "stage1": first, "stage2": final, "evals": evals}
