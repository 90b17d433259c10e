"""reasonloop's RL step (store in the loop) vs TRL's GRPOTrainer, same model, same work.

    pip install -e '.[bench]'    # TRL is a benchmark dependency only
    python benchmarks/trl_compare.py [--steps 500] [--model char|bpe]

Both sides: the tiny local Llama (`--model bpe`: the Qwen2-shaped BPE test checkpoint, loaded in
float32, prompts as conversations through its chat template on both sides), 8 prompts x 4 generations x 32 new tokens (EOS suppressed on
both sides so every completion is 32 tokens), `dapo` loss (token-mean, ε 0.2/0.28), β = 0, fp32,
constant lr 5e-5, AdamW without weight decay, grad-norm clip 1.0, one update per generation, torch
1 thread, logging and checkpointing off, the same `exact` reward function on arith problems.
With β = 0 and one update per generation neither side runs an extra old-logprob forward pass.
reasonloop also commits every rollout to the Parquet store and reads the batch back from it.

The two sides are interleaved in blocks (`--block` steps of reasonloop, then as many of TRL, ...),
so drift in this shared machine's speed hits both: reasonloop's trainer runs on across blocks (its
store grows as in one long run), TRL's restarts each block (its first 3 steps of a block are left
out as warm-up). Reported: the median step time of each side over all blocks, their ratio, the
median ratio of the blocks, reasonloop's phases, and its first vs last 40 steps (the store's cost
must not grow with the run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.utils import logging as hf_logging

from reasonloop.storage import ReplayStore
from reasonloop.tasks.models.bpe import init_bpe_model
from reasonloop.tasks.models.tiny import init_tiny_model
from reasonloop.tasks.recipes.arith import ArithConfig, generate
from reasonloop.tasks.recipes.chat import as_chat
from reasonloop.tasks.rewards import get_reward
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.rl import RLTrainer

PROMPTS, GENERATIONS, NEW_TOKENS, LR = 8, 4, 32, 5e-5
PHASES = ("generate", "reward", "store_write", "store_read", "update")


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def run_trl(model_dir: Path, problems: list[dict], steps: int, out: Path) -> list[float]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    exact = get_reward("exact")

    def exact_reward(prompts, completions, answer, **kwargs):
        return exact(prompts, completions, answer=answer)

    config = GRPOConfig(
        output_dir=str(out), use_cpu=True, bf16=False, use_vllm=False,
        per_device_train_batch_size=PROMPTS * GENERATIONS,
        num_generations=GENERATIONS, max_completion_length=NEW_TOKENS, generation_kwargs={"min_new_tokens": NEW_TOKENS},
        loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0, num_iterations=1, learning_rate=LR,
        lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0, temperature=1.0, top_k=0, top_p=1.0,
        report_to="none", save_strategy="no", logging_strategy="no", gradient_checkpointing=False, max_steps=steps,
        seed=0, disable_dropout=True, dataloader_num_workers=0,
    )  # fmt: skip
    timer = StepTimer()
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), reward_funcs=exact_reward, args=config,
        train_dataset=Dataset.from_list([{"prompt": p.get("messages") or p["prompt"], "answer": p["answer"]} for p in problems]),
        processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[timer],
    )  # fmt: skip
    trainer.train()
    return timer.times


def reasonloop_trainer(model_dir: Path, root: Path, steps: int) -> RLTrainer:
    store = ReplayStore(root)
    config = TrainConfig(
        algo="grpo", loss="dapo", steps=steps, prompts_per_step=PROMPTS, group_size=GENERATIONS,
        max_completion_length=NEW_TOKENS, ignore_eos=True, lr=LR, weight_decay=0.0, max_grad_norm=1.0,
        rewards="exact", seed=0,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return RLTrainer(config, model=model, tokenizer=tokenizer, store=store, run_id="bench", output_dir=root / "ckpt")


def run_reasonloop(trainer: RLTrainer, steps: int) -> tuple[list[float], list[dict]]:
    times, phases = [], []
    for _ in range(steps):
        start = time.perf_counter()
        metrics = trainer.train_step()
        times.append(time.perf_counter() - start)
        phases.append({p: metrics.get(f"time/{p}", 0.0) for p in PHASES} | {"len": metrics["completion_length_mean"]})
    return times, phases


WINDOW = 40  # steps per measurement window: medians over many steps resist this machine's noise


def window(values: list, last: bool) -> list:
    return values[-WINDOW:] if last else values[5 : 5 + WINDOW]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--block", type=int, default=50, help="steps per side before switching")
    parser.add_argument("--model", choices=("char", "bpe"), default="char")
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp())
    init = init_bpe_model if args.model == "bpe" else init_tiny_model
    model_dir = init(tmp / "model", seed=0)
    problems, _ = generate(ArithConfig(n=4000, max_digits=3, seed=0))
    if args.model == "bpe":
        problems = as_chat(problems, [])[0]
    store = ReplayStore(tmp / "store")
    store.write("problems", problems)
    trainer = reasonloop_trainer(model_dir, tmp / "store", args.steps)
    ours, phases, theirs, block_ratios = [], [], [], []
    for b in range(max(1, args.steps // args.block)):
        times, parts = run_reasonloop(trainer, args.block)
        trl_times = run_trl(model_dir, problems, args.block, tmp / f"trl{b}")[3:]
        ours += times
        phases += parts
        theirs += trl_times
        block_ratios.append(statistics.median(times) / statistics.median(trl_times))
    print(
        f"{args.model} model, {PROMPTS} prompts x {GENERATIONS} generations x {NEW_TOKENS} tokens, dapo, beta 0, 1 thread, {len(ours)} "
        f"steps each, interleaved in blocks of {args.block}; completion length (ours) {phases[-1]['len']:.0f}, "
        f"TRL forced to {NEW_TOKENS}"
    )  # fmt: skip
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"all blocks: reasonloop {a * 1000:7.1f} ms   TRL {b * 1000:7.1f} ms   ratio {a / b:5.2f}   "
          f"block ratios {min(block_ratios):.2f}-{max(block_ratios):.2f} (median {statistics.median(block_ratios):.2f})")  # fmt: skip
    for label, last in ((f"steps 5-{4 + WINDOW}", False), (f"last {WINDOW} (to step {len(ours)})", True)):
        parts = {p: statistics.median(x[p] for x in window(phases, last)) for p in PHASES}
        print(f"{label:<26} reasonloop {statistics.median(window(ours, last)) * 1000:7.1f} ms; phases (ms): "
              + ", ".join(f"{p} {v * 1000:.1f}" for p, v in parts.items()))  # fmt: skip


if __name__ == "__main__":
    main()
