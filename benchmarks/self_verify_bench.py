"""Learning to Self-Verify: DAPO with a verification step every k steps vs plain DAPO, at the same
number of generated sequences (SPECS §11.2, issue 18).

    python benchmarks/self_verify_bench.py [--model char|bpe] [--seeds 0 1 2] [--steps 180] [--verify-every 5]

One start per model: `--sft-steps` of SFT on arith's gold chains mixed 1:1 with verification rows in
the `short` template (tasks/recipes/self_verify.py warm_start_rows: gold chains -> #Yes, chains with
a corrupted answer -> #No), so the tiny model can write a verdict at all. Then per seed, from that
start: plain DAPO for `--steps` steps, and DAPO with `--verify-every` k (after every k solving steps
one verification step on the policy's own recent responses: the same 8 x 8 sequences per step, so
the verifying arm spends 1/(k+1) of its sequences judging instead of solving). Both evaluated on
512 held-out problems by trainers/verify_eval.py: greedy solve accuracy; over 4 samples at T 0.7
the first-sample, majority-vote and self-verified best-of-4 accuracy; verification accuracy on the
policy's own samples (plain and balanced over right/wrong) and its Yes rate.
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

from transformers.utils import logging as hf_logging

from benchmarks.learning import recipe_rows, sft
from reasonloop.storage import ReplayStore
from reasonloop.storage.samplers import sft_rows
from reasonloop.tasks.models import init_model
from reasonloop.tasks.recipes.self_verify import warm_start_rows
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.policy import load_policy
from reasonloop.trainers.rl import RLTrainer
from reasonloop.trainers.verify_eval import evaluate_self_verify

KEYS = ("solve_accuracy", "first_sample_accuracy", "majority_accuracy", "verified_best_of_n_accuracy",
        "verify_accuracy", "verify_balanced_accuracy", "yes_rate")  # fmt: skip


def evaluate(store: ReplayStore, model: Path, limit: int) -> dict:
    return evaluate_self_verify(store, model, n=4, source="arith", limit=limit, template="short", max_new_tokens=40)


def run_arm(store: ReplayStore, arm: str, start: Path, seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    run_id = f"{arm}-s{seed}"
    config = TrainConfig(
        algo="dapo", steps=args.steps, prompts_per_step=8, group_size=8, lr=2e-5, max_completion_length=40, seed=seed,
        rewards="exact", source="arith", torch_threads=0, temperature=0.7,
        verify_every=args.verify_every if arm == "verify" else 0, verify_template="short",
    )  # fmt: skip
    policy = load_policy(start, config)
    trainer = RLTrainer(config, model=policy.model, tokenizer=policy.tokenizer, store=store, run_id=run_id,
                        output_dir=tmp / run_id, compute_dtype=policy.compute_dtype)  # fmt: skip
    began = time.perf_counter()
    trainer.train(args.steps)
    wall = time.perf_counter() - began
    used = store.query(
        "SELECT count(*) FILTER (WHERE stage = 'single') AS solve, count(*) FILTER (WHERE stage = 'verify') AS verify "
        "FROM rollouts WHERE run_id = $r", {"r": run_id},
    ).to_pylist()[0]  # fmt: skip
    out = evaluate(store, trainer.output_dir / f"checkpoint-{args.steps:06d}", args.limit)
    return {**out, "wall_s": wall, "solve_sequences": used["solve"], "verify_sequences": used["verify"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("char", "bpe"), default="char")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=180)
    parser.add_argument("--verify-every", type=int, default=5)
    parser.add_argument("--sft-steps", type=int, default=400)
    parser.add_argument("--limit", type=int, default=512)
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp())
    store = ReplayStore(tmp / "store")
    problems, samples = recipe_rows("arith", chat=args.model == "bpe")
    store.write("problems", problems)
    store.write("sft_samples", samples)
    gold = sft_rows(store, "train", "arith")
    mixed = gold + warm_start_rows(gold, "short", seed=0)  # (chat rows: the warm-start rows are plain prompts)
    start = sft(init_model(args.model, tmp / "base", seed=0), tmp / "start", mixed, args.sft_steps, 1e-3)
    first = evaluate(store, start, args.limit)
    print(f"start ({args.model}, {args.sft_steps} SFT steps): " + ", ".join(f"{k} {100 * first[k]:.1f}" for k in KEYS))
    rows: dict[str, list[dict]] = {"plain": [], "verify": []}
    for seed in args.seeds:
        for arm in rows:
            r = run_arm(store, arm, start, seed, args, tmp)
            rows[arm].append(r)
            print(f"seed {seed} {arm}: " + ", ".join(f"{k} {100 * r[k]:.1f}" for k in KEYS) +
                  f"; sequences solve {r['solve_sequences']} verify {r['verify_sequences']}; {r['wall_s']:.0f} s",
                  flush=True)  # fmt: skip
    print("\n| arm | " + " | ".join(KEYS) + " | solve / verify sequences |")
    print("| --- |" + " ---: |" * (len(KEYS) + 1))
    for arm, results in rows.items():
        cells = []
        for k in KEYS:
            values = [r[k] for r in results]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f}")
        seqs = f"{results[0]['solve_sequences']} / {results[0]['verify_sequences']}"
        print(f"| {arm} | " + " | ".join(cells) + f" | {seqs} |")


if __name__ == "__main__":
    main()
