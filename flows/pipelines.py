"""Prefect 3 flows: thin compositions of tasks that pass store paths and ids, never large data.

    synth_veritime -> sft -> train -> evaluate        (and rollout, for generation without training)

Each task wraps a plain function (tasks/, trainers/run.py); the training loop is one task, not a
task per step, so Prefect wraps work without sitting in the hot loop. Engine calls are retried;
synthesis, pure and expensive, is cached on its inputs (as long as the store still holds its
rows); tasks that receive models use no cache. Import after `flows.prefect_env.configure_prefect`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from reasonloop.flows.progress import bar
from reasonloop.schemas.common import config_fingerprint
from reasonloop.storage import ReplayStore
from reasonloop.storage.samplers import split_filter
from reasonloop.tasks.recipes.veritime import VeriTimeConfig
from reasonloop.trainers.config import SFTConfig, TrainConfig


@task(name="synthesize-veritime", cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def synth_veritime_task(root: str, config: dict) -> dict[str, int]:
    from reasonloop.tasks.recipes.veritime import generate

    problems, samples = generate(VeriTimeConfig(**config))
    store = ReplayStore(root)
    p, s = store.write("problems", problems), store.write("sft_samples", samples)
    return {"problems": p.committed + p.duplicates, "sft_samples": s.committed + s.duplicates, "rejected": p.rejected}


def synthesize(root: str, config: dict, *, return_state: bool = False) -> Any:
    """Run the synthesis task, cached on its inputs while the store still holds the rows it
    wrote: if they are gone (a wiped store), the cache is refreshed instead of trusted."""
    fingerprint = config_fingerprint(VeriTimeConfig(**config))
    present = ReplayStore(root).query("SELECT count(*) AS n FROM problems WHERE config_hash = $h", {"h": fingerprint})
    fresh = present.column("n")[0].as_py() == 0
    return synth_veritime_task.with_options(refresh_cache=fresh)(root, config, return_state=return_state)


@task(name="build-model", cache_policy=NO_CACHE)
def build_model_task(out: str, size: str, seed: int, tokenizer: str = "char") -> str:
    from reasonloop.tasks.models.bpe import init_bpe_model
    from reasonloop.tasks.models.tiny import init_tiny_model

    init = init_bpe_model if tokenizer == "bpe" else init_tiny_model
    return str(init(out, size=size, seed=seed))


@task(name="sft", cache_policy=NO_CACHE)
def sft_task(root: str, model: str, out: str, config: dict, run_id: str) -> str:
    from reasonloop.trainers.run import run_sft_to

    advance = bar("SFT warm-up", config["steps"])  # a no-op unless a command opened progress bars
    result = run_sft_to(
        ReplayStore(root), SFTConfig(**config), model=model, out=Path(out), run_id=run_id,
        on_step=lambda h: advance(h["step"], f"SFT loss {h['loss']:.3f}"),
    )  # fmt: skip
    return str(result.checkpoint)


@task(name="schedule-difficulty", cache_policy=NO_CACHE)
def schedule_task(root: str, model: str, source: str, pool: int, k: int, max_new_tokens: int, out: str) -> dict:
    """Difficulty scheduling: annotate `pool` training problems with k samples from `model`, keep
    the learnable (then promising) ones in taxonomy order, write the curriculum file for RL."""
    from reasonloop.tasks.engines.transformers_engine import TransformersEngine
    from reasonloop.tasks.scheduling.difficulty import write_curriculum

    where, params = split_filter("train", source)
    problems = (
        ReplayStore(root)
        .query(
            f"SELECT id, prompt, messages, answer, taxonomy, process_labels FROM problems WHERE {where} ORDER BY id "
            "LIMIT $n",
            {**params, "n": pool},
        )
        .to_pylist()
    )
    counts = write_curriculum(
        TransformersEngine(model, batch_size=256), problems, out, k=k, max_new_tokens=max_new_tokens
    )
    return {"path": out, **counts}


@task(name="train", cache_policy=NO_CACHE)
def train_task(
    root: str, model: str, run_id: str, config: dict, resume: bool = False, data_watermark: dict | None = None
) -> str:
    """The whole RL loop in one task (a task per step would put Prefect in the hot loop)."""
    from reasonloop.trainers.run import run_rl

    advance = bar(f"RL ({config['algo']} via the store)", config["steps"])
    result = run_rl(
        ReplayStore(root), TrainConfig(**config), run_id=run_id, model=model, resume=resume,
        on_step=lambda step, m: advance(step, f"RL reward {m['reward_mean']:.2f}"), data_watermark=data_watermark,
    )  # fmt: skip
    return str(result.checkpoint)


@task(name="rollout", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def rollout_task(root: str, model: str, run_id: str, config: dict) -> int:
    """Sample and commit rollouts for training problems without updating the policy."""
    from reasonloop.trainers.policy import load_policy
    from reasonloop.trainers.sampler import GroupSampler

    cfg = TrainConfig(**config)
    policy = load_policy(model, cfg)
    sampler = GroupSampler(cfg, model=policy.model, tokenizer=policy.tokenizer, store=ReplayStore(root), run_id=run_id,
                           compute_dtype=policy.compute_dtype)  # fmt: skip
    problems = sampler.pick_problems(0, "rollout", cfg.prompts_per_step)
    result, *_ = sampler.commit_groups(problems, cfg.group_size, 0, "single", salt="rollout")
    return result.committed + result.duplicates


@task(name="evaluate", cache_policy=NO_CACHE, retries=1)
def evaluate_task(
    root: str, model: str, split: str, source: str, limit: int, max_new_tokens: int, engine: str = "transformers",
    engine_url: str = "", corrections: int = 0, backtrack: bool = False, refine: dict | None = None,
) -> dict:  # fmt: skip
    """`refine`: iGRPO's second pass ({} for the defaults, or template / request)."""
    from reasonloop.trainers.run import evaluate_model

    second = {} if refine is None else {"refine": True, **{f"refine_{k}": v for k, v in refine.items()}}
    return evaluate_model(
        ReplayStore(root), model, split=split, source=source, limit=limit, max_new_tokens=max_new_tokens,
        engine=engine, engine_url=engine_url, corrections=corrections, backtrack=backtrack, **second,
    )  # fmt: skip


