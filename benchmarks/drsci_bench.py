"""Dr. SCI arms from one SFT'd start (the `dr_sci` recipe; tiny char Llama or the BPE Qwen2).

    python benchmarks/drsci_bench.py [--seeds 0 1 2] [--model char|bpe] [--steps 150] [--eesft]

Per seed: the recipe (verifiable and open-ended items; training items split in half by prompt
hash), a fresh model SFT'd on the gold chains of one half (the shared start), then the curation
flow's stages over the other half with that model as the pass-rate policy (--k; k/k items
dropped). RL arms from the start, each the same steps × prompts × group size (matched rollout
budget), on those curated items:
  rule            rule rewards only (open-ended items scored by their final answer alone)
  unified         rule rewards on verifiable items + rubric rewards (keyword judge) on open ones
  unified+curr    unified, with the dynamic curriculum (D_train active, retire above 0.9 running
                  accuracy from stored rollouts, easiest pending item in)
Held-out items (greedy): verifiable accuracy; open-ended final-answer accuracy and rubric score
(the same keyword judge on the gold rubric — there is no second judge offline); judge questions
and generated tokens per arm from train_metrics / rollouts; the training reward (mean of the
first and of the last 10 steps) says whether RL moved what it optimizes. `--eesft`: exploration-expanding SFT
picks (2 per problem from the start's correct samples at T = 0.7, 1.0, 1.3; character 4-grams, as
the chains have few words) vs random picks of the same size.
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

from reasonloop.flows.drsci import load_rows, row_score
from reasonloop.storage import ReplayStore
from reasonloop.tasks.curation.pipeline import CurationConfig, curate, curated_row
from reasonloop.tasks.engines import SamplingParams, make_engine
from reasonloop.tasks.models import init_model
from reasonloop.tasks.recipes.arith import is_heldout
from reasonloop.tasks.recipes.dr_sci import DrSciConfig, generate
from reasonloop.tasks.rewards.rubric import KeywordJudge, RubricScorer
from reasonloop.tasks.rewards.science import rule_scores
from reasonloop.trainers.config import SFTConfig, TrainConfig
from reasonloop.trainers.run import run_rl, run_sft_to

ARMS = {"rule": {"rewards": "rule"}, "unified": {"rewards": "unified"},
        "unified+curr": {"rewards": "unified", "dynamic_curriculum": True}}  # fmt: skip
METRICS = ("verifiable_acc", "open_answer_acc", "open_rubric", "reward_first10", "reward_last10", "judge_questions",
           "gen_tokens", "retired")  # fmt: skip


def evaluate(model: Path, heldout: list[dict], max_new: int) -> dict[str, float]:
    engine = make_engine("transformers", model=str(model), batch_size=256)
    out = engine.generate([p["prompt"] for p in heldout], 1, SamplingParams(temperature=0, max_new_tokens=max_new))
    texts = [c.final_text for c in sorted(out, key=lambda c: c.prompt_index)]
    prompts, answers = [p["prompt"] for p in heldout], [p["answer"] for p in heldout]
    rule = rule_scores(prompts, texts, answers, [p["answer_type"] for p in heldout])
    opened = [i for i, p in enumerate(heldout) if p["answer_type"] == "rubric"]
    closed = [i for i in range(len(heldout)) if i not in set(opened)]
    rubric = RubricScorer(KeywordJudge())([prompts[i] for i in opened], [texts[i] for i in opened],
                                          [answers[i] for i in opened], [heldout[i]["rubric"] for i in opened])  # fmt: skip
    return {"verifiable_acc": statistics.mean(rule[i] or 0.0 for i in closed),
            "open_answer_acc": statistics.mean(rule[i] or 0.0 for i in opened),
            "open_rubric": statistics.mean(s or 0.0 for s in rubric)}  # fmt: skip


def run_cost(store: ReplayStore, run_id: str) -> dict[str, float]:
    row = store.query(
        "SELECT sum(coalesce(metrics['judge/questions'], 0)) AS q, max(coalesce(metrics['curriculum/retired'], 0)) AS r "
        "FROM train_metrics WHERE run_id = $r", {"r": run_id},
    ).to_pylist()[0]  # fmt: skip
    tokens = store.query("SELECT sum(len(completion_ids)) AS t FROM rollouts WHERE run_id = $r", {"r": run_id})
    rewards = [r["m"] for r in store.query(
        "SELECT metrics['reward_mean'] AS m FROM train_metrics WHERE run_id = $r ORDER BY step", {"r": run_id}
    ).to_pylist()]  # fmt: skip
    return {"judge_questions": float(row["q"] or 0), "retired": float(row["r"] or 0),
            "gen_tokens": float(tokens.to_pylist()[0]["t"] or 0), "reward_first10": statistics.mean(rewards[:10]),
            "reward_last10": statistics.mean(rewards[-10:])}  # fmt: skip


def sft_half(prompt: str) -> bool:
    """Half of the training items (prompt hash in [10, 55) of 100; held-out items are [0, 10))."""
    return is_heldout(prompt, 55)


def one_seed(args: argparse.Namespace, seed: int, work: Path) -> dict[str, dict[str, float]]:
    store = ReplayStore(work / "store")
    problems, samples = generate(DrSciConfig(n=args.n, seed=seed))
    store.write("problems", problems)
    # Training items split by prompt hash: SFT on one half, RL on the other. A tiny model SFT'd for
    # ~25 epochs memorizes its SFT items; RL on those would optimize recall, not reasoning.
    store.write("sft_samples", [s for s in samples if s["split"] == "train" and sft_half(s["prompt"])])
    threads = {"torch_threads": args.threads}
    start = run_sft_to(store, SFTConfig(steps=args.sft_steps, batch_size=32, lr=1e-3, seed=seed, source="dr_sci",
                                        **threads), model=init_model(args.model, work / "base", seed=seed),
                       out=work / "start").checkpoint  # fmt: skip
    heldout = load_rows(store, ["dr_sci"], ["heldout"])
    policy = make_engine("transformers", model=str(start), batch_size=256)
    rl_items = [r for r in load_rows(store, ["dr_sci"], ["train"]) if not sft_half(r["prompt"])]
    curated = curate(rl_items, heldout, CurationConfig(k=args.k, seed=seed), policy=policy, score=row_score(None))
    store.write("problems", [curated_row(r, "bench", "dr_sci_curated") for r in curated.rows])
    print(f"  seed {seed}: curation {curated.counts['difficulty']}", flush=True)
    results = {"start": evaluate(start, heldout, args.max_new)}
    print(f"  seed {seed} start: {results['start']}", flush=True)
    for arm, options in ARMS.items():
        config = TrainConfig(
            steps=args.steps, prompts_per_step=8, group_size=8, max_completion_length=args.max_new, lr=args.lr,
            temperature=args.temperature,
            source="dr_sci_curated", seed=seed, curriculum_min_samples=8, **options, **threads,
        )  # fmt: skip
        t0 = time.perf_counter()
        result = run_rl(store, config, run_id=f"{arm}-{seed}", model=start, output_dir=work / arm)
        results[arm] = {**evaluate(result.checkpoint, heldout, args.max_new), **run_cost(store, f"{arm}-{seed}"),
                        "wall_s": time.perf_counter() - t0}  # fmt: skip
        print(f"  seed {seed} {arm}: {results[arm]}", flush=True)
    if args.eesft:  # exploration-expanding SFT picks from the start's own correct samples, vs random picks
        from reasonloop.flows.drsci import eesft_task

        cov = eesft_task.fn(str(store.root), "dr_sci_curated", [str(start)], samples=4, per_problem=2, unit="char",
                            max_new_tokens=args.max_new, seed=seed)  # fmt: skip
        print(f"  seed {seed} eesft: {cov}", flush=True)
        results["eesft"] = {"coverage_greedy": cov["coverage_greedy"], "coverage_random": cov["coverage_random"],
                            "picked": cov["picked"]}  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", choices=("char", "bpe"), default="char")
    parser.add_argument("--n", type=int, default=4000, help="recipe items drawn")
    parser.add_argument("--sft-steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=150, help="RL steps per arm (8 prompts x 8 samples)")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--temperature", type=float, default=0.7, help="RL sampling temperature (learning.py's best)")
    parser.add_argument("--k", type=int, default=8, help="samples per item for the pass rate (the paper's 8)")
    parser.add_argument("--max-new", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eesft", action="store_true", help="also: greedy vs random 4-gram coverage of EESFT picks")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    per_seed = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            per_seed.append(one_seed(args, seed, Path(tmp)))
    print(f"\n{args.model} model, {len(args.seeds)} seeds, {args.steps} RL steps x 8 x 8 per arm; mean (min..max)")
    arms = ["start", *ARMS]
    print("| arm | " + " | ".join(METRICS) + " |\n|---|" + "---:|" * len(METRICS))
    for arm in arms:
        cells = []
        for m in METRICS:
            values = [r[arm].get(m) for r in per_seed if m in r[arm]]
            cells.append(f"{statistics.mean(values):.3f} ({min(values):.3f}..{max(values):.3f})" if values else "—")
        print(f"| {arm} | " + " | ".join(cells) + " |")
    if args.eesft:
        greedy, rand = ([r["eesft"][k] for r in per_seed] for k in ("coverage_greedy", "coverage_random"))
        print(
            f"EESFT char 4-grams covered by the picks: greedy {statistics.mean(greedy):.0f}, random "
            f"{statistics.mean(rand):.0f} (ratio {statistics.mean(g / r for g, r in zip(greedy, rand, strict=True)):.2f})"
        )


if __name__ == "__main__":
    main()
