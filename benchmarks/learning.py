"""Does RL through the store teach the tiny model? GRPO vs iGRPO at a matched rollout budget.

    python benchmarks/learning.py [--steps 300] [--seeds 0 1 2] [--sft-steps 300]

One briefly SFT'd tiny model (character Llama, arith with 1-3 digit operands) is the start of
every arm. Per seed: GRPO with 8 samples per prompt, and iGRPO with 4 drafts + 4 refinements
(8 generated sequences per prompt: the same budget), 8 prompts per step, lr 5e-5, exact reward.
Greedy accuracy on 512 fixed held-out problems (split from training by prompt hash) before and
after; tokens generated (every sequence, drafts included, read from the store) and wall time.
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

from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from reasonloop.storage import ReplayStore
from reasonloop.tasks.engines.transformers_engine import TransformersEngine
from reasonloop.tasks.models.tiny import init_tiny_model
from reasonloop.tasks.recipes.arith import ArithConfig, generate
from reasonloop.trainers.config import SFTConfig, TrainConfig
from reasonloop.trainers.evaluate import greedy_accuracy
from reasonloop.trainers.rl import RLTrainer
from reasonloop.trainers.sft import run_sft

MAX_NEW = 40  # a 3-digit sum takes ~30 characters of steps: leave room


def evaluate(model_dir: Path, heldout: list[dict]):
    engine = TransformersEngine(model_dir, batch_size=512)
    return greedy_accuracy(engine, heldout, max_new_tokens=MAX_NEW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--temperature", type=float, default=1.0, help="rollout sampling temperature")
    parser.add_argument("--algos", nargs="+", default=["grpo", "igrpo"], help="grpo, igrpo, igrpo+drafts")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp())
    store = ReplayStore(tmp / "store")
    problems, samples = generate(ArithConfig(n=8000, min_digits=1, max_digits=3, heldout_percent=10, seed=0))
    store.write("problems", problems)
    heldout = sorted((p for p in problems if p["split"] == "heldout"), key=lambda p: p["prompt"])[:512]
    assert len(heldout) == 512 and not {p["prompt"] for p in heldout} & {
        s["prompt"] for s in samples if s["split"] == "train"
    }

    base = init_tiny_model(tmp / "base", seed=0)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    start = time.perf_counter()
    train_samples = [s for s in samples if s["split"] == "train"]
    run_sft(
        SFTConfig(steps=args.sft_steps, batch_size=32, lr=1e-3, seed=0),
        model=model,
        tokenizer=tokenizer,
        samples=train_samples,
    )
    sft_dir = tmp / "sft"
    model.save_pretrained(sft_dir)
    tokenizer.save_pretrained(sft_dir)
    before = evaluate(sft_dir, heldout)
    sft_s = time.perf_counter() - start
    print(f"base {evaluate(base, heldout)}; after {args.sft_steps} SFT steps ({sft_s:.0f}s): {before}")

    results: dict[str, list] = {algo: [] for algo in args.algos}
    for seed in args.seeds:
        for algo in args.algos:
            run_id = f"{algo.replace('+', '-')}-s{seed}"
            config = TrainConfig(
                algo=algo.split("+")[0], igrpo_train_drafts=algo.endswith("+drafts"), steps=args.steps,
                prompts_per_step=8, group_size=8, igrpo_drafts=4, lr=args.lr, max_completion_length=MAX_NEW,
                seed=seed, rewards="exact", torch_threads=0, temperature=args.temperature,
            )  # fmt: skip
            policy, tok = AutoModelForCausalLM.from_pretrained(sft_dir), AutoTokenizer.from_pretrained(sft_dir)
            trainer = RLTrainer(
                config, model=policy, tokenizer=tok, store=store, run_id=run_id, output_dir=tmp / run_id
            )
            start = time.perf_counter()
            trainer.train(args.steps)
            wall = time.perf_counter() - start
            after = evaluate(trainer.output_dir / f"checkpoint-{args.steps:06d}", heldout)
            tokens = store.query(
                "SELECT sum(len(completion_ids)) AS t, count(*) AS n FROM rollouts WHERE run_id = $r", {"r": run_id}
            ).to_pylist()[0]
            extra = ""
            if algo.startswith("igrpo"):
                gap = store.query(
                    "SELECT avg(metrics['igrpo/refine_minus_draft']) AS g FROM train_metrics WHERE run_id = $r",
                    {"r": run_id},
                ).to_pylist()[0]["g"]
                extra = f", mean refine-minus-draft reward {gap:+.3f}"
            results[algo].append(after.accuracy)
            print(
                f"{run_id}: {before} -> {after}; {tokens['n']} sequences, {tokens['t']} tokens, {wall:.0f}s{extra}",
                flush=True,
            )
    for algo, accs in results.items():
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        mean = 100 * statistics.mean(accs)
        print(f"{algo}: mean held-out accuracy {mean:.1f}% (sd {100 * spread:.1f} over {len(accs)} seeds) "
              f"vs SFT start {100 * before.accuracy:.1f}%")  # fmt: skip


if __name__ == "__main__":
    main()