@flow(name="synth_veritime")
def synth_veritime(root: str, config: dict | None = None) -> dict[str, int]:
    """VeriTime problems and CoT targets into the store."""
    return synthesize(root, config or asdict(VeriTimeConfig()))


@flow(name="sft")
def sft(root: str, model: str, out: str, config: dict | None = None, run_id: str = "sft") -> str:
    """Supervised warm-up on the store's sft_samples; returns the model folder."""
    return sft_task(root, model, out, config or asdict(SFTConfig()), run_id)


@flow(name="rollout")
def rollout(root: str, model: str, run_id: str, config: dict | None = None) -> int:
    """Generate and commit one round of rollouts (engine calls retried)."""
    return rollout_task(root, model, run_id, config or asdict(TrainConfig()))


@flow(name="train")
def train(root: str, model: str, run_id: str, config: dict | None = None, resume: bool = False) -> str:
    """RL through the store; returns the final checkpoint folder (and leaves a summary artifact)."""
    from reasonloop.flows.artifacts import training_summary

    checkpoint = train_task(root, model, run_id, config or asdict(TrainConfig()), resume)
    training_summary(ReplayStore(root), run_id, checkpoint)
    return checkpoint


@flow(name="evaluate")
def evaluate(
    root: str, model: str, split: str = "heldout", source: str = "", limit: int = 512, max_new_tokens: int = 64,
    engine: str = "transformers", engine_url: str = "", corrections: int = 0, refine: dict | None = None,
) -> dict:  # fmt: skip
    """Greedy accuracy per task type and pass@k on a held-out split (`engine`: transformers, vllm,
    or openai with the server at `engine_url`); `corrections` > 0: Octopus's test-time scaling;
    `refine` ({} or template / request): iGRPO's draft -> refine second pass."""
    return evaluate_task(
        root, model, split, source, limit, max_new_tokens, engine, engine_url, corrections, refine=refine
    )
