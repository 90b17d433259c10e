"""RLTR (transfer reward) vs RLVR at the same rollout budget (SPECS §11.1, issue 18).

    python benchmarks/rltr_bench.py [--model char|bpe] [--seeds 0 1 2] [--steps 200] [--sft-steps 400]

One SFT'd start per model (`--sft-steps` on arith's gold chains: a start with headroom), then GRPO
per seed with `exact` (RLVR) or `exact:1,transfer:λ` (RLTR; the receiver is the frozen start, greedy,
continuing a random prefix of every rollout): 8 prompts x 8 samples per step, T 0.7, lr 2e-5, the
same rollout budget for both (the receiver's calls are extra and counted). Reported per arm on 512
held-out problems: greedy accuracy, majority-vote accuracy over `--k` samples at T 0.7 (maj@k, the
paper's headline metric), steps until the 10-step moving average of the training `exact` reward
first reaches RLVR's final 20-step mean of the same seed (the paper: RLTR gets there in ~2.5x fewer
steps), receiver calls and tokens relative to the policy's generated tokens, and wall time.
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
from reasonloop.storage import ReplayStore
from reasonloop.tasks import prompts as prompt_policy
from reasonloop.tasks.engines import SamplingParams
from reasonloop.tasks.engines.transformers_engine import TransformersEngine
from reasonloop.trainers.eval_setup import eval_problems
from reasonloop.trainers.evaluate import majority_right
from reasonloop.trainers.run import evaluate_model


def majority_accuracy(store: ReplayStore, model: Path, k: int, limit: int, max_new: int, seed: int) -> float:
    """Share of held-out problems whose most common final answer over k samples (T 0.7) is right."""
    problems = eval_problems(store, "heldout", "arith", limit)
    engine = TransformersEngine(model, batch_size=512)
    rendered = [prompt_policy.render(engine.tokenizer, p["prompt"], p["messages"]) for p in problems]
    out = engine.generate(prompt_policy.engine_inputs(engine, engine.tokenizer, rendered), k,
                          SamplingParams(temperature=0.7, max_new_tokens=max_new, seed=seed))  # fmt: skip
    right = majority_right([c.final_text for c in out], k, [p["answer"] for p in problems])  # grouped by prompt
    return sum(right) / len(right)


def reward_curve(store: ReplayStore, run_id: str) -> list[float]:
    rows = store.query(
        "SELECT policy_version AS step, avg(rewards['exact']) AS r FROM rollouts WHERE run_id = $r "
        "GROUP BY step ORDER BY step", {"r": run_id},
    ).to_pylist()  # fmt: skip
    return [row["r"] for row in rows]


def steps_to(curve: list[float], target: float, window: int = 10) -> int | None:
    for end in range(window, len(curve) + 1):
        if statistics.fmean(curve[end - window : end]) >= target:
            return end
    return None


def run_arm(store: ReplayStore, arm: str, start: Path, seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    run_id = f"{arm}-s{seed}"
    rewards = "exact" if arm == "rlvr" else f"exact:1,transfer:{args.weight}"
    final, wall = train_arm(store, start, run_id, args.steps, seed, tmp, rewards=rewards)
    greedy = evaluate_model(store, final, source="arith", limit=args.limit, max_new_tokens=40, pass_k=0,
                            batch_size=512)["accuracy"]  # fmt: skip
    cost = store.query(
        "SELECT sum(len(completion_ids)) AS policy, sum(rewards['transfer/receiver_tokens']) AS receiver, "
        "sum(rewards['transfer/called']) AS calls, count(*) AS n FROM rollouts WHERE run_id = $r", {"r": run_id},
    ).to_pylist()[0]  # fmt: skip
    return {"greedy": greedy, "maj": majority_accuracy(store, final, args.k, args.limit, 40, seed),
            "curve": reward_curve(store, run_id), "wall_s": wall, "rollouts": cost["n"],
            "receiver_calls": cost["calls"] or 0.0,
            "receiver_token_share": float(cost["receiver"] or 0.0) / float(cost["policy"])}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("char", "bpe"), default="char")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sft-steps", type=int, default=400)
    parser.add_argument("--weight", type=float, default=1.0, help="λ, the transfer reward's weight")
    parser.add_argument("--k", type=int, default=8, help="samples per problem for maj@k")
    parser.add_argument("--limit", type=int, default=512)
    args = parser.parse_args()
    store, start, tmp = arith_start(args.model, args.sft_steps)
    before = evaluate_model(store, start, source="arith", limit=args.limit, max_new_tokens=40, pass_k=0)["accuracy"]
    print(f"start ({args.model}, {args.sft_steps} SFT steps): greedy {100 * before:.1f}%, "
          f"maj@{args.k} {100 * majority_accuracy(store, start, args.k, args.limit, 40, 0):.1f}%", flush=True)  # fmt: skip
    rows: dict[str, list[dict]] = {"rlvr": [], "rltr": []}
    for seed in args.seeds:
        for arm in rows:
            rows[arm].append(run_arm(store, arm, start, seed, args, tmp))
        target = statistics.fmean(rows["rlvr"][-1]["curve"][-20:])
        for arm in rows:
            rows[arm][-1]["steps_to_target"] = steps_to(rows[arm][-1]["curve"], target)
            r = rows[arm][-1]
            print(f"seed {seed} {arm}: greedy {100 * r['greedy']:.1f}% maj@{args.k} {100 * r['maj']:.1f}% "
                  f"steps to RLVR's final reward {target:.3f}: {r['steps_to_target']} ; receiver calls "
                  f"{r['receiver_calls']:.0f}, receiver tokens {100 * r['receiver_token_share']:.1f}% of the "
                  f"policy's; {r['wall_s']:.0f} s", flush=True)  # fmt: skip

    def stat(arm: str, key: str, scale: float = 100.0) -> str:
        return mean_sd([r[key] for r in rows[arm]], scale)

    print(f"\n| arm | greedy acc | maj@{args.k} | steps to RLVR's final reward | receiver tokens / policy's | wall s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for arm in rows:
        print(f"| {arm} | {stat(arm, 'greedy')} | {stat(arm, 'maj')} | {stat(arm, 'steps_to_target', 1.0)} | "
              f"{stat(arm, 'receiver_token_share')}% | {stat(arm, 'wall_s', 1.0)} |")  # fmt: skip


if __name__ == "__main__":
    main()
