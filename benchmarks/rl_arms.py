"""What the RL comparison benchmarks share (rltr_bench, cbs_bench, self_verify_bench): an arith
store, an SFT'd start, one arm trained from it, and the per-arm table of mean ± sd over seeds."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from transformers.utils import logging as hf_logging

from benchmarks.learning import recipe_rows, sft
from reasonloop.storage import ReplayStore
from reasonloop.storage.samplers import sft_rows
from reasonloop.tasks.models import init_model
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.policy import load_policy
from reasonloop.trainers.rl import RLTrainer

# The arms' shared settings (learning.py's best for the tiny models): 8 prompts x 8 samples, T 0.7.
RL_DEFAULTS = {"prompts_per_step": 8, "group_size": 8, "lr": 2e-5, "max_completion_length": 40, "rewards": "exact",
               "source": "arith", "torch_threads": 0, "temperature": 0.7}  # fmt: skip


def arith_start(model: str, sft_steps: int, extra_rows=None) -> tuple[ReplayStore, Path, Path]:
    """(store with arith problems and targets, the SFT'd start, a scratch folder). `extra_rows(gold)`
    -> more SFT rows mixed into the start's data."""
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp())
    store = ReplayStore(tmp / "store")
    problems, samples = recipe_rows("arith", chat=model == "bpe")
    store.write("problems", problems)
    store.write("sft_samples", samples)
    gold = sft_rows(store, "train", "arith")
    rows = gold + (extra_rows(gold) if extra_rows else [])
    return store, sft(init_model(model, tmp / "base", seed=0), tmp / "start", rows, sft_steps, 1e-3), tmp


def train_arm(
    store: ReplayStore, start: Path, run_id: str, steps: int, seed: int, tmp: Path, **options
) -> tuple[Path, float]:
    """GRPO-family training from `start` (RL_DEFAULTS overridden by `options`): the final
    checkpoint and the wall time."""
    config = TrainConfig(**{**RL_DEFAULTS, "steps": steps, "seed": seed, **options})
    policy = load_policy(start, config)
    trainer = RLTrainer(config, model=policy.model, tokenizer=policy.tokenizer, store=store, run_id=run_id,
                        output_dir=tmp / run_id, compute_dtype=policy.compute_dtype, processor=policy.processor)  # fmt: skip
    began = time.perf_counter()
    trainer.train(steps)
    return trainer.output_dir / f"checkpoint-{steps:06d}", time.perf_counter() - began


def mean_sd(values: list[float | None], scale: float = 100.0) -> str:
    """'mean ± sd' of the values that exist (with how many, when some are missing), or 'never'."""
    known = [v for v in values if v is not None]
    if not known:
        return "never"
    sd = statistics.stdev(known) if len(known) > 1 else 0.0
    missing = f" ({len(known)}/{len(values)})" if len(known) < len(values) else ""
    return f"{scale * statistics.fmean(known):.1f} ± {scale * sd:.1f}{missing}"
