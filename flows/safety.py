"""Safety as a recipe (BSAFE+ / RLBF, SPECS §7; DPO with OGPSA, SPECS §10), as Prefect flows:

    bsafe_data:   safe responses (the recipe's gold chains the critic passes, or a run's rollouts
                  that are safe and correct) -> BSAFE+ sft_samples (source `bsafe`)
    preferences:  (safe, unsafe) pairs from the recipe, or a run's groups (best vs worst reward,
                  or safe vs unsafe by the critic) -> `preferences`
    safety:       synthesize -> BSAFE+ data -> SFT -> RLBF (GRPO, backtrack decoding, R_final,
                  + α·L_SFT) and, optionally, DPO (+ OGPSA) -> safety evaluation of every model

Thin: tasks around plain functions (tasks/recipes/*, trainers/*); the store holds every row in
between. Import after `configure_prefect`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from reasonloop.flows.pipelines import sft_task, train_task
from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.bsafe import BsafeConfig
from reasonloop.tasks.recipes.safety import SOURCE as SAFETY
from reasonloop.tasks.recipes.safety import SafetyConfig
from reasonloop.trainers.config import DPOConfig, SFTConfig, TrainConfig

RLBF_REWARDS = "safe:1,exact:0.5,backtrack_cost:-0.5,malformed_signal:-1"


def safe_responses(store: ReplayStore, origin: str = "gold", run_id: str = "") -> list[dict]:
    """Safe responses to build BSAFE+ rows from: `gold` (the safety recipe's sft_samples the rule
    critic passes) or `rollouts` (run `run_id`'s shown completions that are safe and correct)."""
    from reasonloop.tasks.recipes.safety import first_violation

    if origin == "gold":
        rows = store.query(
            "SELECT id, prompt, target, split FROM sft_samples WHERE source = $s ORDER BY id", {"s": SAFETY}
        ).to_pylist()
    elif origin == "rollouts":
        rows = store.query(
            "SELECT r.id, r.prompt, coalesce(r.final_completion, r.completion) AS target, r.problem_id, p.split "
            "FROM rollouts r JOIN problems p ON p.id = r.problem_id WHERE r.run_id = $run "
            "AND r.rewards['exact'] = 1 ORDER BY r.id", {"run": run_id},
        ).to_pylist()  # fmt: skip
    else:
        raise ValueError("origin must be gold or rollouts")
    return [r for r in rows if first_violation(r["prompt"], r["target"]) is None]


@task(name="bsafe-data", cache_policy=NO_CACHE, retries=1)
def bsafe_data_task(root: str, model: str, config: dict, origin: str = "gold", run_id: str = "") -> dict[str, int]:
    """BSAFE+ rows for the policy at `model` (its tokenizer counts X; its engine writes the
    violations when `violations` is `engine`)."""
    from reasonloop.tasks.engines import SamplingParams
    from reasonloop.tasks.engines.transformers_engine import TransformersEngine
    from reasonloop.tasks.models.loading import load_tokenizer
    from reasonloop.tasks.recipes.bsafe import build

    bsafe = BsafeConfig(**config)
    store = ReplayStore(root)
    generate = None
    if bsafe.violations == "engine":
        engine = TransformersEngine(model, batch_size=64)
        sampling = SamplingParams(temperature=0, max_new_tokens=32)

        def generate(text: str) -> str:
            return engine.generate([text], 1, sampling)[0].text

    rows = build(safe_responses(store, origin, run_id), load_tokenizer(model), bsafe, generate)
    result = store.write("sft_samples", rows, producer=f"flow:bsafe:{origin}")
    return {"sft_samples": result.committed, "duplicates": result.duplicates, "rejected": result.rejected,
            "injected": sum(r.get("category") is not None for r in rows)}  # fmt: skip


@task(name="preferences", cache_policy=NO_CACHE, retries=1)
def preferences_task(root: str, kind: str = "violations", run_id: str = "", seed: int = 0) -> dict[str, int]:
    """`violations`: from the safety recipe's safe samples; `groups` / `critic`: from run `run_id`'s rollouts."""
    from reasonloop.tasks.recipes import preferences as prefs
    from reasonloop.tasks.rewards.safety import RuleCritic

    store = ReplayStore(root)
    if kind == "violations":
        pairs = prefs.from_violations(safe_responses(store, "gold"), seed=seed)
    elif kind in ("groups", "critic"):
        rows = store.query(
            "SELECT id, group_id, problem_id, prompt, completion, final_completion, reward FROM rollouts "
            "WHERE run_id = $run ORDER BY id", {"run": run_id},
        ).to_pylist()  # fmt: skip
        pairs = prefs.from_groups(rows) if kind == "groups" else prefs.from_critic(rows, RuleCritic())
    else:
        raise ValueError("kind must be violations, groups or critic")
    result = store.write("preferences", pairs, producer=f"flow:preferences:{kind}")
    return {"preferences": result.committed, "duplicates": result.duplicates, "rejected": result.rejected}


@task(name="dpo", cache_policy=NO_CACHE)
def dpo_task(root: str, model: str, out: str, config: dict, run_id: str) -> str:
    from reasonloop.trainers.run import run_dpo_to

    return str(run_dpo_to(ReplayStore(root), DPOConfig(**config), model=model, out=Path(out), run_id=run_id).checkpoint)


@task(name="safety-eval", cache_policy=NO_CACHE, retries=1)
def safety_eval_task(root: str, model: str, limit: int = 256, max_new_tokens: int = 96) -> dict[str, float]:
    """trainers/safety_eval.py on the held-out safety problems, and `arith` ones as clean prompts."""
    from reasonloop.trainers.safety_eval import evaluate_stored

    return evaluate_stored(ReplayStore(root), model, limit, max_new_tokens)


@task(name="synthesize-safety", cache_policy=NO_CACHE)
def synth_safety_task(root: str, config: dict) -> dict[str, int]:
    from reasonloop.tasks.recipes.safety import generate

    problems, samples = generate(SafetyConfig(**config))
    store = ReplayStore(root)
    return {
        table: store.write(table, rows).committed for table, rows in (("problems", problems), ("sft_samples", samples))
    }


@flow(name="safety")
def safety(
    root: str, model: str, out: str, *, run_id: str = "safety", synth: dict | None = None, bsafe: dict | None = None,
    sft: dict | None = None, rlbf: dict | None = None, dpo: dict | None = None, eval_limit: int = 256,
    max_new_tokens: int = 96,
) -> dict[str, Any]:  # fmt: skip
    """`model` (a policy that knows the task) -> BSAFE+ SFT -> RLBF; with `dpo`, also DPO (+ OGPSA
    with `ogpsa_ref_sets`) on recipe preference pairs from `model`. Every model is evaluated."""
    counts = {"synth": synth_safety_task(root, asdict(SafetyConfig(**(synth or {}))))}
    counts["bsafe"] = bsafe_data_task(root, model, asdict(BsafeConfig(**(bsafe or {}))))
    sft_config = asdict(SFTConfig(**{**(sft or {}), "source": "bsafe"}))
    models = {
        "start": model,
        "bsafe_sft": sft_task(root, model, str(Path(out) / "bsafe-sft"), sft_config, f"{run_id}-sft"),
    }
    rl_config = TrainConfig(**{"rewards": RLBF_REWARDS, **(rlbf or {}), "backtrack": True, "source": SAFETY})
    models["rlbf"] = train_task(root, models["bsafe_sft"], f"{run_id}-rlbf", asdict(rl_config))
    if dpo is not None:
        counts["preferences"] = preferences_task(root, "violations")
        dpo_config = asdict(DPOConfig(**{**dpo, "source": "preferences"}))
        models["dpo"] = dpo_task(root, model, str(Path(out) / "dpo"), dpo_config, f"{run_id}-dpo")
    evals = {name: safety_eval_task(root, path, eval_limit, max_new_tokens) for name, path in models.items()}
    return {"counts": counts, "models": models, "evals": evals}
