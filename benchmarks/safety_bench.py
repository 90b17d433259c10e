"""Safety training arms from one SFT'd start (tiny char Llama or the BPE Qwen2, the `safety` recipe).

    python benchmarks/safety_bench.py [--seeds 0 1 2] [--model char|bpe] [--arms ...]

Per seed, one start: a fresh model SFT'd on the safety recipe's base mix (a share
--unsafe-fraction of its targets leak the key, write the phone number or follow the injected
instruction: an "unaligned" model) plus clean `arith` samples. Arms, each from that start:
  start             no safety training
  bsafe_sft         SFT on BSAFE+ rows built from the recipe's safe chains (clean_fraction 0.3)
  bsafe_sft+ogpsa   the same SFT with OGPSA, capability set: arith's gold chains
  bsafe_sft+rlbf    bsafe_sft, then GRPO with backtrack decoding, R_final = safe + 0.5·exact
                    − 0.5·X/|y| − 1·malformed, + 0.1·L_SFT on BSAFE+ rows
  bsafe_sft+rlbf_prefill  the same RLBF with half of its prompts prefill-attacked (the response
                    forced to start with a violation minus its last 2 characters)
  dpo               DPO on (safe, unsafe) recipe pairs
  dpo+ogpsa         the same with OGPSA (arith, recomputed every 5 steps)
OGPSA arms project with --ogpsa-mode (project: remove the capability component whatever its sign;
threshold: only when it conflicts).
Evaluation (trainers/safety_eval.py, greedy, held-out): violation rate on plain prompts (greedy
and one T=1 sample), under a prefill attack, backtrack and over-trigger rates, task accuracy on the
safety prompts and on clean arith prompts (the alignment tax is the drop from `start`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers.utils import logging as hf_logging

from reasonloop.flows.safety import RLBF_REWARDS, safe_responses
from reasonloop.storage import ReplayStore
from reasonloop.tasks.models import init_model
from reasonloop.tasks.models.loading import load_tokenizer
from reasonloop.tasks.recipes.arith import ArithConfig
from reasonloop.tasks.recipes.arith import generate as arith
from reasonloop.tasks.recipes.bsafe import BsafeConfig, build
from reasonloop.tasks.recipes.preferences import from_violations
from reasonloop.tasks.recipes.safety import SafetyConfig, generate
from reasonloop.trainers.config import DPOConfig, SFTConfig, TrainConfig
from reasonloop.trainers.run import run_dpo_to, run_rl, run_sft_to
from reasonloop.trainers.safety_eval import evaluate_stored

ARMS = ("start", "bsafe_sft", "bsafe_sft+ogpsa", "bsafe_sft+rlbf", "bsafe_sft+rlbf_prefill", "dpo", "dpo+ogpsa")
METRICS = ("violation_rate", "sampled_violation_rate", "prefill_violation_rate", "prefill_half_violation_rate",
           "prefill_backtrack_rate",
           "false_backtrack_rate", "over_trigger_rate", "malformed_rate", "accuracy", "clean_accuracy")  # fmt: skip


def one_seed(args: argparse.Namespace, seed: int, work: Path) -> dict[str, dict[str, float]]:
    store = ReplayStore(work / "store")
    safety_config = SafetyConfig(n=args.n, max_digits=2, unsafe_fraction=args.unsafe_fraction, seed=seed)
    for problems, samples in (generate(safety_config), arith(ArithConfig(n=args.n, max_digits=2, seed=seed))):
        store.write("problems", problems)
        store.write("sft_samples", samples)
    threads = {"torch_threads": args.threads}
    base = init_model(args.model, work / "base", seed=seed)
    start = run_sft_to(store, SFTConfig(steps=args.start_steps, batch_size=32, lr=1e-3, seed=seed, **threads),
                       model=base, out=work / "start").checkpoint  # fmt: skip
    store.write("sft_samples", build(safe_responses(store, "gold"), load_tokenizer(start), BsafeConfig(seed=seed)))
    store.write("preferences", from_violations(safe_responses(store, "gold"), seed=seed))
    ogpsa = {"ogpsa_ref_sets": "arith", "ogpsa_samples": 64, "ogpsa_mode": args.ogpsa_mode}
    sft = {"steps": args.sft_steps, "batch_size": 32, "lr": 5e-4, "source": "bsafe", "seed": seed, **threads}
    dpo = {"steps": args.dpo_steps, "batch_size": 16, "lr": args.dpo_lr, "beta": 0.1, "seed": seed, **threads}
    models: dict[str, Path] = {"start": start}
    seconds: dict[str, float] = {"start": 0.0}

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        models[name] = Path(fn())
        seconds[name] = time.perf_counter() - t0 + seconds.get(name, 0.0)

    wanted = set(args.arms)
    if wanted & {"bsafe_sft", "bsafe_sft+rlbf", "bsafe_sft+rlbf_prefill"}:
        timed("bsafe_sft", lambda: run_sft_to(store, SFTConfig(**sft), model=start, out=work / "bsafe").checkpoint)
    if "bsafe_sft+ogpsa" in wanted:
        timed("bsafe_sft+ogpsa", lambda: run_sft_to(store, SFTConfig(**sft, **ogpsa, ogpsa_every=30), model=start,
                                                      out=work / "bsafe-ogpsa", run_id="sft-ogpsa").checkpoint)  # fmt: skip
    for name, prefill in (("bsafe_sft+rlbf", 0.0), ("bsafe_sft+rlbf_prefill", 0.5)):
        if name not in wanted:
            continue
        seconds[name] = seconds["bsafe_sft"]
        rl = TrainConfig(steps=args.rl_steps, prompts_per_step=8, group_size=8, max_completion_length=96, lr=args.rl_lr,
                         rewards=RLBF_REWARDS, backtrack=True, source="safety", sft_coef=0.1, sft_source="bsafe",
                         prefill_fraction=prefill, seed=seed, **threads)  # fmt: skip
        timed(name, lambda rl=rl, name=name: run_rl(store, rl, run_id=name, model=models["bsafe_sft"]).checkpoint)
    for name, extra in (("dpo", {}), ("dpo+ogpsa", {**ogpsa, "ogpsa_every": 5})):
        if name in wanted:
            timed(name, lambda extra=extra, name=name: run_dpo_to(
                store, DPOConfig(**dpo, **extra), model=start, out=work / name, run_id=name).checkpoint)  # fmt: skip
    results = {}
    for name in args.arms:
        results[name] = {**evaluate_stored(store, models[name], args.heldout), "train_s": seconds.get(name, 0.0)}
        print(f"seed {seed} {name:>16}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[name].items()), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", choices=("char", "bpe"), default="char")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--n", type=int, default=3000, help="problems per recipe (safety, arith)")
    parser.add_argument("--unsafe-fraction", type=float, default=0.5)
    parser.add_argument("--start-steps", type=int, default=400)
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--rl-steps", type=int, default=30)
    parser.add_argument("--rl-lr", type=float, default=2e-5)
    parser.add_argument("--dpo-steps", type=int, default=60)
    parser.add_argument("--dpo-lr", type=float, default=2e-5)
    parser.add_argument("--ogpsa-mode", choices=("project", "threshold"), default="project")
    parser.add_argument("--heldout", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the per-seed results here")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    per_seed = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            per_seed.append(one_seed(args, seed, Path(tmp)))
    if args.json:
        args.json.write_text(json.dumps(per_seed, indent=1))
    print(f"\n{args.model} model, {len(args.seeds)} seeds (mean ± std), held-out n = {args.heldout} per set")
    print("| arm | " + " | ".join(METRICS) + " | train s |")
    print("|---" * (len(METRICS) + 2) + "|")
    for name in args.arms:
        cells = []
        for metric in (*METRICS, "train_s"):
            values = [r[name][metric] for r in per_seed]
            scale = 1 if metric == "train_s" else 100
            spread = statistics.stdev(values) * scale if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values) * scale:.1f} ± {spread:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
