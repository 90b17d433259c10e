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
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks.rl_arms import arith_start, mean_sd, train_arm
from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.self_verify import warm_start_rows
from reasonloop.trainers.verify_eval import evaluate_self_verify

KEYS = ("solve_accuracy", "first_sample_accuracy", "majority_accuracy", "verified_best_of_n_accuracy",
        "verify_accuracy", "verify_balanced_accuracy", "yes_rate")  # fmt: skip


def evaluate(store: ReplayStore, model: Path, limit: int) -> dict:
    return evaluate_self_verify(store, model, n=4, source="arith", limit=limit, template="short", max_new_tokens=40)


def run_arm(store: ReplayStore, arm: str, start: Path, seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    run_id = f"{arm}-s{seed}"
    final, wall = train_arm(store, start, run_id, args.steps, seed, tmp, algo="dapo", verify_template="short",
                            verify_every=args.verify_every if arm == "verify" else 0)  # fmt: skip
    used = store.query(
        "SELECT count(*) FILTER (WHERE stage = 'single') AS solve, count(*) FILTER (WHERE stage = 'verify') AS verify "
        "FROM rollouts WHERE run_id = $r", {"r": run_id},
    ).to_pylist()[0]  # fmt: skip
    out = evaluate(store, final, args.limit)
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
    store, start, tmp = arith_start(args.model, args.sft_steps, lambda gold: warm_start_rows(gold, "short", seed=0))
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
        cells = [mean_sd([r[k] for r in results]) for k in KEYS]
        seqs = f"{results[0]['solve_sequences']} / {results[0]['verify_sequences']}"
        print(f"| {arm} | " + " | ".join(cells) + f" | {seqs} |")


if __name__ == "__main__":
    main()
