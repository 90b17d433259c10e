"""Inference strategies as Prefect flows over any problems table: Reinforcement Inference
(`reinforcement-inference`: greedy, a deliberate second attempt where the first was unsure)."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from reasonloop.flows.artifacts import artifact_key
from reasonloop.storage import ReplayStore
from reasonloop.tasks.inference.reinforcement import RIConfig


@task(name="reinforcement-inference", cache_policy=NO_CACHE, retries=1)
def ri_task(
    root: str, model: str, config: dict, split: str, source: str, limit: int, dev_split: str, dev_limit: int,
    reask_all: bool, engine: str, engine_url: str,
) -> dict:  # fmt: skip
    from reasonloop.trainers.ri_eval import evaluate_ri

    return evaluate_ri(
        ReplayStore(root), model, RIConfig(**config), split=split, source=source, limit=limit, dev_split=dev_split,
        dev_limit=dev_limit, reask_all=reask_all, engine=engine, engine_url=engine_url,
    )  # fmt: skip


def ri_markdown(model: str, result: dict) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    calls = result["calls_per_question"]
    rows = [f"| greedy | {pct(result['greedy_accuracy'])} | {calls['greedy']:.2f} |",
            f"| Reinforcement Inference | {pct(result['ri_accuracy'])} | {calls['ri']:.2f} |"]  # fmt: skip
    if "reask_all_accuracy" in result:
        rows.append(f"| re-ask all | {pct(result['reask_all_accuracy'])} | {calls['reask_all']:.2f} |")
    return "\n".join([
        f"# Reinforcement Inference: `{model}`", "",
        f"- {result['n']} questions; signal {result['signal']}, τ = {result['threshold']:.4f} "
        f"(dev trigger rate {pct(result['dev_trigger_rate'])} of {result['dev_n']}); "
        f"test trigger rate {pct(result['trigger_rate'])}", "",
        "| strategy | accuracy | calls / question |", "| --- | ---: | ---: |", *rows,
    ])  # fmt: skip


@flow(name="reinforcement-inference")
def reinforcement_inference(
    root: str, model: str, config: dict | None = None, split: str = "heldout", source: str = "", limit: int = 512,
    dev_split: str = "test", dev_limit: int = 256, reask_all: bool = True, engine: str = "transformers",
    engine_url: str = "",
) -> dict:  # fmt: skip
    """RI on a split's multiple-choice problems (`config`: RIConfig's fields), τ calibrated on
    `dev_split`; the accuracy / calls table as a markdown artifact, the full result returned."""
    result = ri_task(root, model, config or {}, split, source, limit, dev_split, dev_limit, reask_all, engine,
                     engine_url)  # fmt: skip
    create_markdown_artifact(ri_markdown(model, result), key=artifact_key("ri", source or "all", split),
                             description=f"Reinforcement Inference on {split}")  # fmt: skip
    return result
