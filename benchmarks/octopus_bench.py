"""Octopus vs GSPO at matched generated tokens, from one SFT start (tiny char Llama, arith).

    python benchmarks/octopus_bench.py [--seeds 0 1 2] [--octopus-steps 40] [--heldout 256] [--max-digits 2]

One SFT'd model is the start of every arm. Per seed:
  cold start: mixed cold-start data (o1: the SFT model's attempt, o2: the gold chain) -> SFT
  gspo              from the SFT model: GSPO, n = 8 per prompt
  octopus           from the cold start: stage I for half the budget, then stage II (n = 8 -> 16)
  octopus-no-stage1 from the cold start: stage II only
  octopus-stage1-only  (--arms) from the cold start: stage I for the whole budget
  octopus-no-masks  from the cold start: stage II with no selective masking — the reward-hacking
                    control (r' pays 1.0 for w->c and 0.75 for c->c: does the policy learn to be
                    wrong first on purpose and then "correct"?)
Budget: the octopus arm runs --octopus-steps steps; every other arm trains until it has generated
as many tokens (sampled ones only: recombined pairs are not generated). Evaluation on held-out
problems, greedy (`evaluate`): the first answer (single pass), the answer after one correction
(the policy's own o2; forced for a completion with none), the w->c / c->w rates between the two,
and the answer after one more forced correction (test-time scaling).
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

from reasonloop.storage import ReplayStore
from reasonloop.tasks.engines.base import SamplingParams
from reasonloop.tasks.engines.transformers_engine import TransformersEngine
from reasonloop.tasks.models.tiny import init_tiny_model
from reasonloop.tasks.recipes.arith import ArithConfig, generate
from reasonloop.tasks.recipes.octopus import SEPARATOR
from reasonloop.tasks.recipes.octopus_data import SOURCE, ColdStartConfig, cold_start
from reasonloop.tasks.rewards.self_correction import answer_verdicts
from reasonloop.trainers.config import SFTConfig, TrainConfig
from reasonloop.trainers.evaluate import with_corrections
from reasonloop.trainers.policy import load_policy
from reasonloop.trainers.rl import RLTrainer
from reasonloop.trainers.run import run_sft_to

MAX_NEW = 96  # o1 (~10-30 characters) + the 41-character separator + o2 (--max-new)


def generated_tokens(store: ReplayStore, run_id: str) -> int:
    row = store.query(
        "SELECT coalesce(sum(len(completion_ids)), 0) AS t FROM rollouts WHERE run_id = $r AND stage <> 'recombined'",
        {"r": run_id},
    ).to_pylist()[0]  # fmt: skip
    return int(row["t"])


def train_arm(
    store: ReplayStore, start: Path, out: Path, run_id: str, config: TrainConfig, *, steps: int = 0, budget: int = 0
) -> Path:
    """`steps` steps, or steps until `budget` tokens were generated; the final checkpoint."""
    policy = load_policy(start, config)
    trainer = RLTrainer(config, model=policy.model, tokenizer=policy.tokenizer, store=store, run_id=run_id,
                        output_dir=out / run_id, compute_dtype=policy.compute_dtype)  # fmt: skip
    while (trainer.step < steps) if steps else (generated_tokens(store, run_id) < budget):
        trainer.train_step()
    return trainer.save()


def evaluate(model: Path, heldout: list[dict], max_new: int) -> dict[str, float]:
    """first: the first answer; after_one: the answer after one correction (the policy's own o2,
    or for a completion with no separator, a forced one: separator appended, greedy continuation);
    w_to_c / c_to_w between the two; one_more: after one further forced correction on top
    (test-time scaling, k = 1); separator: share of completions that correct themselves."""
    engine = TransformersEngine(model, batch_size=256)
    tokenizer = engine.tokenizer
    greedy = engine.generate([p["prompt"] for p in heldout], 1, SamplingParams(temperature=0, max_new_tokens=max_new))
    texts = [c.text for c in greedy]
    forced = with_corrections(engine, tokenizer, [c.prompt_ids for c in greedy], texts, 1, max_new)
    once = [t if SEPARATOR in t else f for t, f in zip(texts, forced, strict=True)]
    answers, kinds = [p["answer"] for p in heldout], [p["answer_type"] for p in heldout]
    first, _ = answer_verdicts(texts, answers, kinds)
    _, after = answer_verdicts(once, answers, kinds)
    _, more = answer_verdicts(forced, answers, kinds)
    n = len(heldout)
    return {
        "first": sum(first) / n, "after_one": sum(after) / n, "one_more": sum(more) / n,
        "w_to_c": sum(not a and b for a, b in zip(first, after, strict=True)) / n,
        "c_to_w": sum(a and not b for a, b in zip(first, after, strict=True)) / n,
        "separator": sum(SEPARATOR in t for t in texts) / n,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--octopus-steps", type=int, default=40, help="the octopus arm's steps (sets the budget)")
    parser.add_argument("--sft-steps", type=int, default=400)
    parser.add_argument("--cold-sft-steps", type=int, default=200)
    parser.add_argument("--heldout", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-digits", type=int, default=2, help="arith operand length (3: a weaker SFT start)")
    parser.add_argument("--max-new", type=int, default=MAX_NEW, help="completion cap (o1, separator and o2)")
    parser.add_argument("--span-kl-coef", type=float, default=0.01, help="stage I's KL on o1 (the paper: 0.01)")
    parser.add_argument(
        "--arms", nargs="+", default=["gspo", "octopus-no-stage1", "octopus-no-masks"],
        help="besides octopus (which sets the budget): gspo, octopus-no-stage1, octopus-stage1-only, octopus-no-masks",
    )  # fmt: skip
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp(prefix="octopus-bench-"))
    store = ReplayStore(tmp / "store")
    problems, samples = generate(ArithConfig(n=4000, min_digits=1, max_digits=args.max_digits, seed=0))
    store.write("problems", problems)
    store.write("sft_samples", samples)
    heldout = sorted((p for p in problems if p["split"] == "heldout"), key=lambda p: p["prompt"])[: args.heldout]
    base = init_tiny_model(tmp / "base", seed=0)
    sft = run_sft_to(store, SFTConfig(steps=args.sft_steps, batch_size=32, lr=1e-3, seed=0, source="arith"),
                     model=base, out=tmp / "sft").checkpoint  # fmt: skip
    start_eval = evaluate(sft, heldout, args.max_new)
    print(f"SFT start: {start_eval}", flush=True)
    arms = ("octopus", *args.arms)
    results: dict[str, list[dict]] = {arm: [] for arm in ("cold-start", *arms)}
    common = {"prompts_per_step": 8, "group_size": 8, "max_completion_length": args.max_new, "lr": args.lr,
              "temperature": 1.0}  # fmt: skip
    for seed in args.seeds:
        t0 = time.perf_counter()
        cold_config = ColdStartConfig(limit=1024, max_new_tokens=args.max_new // 3, seed=seed)
        engine = TransformersEngine(sft, batch_size=256)
        cold_start(store, engine, engine.tokenizer, cold_config)
        cold = run_sft_to(store, SFTConfig(steps=args.cold_sft_steps, batch_size=16, lr=1e-3, seed=seed, source=SOURCE),
                          model=sft, out=tmp / f"cold-{seed}", run_id=f"cold-sft-{seed}").checkpoint  # fmt: skip
        results["cold-start"].append(
            {**evaluate(cold, heldout, args.max_new), "tokens": 0, "wall": time.perf_counter() - t0}
        )
        print(f"seed {seed} cold-start: {results['cold-start'][-1]}", flush=True)
        half = args.octopus_steps // 2
        t0 = time.perf_counter()
        octo = {**common, "algo": "octopus", "seed": seed, "span_kl_coef": args.span_kl_coef}
        mid = train_arm(store, cold, tmp, f"octopus-1-s{seed}", TrainConfig(**octo, octopus_stage=1), steps=half)
        final = train_arm(store, mid, tmp, f"octopus-2-s{seed}", TrainConfig(**octo, octopus_stage=2),
                          steps=args.octopus_steps - half)  # fmt: skip
        budget = generated_tokens(store, f"octopus-1-s{seed}") + generated_tokens(store, f"octopus-2-s{seed}")
        runs = {"octopus": (final, budget, time.perf_counter() - t0)}
        others = {
            "gspo": (sft, TrainConfig(**common, algo="gspo", rewards="exact", seed=seed)),
            "octopus-no-stage1": (cold, TrainConfig(**octo, octopus_stage=2)),
            "octopus-stage1-only": (cold, TrainConfig(**octo, octopus_stage=1)),
            "octopus-no-masks": (cold, TrainConfig(**octo, octopus_stage=2, octopus_masks=False)),
        }
        for arm in args.arms:
            start, config = others[arm]
            t0 = time.perf_counter()
            path = train_arm(store, start, tmp, f"{arm}-s{seed}", config, budget=budget)
            runs[arm] = (path, generated_tokens(store, f"{arm}-s{seed}"), time.perf_counter() - t0)
        for arm, (path, tokens, wall) in runs.items():
            results[arm].append({**evaluate(path, heldout, args.max_new), "tokens": tokens, "wall": wall})
            print(f"seed {seed} {arm}: {results[arm][-1]}", flush=True)
    keys = ("first", "after_one", "one_more", "w_to_c", "c_to_w", "separator")
    print("\n| arm | " + " | ".join(keys) + " | generated tokens | wall s |")
    print("|---|" + "---|" * (len(keys) + 2))
    print("| SFT start | " + " | ".join(f"{100 * start_eval[k]:.1f}" for k in keys) + " | — | — |")
    for arm, rows in results.items():
        cells = []
        for k in keys:
            values = [100 * r[k] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {sd:.1f}")
        tokens = statistics.mean(r["tokens"] for r in rows)
        wall = statistics.mean(r["wall"] for r in rows)
        print(f"| {arm} | " + " | ".join(cells) + f" | {tokens:.0f} | {wall:.0f} |")
    print(f"(percent, mean ± sd over seeds {args.seeds}; {len(heldout)} held-out problems)")


if __name__ == "__main__":
    main()
