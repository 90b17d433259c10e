"""Shared set-up for trainer tests: a store with arith problems, a tiny model, a scripted reward."""

from __future__ import annotations

from pathlib import Path

from reasonloop.storage import ReplayStore
from reasonloop.tasks.engines.base import Completion, SamplingParams
from reasonloop.tasks.models.precision import eos_token_ids
from reasonloop.tasks.recipes.arith import ArithConfig, generate
from reasonloop.tasks.recipes.chat import as_chat
from reasonloop.tasks.rewards import CompositeReward
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.logprobs import batched_logprobs
from reasonloop.trainers.policy import load_policy
from reasonloop.trainers.rl import RLTrainer


def digit_share(completions, **kwargs):
    """A TRL-style reward that varies within every group of a random model: share of digits."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def cli_options(config: dict) -> list[str]:
    """A config dict as `reasonloop train` options: {"group_size": 4} -> ["--group-size", "4"],
    {"fsdp": True} -> ["--fsdp"], {"fsdp": False} -> ["--no-fsdp"]."""
    out = []
    for key, value in config.items():
        flag = key.replace("_", "-")
        out += [f"--{flag}" if value else f"--no-{flag}"] if isinstance(value, bool) else [f"--{flag}", str(value)]
    return out


def arith_store(root: Path, n: int = 200, *, chat: bool = False) -> ReplayStore:
    """Arith problems and SFT samples; with `chat`, as conversations (for the chat-SFT'd BPE model)."""
    store = ReplayStore(root)
    problems, samples = generate(ArithConfig(n=n, max_digits=2, seed=0))
    if chat:
        problems, samples = as_chat(problems, samples)
    store.write("problems", problems)
    store.write("sft_samples", samples)
    return store


def make_trainer(
    model_dir: Path, store: ReplayStore, tmp: Path, *, scripted: bool = True, run_id: str = "t", **overrides
) -> RLTrainer:
    """An RL trainer as run_rl builds it (trainers/policy.py: the checkpoint's dtype, fp32 masters)."""
    settings = {
        "prompts_per_step": 4,
        "group_size": 6,
        "max_completion_length": 8,
        "weight_decay": 0.0,
        "seed": 0,
        "lr": 5e-5,
    }  # the tiny models learn at 5e-5 (the default, 1e-6, suits real models)
    config = TrainConfig(**{**settings, **overrides})
    reward = CompositeReward({"digits": 1.0}, functions={"digits": digit_share}) if scripted else None
    policy = load_policy(model_dir, config)
    return RLTrainer(
        config, model=policy.model, tokenizer=policy.tokenizer, store=store, run_id=run_id, output_dir=tmp / "ckpt",
        reward=reward, compute_dtype=policy.compute_dtype,
    )  # fmt: skip


class ScriptedTokens:
    """Scripted texts, tokenized by the policy's tokenizer, with the policy's own logprobs (an
    engine for completions a tiny model would not write: o1 ⊕ separator ⊕ o2)."""

    name = "scripted-tokens"
    accepts_token_ids = True

    def __init__(self, model, tokenizer, script) -> None:
        self.model, self.tokenizer, self.script = model, tokenizer, script
        self.eos = min(eos_token_ids(model, tokenizer))

    def generate(self, prompts, n: int, sampling: SamplingParams) -> list[Completion]:
        out, rows = [], []
        for index, prompt in enumerate(prompts):
            text = self.tokenizer.decode(prompt, skip_special_tokens=True)
            for i in range(n):
                completion = self.script(text, i)
                ids = self.tokenizer(completion, add_special_tokens=False)["input_ids"] + [self.eos]
                rows.append((list(prompt), ids))
                out.append(Completion(completion, ids, [], None, "stop", list(prompt), index))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos
        scored = batched_logprobs(
            self.model, [p for p, _ in rows], [c for _, c in rows], pad_id=pad, temperature=1.0, micro_batch=64
        )
        for k, c in enumerate(out):
            c.logprobs = scored.logprobs[k, : len(c.token_ids)].tolist()
        return out
