"""Contextual Rollout Bandits vs uniform replay vs no replay, at the same rollout budget (SPECS §8,
issue 18).

    python benchmarks/cbs_bench.py [--model char|bpe] [--seeds 0 1 2] [--steps 200] [--sft-steps 400]

One SFT'd arith start (as rltr_bench.py), then GRPO per seed and arm, 8 prompts x 8 samples per
step (every arm generates the same sequences), T 0.7, lr 2e-5:
    none      this step's groups only
    uniform   plus 4 earlier groups (32 rows) drawn uniformly within 2 steps (--replay-groups 4)
    cbs       plus the 32 best-scored stale rows within 2 steps, all fresh rows kept (--scheduler cbs)
    cbs-k4    as cbs, keeping the 4 best of each fresh group (intra-group selection)
Reported: greedy accuracy on 512 held-out problems, steps until the 10-step moving average of the
training reward reaches the `none` arm's final 20-step mean (same seed), rows trained per step and
wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks.rl_arms import arith_start, mean_sd, train_arm
from benchmarks.rltr_bench import reward_curve, steps_to
from reasonloop.storage import ReplayStore
from reasonloop.trainers.run import evaluate_model

ARMS = {
    "none": {},
    "uniform": {"replay_groups": 4, "max_staleness": 2},
    "cbs": {"scheduler": "cbs", "cbs_replay_rows": 32, "max_staleness": 2},
    "cbs-k4": {"scheduler": "cbs", "cbs_replay_rows": 32, "cbs_keep": 4, "max_staleness": 2},
}


def run_arm(store: ReplayStore, arm: str, start: Path, seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    run_id = f"{arm}-s{seed}"
    final, wall = train_arm(store, start, run_id, args.steps, seed, tmp, **ARMS[arm])
    greedy = evaluate_model(store, final, source="arith", limit=args.limit, max_new_tokens=40, pass_k=0,
                            batch_size=512)["accuracy"]  # fmt: skip
    trained = store.query("SELECT count(*) AS n FROM consumed WHERE run_id = $r AND status = 'trained'",
                          {"r": run_id}).column("n")[0].as_py()  # fmt: skip
    return {
        "greedy": greedy,
        "curve": reward_curve(store, run_id),
        "wall_s": wall,
        "rows_per_step": trained / args.steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("char", "bpe"), default="char")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sft-steps", type=int, default=400)
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--limit", type=int, default=512)
    args = parser.parse_args()
    store, start, tmp = arith_start(args.model, args.sft_steps)
    before = evaluate_model(store, start, source="arith", limit=args.limit, max_new_tokens=40, pass_k=0)["accuracy"]
    print(f"start ({args.model}, {args.sft_steps} SFT steps): greedy {100 * before:.1f}%", flush=True)
    rows: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            rows[arm].append(run_arm(store, arm, start, seed, args, tmp))
        target = statistics.fmean(rows[args.arms[0]][-1]["curve"][-20:])
        for arm in args.arms:
            r = rows[arm][-1]
            r["steps_to_target"] = steps_to(r["curve"], target)
            print(f"seed {seed} {arm}: greedy {100 * r['greedy']:.1f}%, steps to {args.arms[0]}'s final reward "
                  f"{target:.3f}: {r['steps_to_target']}, {r['rows_per_step']:.0f} rows/step, {r['wall_s']:.0f} s",
                  flush=True)  # fmt: skip

    def stat(arm: str, key: str, scale: float = 100.0) -> str:
        return mean_sd([r[key] for r in rows[arm]], scale)

    print(f"\n| arm | greedy acc | steps to {args.arms[0]}'s final reward | rows trained / step | wall s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for arm in args.arms:
        print(f"| {arm} | {stat(arm, 'greedy')} | {stat(arm, 'steps_to_target', 1.0)} | "
              f"{stat(arm, 'rows_per_step', 1.0)} | {stat(arm, 'wall_s', 1.0)} |")  # fmt: skip


if __name__ == "__main__":
    main()
