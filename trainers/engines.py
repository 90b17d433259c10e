"""The engine a trainer or rollout worker samples with (`--engine`), and how it gets new weights.

- transformers (default): the policy object itself, so it sees every update at once.
- vllm: colocated in this process, as TRL's colocate mode: built once from the policy's folder;
  after every optimizer step the policy's (LoRA: merged) weights are loaded into it, optionally
  with vLLM's sleep mode around the update (sleep level 2 after sampling, weights woken before the
  load, the KV cache before the next sampling) so training has the GPU memory in between.
- openai: an inference server (vLLM's OpenAI server or any compatible one). Prompts are tokenized
  here, chat template included, so the rollouts carry the exact ids the policy trains on. Weights
  reach a server through a file protocol: reasonloop publishes a weights folder (safetensors +
  config) and POSTs {"path", "version"} to `--engine-weight-sync` on the server; the server loads
  that folder before answering again. vLLM's server has no such endpoint of its own: run it behind a
  thin wrapper that implements this one (README "Scaling out"), or leave the path empty for a fixed
  server (a teacher), whose rollouts then say which version they were sampled for but not from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from reasonloop.tasks.engines.base import Engine
from reasonloop.tasks.models.loading import unwrap_peft
from reasonloop.trainers.config import TrainConfig


def policy_folder(model: Any) -> str:
    """Where the policy was loaded from (vLLM builds its own copy from it; LoRA: the base model)."""
    base = unwrap_peft(model)
    path = getattr(base, "name_or_path", "") or getattr(base.config, "_name_or_path", "")
    if not path:
        raise ValueError("--engine vllm needs a policy loaded from a folder or hub id")
    return str(path)


def reward_functions(config: TrainConfig, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Reward components configured beyond their registered default: `safe` with an engine critic,
    `rubric` / `unified` with the run's own judge scorer, `transfer` (RLTR) with its receiver (which needs the
    policy's `model`, for its starting folder, and `tokenizer`)."""
    from reasonloop.tasks.engines import make_engine

    out: dict[str, Any] = {}
    if "transfer" in config.reward_weights():
        out["transfer"] = transfer_reward(config, model, tokenizer)
    if config.critic == "engine":
        from reasonloop.tasks.rewards.safety import EngineCritic, safe_reward

        critic = make_engine("openai", base_url=config.critic_url, model=config.critic_model or "judge")
        out["safe"] = safe_reward(EngineCritic(critic))
    if config.judge == "engine" or {"rubric", "unified"} & set(config.reward_weights()):
        # A run's own scorer (also for the keyword judge): the registered rewards are process-wide
        # objects, whose judge counters would carry other scorings into this run's first step.
        from reasonloop.tasks.rewards.science import RubricReward

        scorer = judge_scorer(config)
        out |= {"rubric": RubricReward(scorer, unified=False), "unified": RubricReward(scorer, unified=True)}
    return out


def transfer_reward(config: TrainConfig, model: Any, tokenizer: Any) -> Any:
    """RLTR's reward with its frozen receiver: a transformers engine on `--transfer-receiver` (''
    = the folder the policy was loaded from, i.e. the starting policy), or a server."""
    from reasonloop.tasks.engines import make_engine
    from reasonloop.tasks.models.precision import eos_token_ids
    from reasonloop.tasks.rewards.transfer import TransferReward

    if tokenizer is None:
        raise ValueError("the transfer reward needs the policy's tokenizer")
    name = config.transfer_receiver or policy_folder(model)
    if config.transfer_url:
        receiver = make_engine("openai", base_url=config.transfer_url, model=name, tokenizer=tokenizer)
    else:
        device = str(next(model.parameters()).device) if model is not None else None
        receiver = make_engine("transformers", model=name, tokenizer=tokenizer, batch_size=256, device=device)
    return TransferReward(
        receiver, tokenizer, eos_ids=sorted(eos_token_ids(model, tokenizer)) if model is not None else (),
        max_new_tokens=config.transfer_max_new_tokens or config.max_completion_length,
        temperature=config.transfer_temperature, seed=config.seed,
    )  # fmt: skip


def judge_scorer(config: TrainConfig) -> Any:
    """The configured judge (`--judge keyword | engine`) behind a cached, batched, retried scorer."""
    from reasonloop.tasks.engines import make_engine
    from reasonloop.tasks.rewards.rubric import EngineJudge, KeywordJudge, RubricScorer

    if config.judge == "engine":
        return RubricScorer(
            EngineJudge(make_engine("openai", base_url=config.judge_url, model=config.judge_model or "judge"))
        )
    return RubricScorer(KeywordJudge())


def rollout_engine(
    config: TrainConfig, model: Any, tokenizer: Any, compute_dtype: torch.dtype | None, *, distributed: bool = False,
    processor: Any = None,
) -> Engine:  # fmt: skip
    """The engine named by `config.engine` for this policy (built by the engine registry); backtrack
    decoding (`config.backtrack`) is the sampler's, applied to what any engine returns."""
    from reasonloop.tasks.engines import make_engine

    if config.engine == "vllm":
        dtype = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}.get(
            compute_dtype or next(model.parameters()).dtype, "auto"
        )
        return make_engine(
            "vllm", model=policy_folder(model), colocate=True, distributed=distributed, dtype=dtype, seed=config.seed,
            gpu_memory_utilization=config.gpu_memory_utilization, tensor_parallel_size=config.tensor_parallel_size,
            enable_sleep_mode=config.enable_sleep_mode, max_model_len=config.max_prompt_length + config.max_completion_length,
        )  # fmt: skip
    if config.engine == "openai":
        if not config.engine_url:
            raise ValueError("--engine openai needs --engine-url (the server's base URL)")
        return make_engine(
            "openai", base_url=config.engine_url, model=config.engine_model or policy_folder(model),
            tokenizer=tokenizer, weight_sync_path=config.engine_weight_sync, seed=config.seed,
        )  # fmt: skip
    images = {"processor": processor} if processor is not None else {}  # a vision-language model's
    return make_engine(config.engine, model=model, tokenizer=tokenizer, batch_size=256, dtype=compute_dtype, **images)


def sync_weights(engine: Engine, model: Any, version: int, publish: Callable[[], Path]) -> None:
    """Give `engine` the policy's current weights (tagged `version`). `publish` writes a weights
    folder and returns it (for servers); the transformers engine samples from the policy itself."""
    from reasonloop.trainers.policy import merged_state_dict

    if hasattr(engine, "update_weights"):  # in-process (vLLM colocate)
        engine.update_weights(merged_state_dict(model))
    elif getattr(engine, "syncs_weights", False):  # a server: through a published folder
        engine.load_weights(publish(), version)
