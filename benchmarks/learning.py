"""GRPO vs iGRPO at a matched rollout budget, with and without refinement-format SFT first.

    python benchmarks/learning.py [--task arith|veritime] [--model char|bpe] [--size tiny|small]
                                  [--steps 200] [--seeds 0 1 2] [--arms ...] [--out benchmarks/plots]

Two starts per task and model, both continuing the same SFT'd model (`--sft-steps` on the recipe's
gold chains) for `--refine-sft-steps` more: `sft` on the gold chains only, `refine` on the gold
chains mixed with refinement-format rows (that model's own drafts on training problems, wrong ones
paired with a right sibling or the gold chain; tasks/recipes/igrpo_refine.py) — the same compute,
differing only in the refinement rows. Arms (`start:algo[@select]`): GRPO with 8 samples per
prompt; iGRPO with 4 drafts + 4 refinements (8 generated sequences per prompt: the same budget),
refinements only (as the paper specifies) or drafts trained too (`+drafts`); `@worst` / `@random`
select the draft by another rule (best by default). 8 prompts per step, T 0.7, lr 2e-5, the
recipe's reward. Every arm is evaluated on the same 512+ held-out problems (split from training by
the recipe; asserted disjoint): single-pass greedy accuracy, and draft -> refine (the refinement
prompt around the greedy answer, answered greedily). Per arm: generated sequences and tokens (every
sequence, drafts included, read from the store), wall time, and single-pass entropy per step (GRPO:
its samples; iGRPO: its drafts) and refinement entropy, plotted per arm (mean over seeds) to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers.utils import logging as hf_logging

from reasonloop.storage import ReplayStore
from reasonloop.storage.samplers import sft_rows
from reasonloop.tasks.models import init_model
from reasonloop.tasks.recipes.igrpo_refine import RefineDataConfig, refine_data
from reasonloop.trainers.config import SFTConfig, TrainConfig
from reasonloop.trainers.policy import load_policy, save_weights
from reasonloop.trainers.rl import RLTrainer
from reasonloop.trainers.run import evaluate_model, image_inputs_for
from reasonloop.trainers.sft import run_sft


@dataclass(frozen=True)
class Task:
    source: str
    reward: str
    max_new: int  # completion cap: room for the recipe's longest chain


TASKS = {"arith": Task("arith", "exact", 40), "veritime": Task("veritime", "veritime", 48)}
ARMS = ("sft:grpo", "sft:igrpo+drafts", "refine:grpo", "refine:igrpo", "refine:igrpo+drafts")


def recipe_rows(task: str, chat: bool) -> tuple[list[dict], list[dict]]:
    if task == "arith":
        from reasonloop.tasks.recipes.arith import ArithConfig, generate

        problems, samples = generate(ArithConfig(n=8000, min_digits=1, max_digits=3, heldout_percent=10, seed=0))
    else:
        from reasonloop.tasks.recipes.veritime import VeriTimeConfig
        from reasonloop.tasks.recipes.veritime import generate as generate_veritime

        problems, samples = generate_veritime(VeriTimeConfig(n=8000, seed=0))
    if chat:
        from reasonloop.tasks.recipes.chat import as_chat

        problems, samples = as_chat(problems, samples)
    heldout = {p["prompt"] for p in problems if p["split"] == "heldout"}
    assert len(heldout) >= 512 and not heldout & {s["prompt"] for s in samples if s["split"] == "train"}
    return problems, samples


def sft(start: Path, out: Path, samples: list[dict], steps: int, lr: float, store: ReplayStore | None = None) -> Path:
    """`store`: where samples' images are (a vision-language start)."""
    config = SFTConfig(steps=steps, batch_size=32, lr=lr, seed=0)
    policy = load_policy(start, config)
    run_sft(config, model=policy.model, tokenizer=policy.tokenizer, samples=samples, compute_dtype=policy.compute_dtype,
            images=image_inputs_for(policy, store) if store is not None else None)  # fmt: skip
    save_weights(policy.model, out, merged=False)
    policy.processing_class.save_pretrained(out)
    return out


def two_pass(store: ReplayStore, model: Path, task: Task, limit: int) -> dict:
    e = evaluate_model(store, model, source=task.source, limit=limit, max_new_tokens=task.max_new, refine=True,
                       pass_k=0, batch_size=512)  # fmt: skip
    return {"single": e["accuracy"], "n": e["n"], **e["two_pass"]}


def curves(store: ReplayStore, run_id: str) -> dict[str, list[float]]:
    """Per step: single-pass entropy (GRPO's samples, iGRPO's drafts), refinement entropy, reward."""
    out: dict[str, list[float]] = {"single": [], "refine": [], "reward": []}
    rows = store.query("SELECT step, metrics FROM train_metrics WHERE run_id = $r ORDER BY step", {"r": run_id})
    for m in rows.column("metrics").to_pylist():
        m = dict(m)
        out["single"].append(m.get("igrpo/entropy_draft", m.get("entropy", float("nan"))))
        out["refine"].append(m.get("igrpo/entropy_refine", float("nan")))
        out["reward"].append(m.get("reward_mean", float("nan")))
    return out


def run_arm(store: ReplayStore, arm: str, start: Path, task: Task, seed: int, args, tmp: Path) -> dict:
    algo, _, select = arm.split(":")[1].partition("@")  # e.g. refine:igrpo+drafts@worst
    run_id = f"{arm.replace(':', '-').replace('+', '-').replace('@', '-')}-s{seed}"
    config = TrainConfig(
        algo=algo.split("+")[0], igrpo_train_drafts=algo.endswith("+drafts"), igrpo_select=select or "best",
        steps=args.steps, prompts_per_step=8, group_size=8, igrpo_drafts=4, lr=args.lr,
        max_completion_length=task.max_new, seed=seed, rewards=task.reward, source=task.source, torch_threads=0,
        temperature=args.temperature,
    )  # fmt: skip
    policy = load_policy(start, config)
    trainer = RLTrainer(config, model=policy.model, tokenizer=policy.tokenizer, store=store, run_id=run_id,
                        output_dir=tmp / run_id, compute_dtype=policy.compute_dtype)  # fmt: skip
    began = time.perf_counter()
    trainer.train(args.steps)
    wall = time.perf_counter() - began
    after = two_pass(store, trainer.output_dir / f"checkpoint-{args.steps:06d}", task, args.eval_limit)
    used = store.query(
        "SELECT count(*) AS n, sum(len(completion_ids)) AS t FROM rollouts WHERE run_id = $r", {"r": run_id}
    ).to_pylist()[0]
    return {"arm": arm, "seed": seed, **after, "sequences": int(used["n"]), "tokens": int(used["t"]), "wall_s": wall,
            "curves": curves(store, run_id)}  # fmt: skip


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def smooth(xs: list[float], k: int = 10) -> list[float]:
        return [statistics.fmean(xs[max(0, i - k + 1) : i + 1]) for i in range(len(xs))]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for index, arm in enumerate(dict.fromkeys(r["arm"] for r in results)):
        runs = [r["curves"] for r in results if r["arm"] == arm]
        for ax, key in zip(axes, ("single", "refine", "reward"), strict=True):
            mean = [statistics.fmean(v) for v in zip(*(c[key] for c in runs), strict=True)]
            if not all(math.isnan(x) for x in mean):  # one colour per arm in every panel
                ax.plot(smooth(mean), label=arm, color=f"C{index}")
    axes[0].set(title="single-pass entropy (GRPO samples / iGRPO drafts)", xlabel="step", ylabel="nats per token")
    axes[1].set(title="refinement entropy (iGRPO)", xlabel="step")
    axes[2].set(title="training reward (the batch)", xlabel="step")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="arith")
    parser.add_argument("--model", choices=("char", "bpe"), default="char")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--refine-sft-steps", type=int, default=300)
    parser.add_argument("--refine-limit", type=int, default=2000, help="training problems for refinement data")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--temperature", type=float, default=0.7, help="rollout (and draft data) temperature")
    parser.add_argument("--eval-limit", type=int, default=512)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), help=f"of {', '.join(ARMS)}")
    parser.add_argument("--out", default="benchmarks/plots")
    parser.add_argument("--tag", default="", help="suffix of the output files (runs of other arms)")
    parser.add_argument("--plot-only", default="", help="re-plot (and re-tabulate) a saved results JSON")
    args = parser.parse_args()
    if args.plot_only:
        report = json.loads(Path(args.plot_only).read_text())
        saved = argparse.Namespace(**report["args"])
        title = f"{saved.task}, {saved.model} {saved.size}: {saved.steps} steps, mean of seeds"
        plot(report["results"], Path(args.plot_only).with_suffix(".png"), title)
        table(report["results"], saved.arms)
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    task, tmp = TASKS[args.task], Path(tempfile.mkdtemp())
    store = ReplayStore(tmp / "store")
    problems, samples = recipe_rows(args.task, chat=args.model == "bpe")
    store.write("problems", problems)
    store.write("sft_samples", samples)
    gold = sft_rows(store, "train", task.source)
    base = init_model(args.model, tmp / "base", size=args.size, seed=0)
    began = time.perf_counter()
    first = sft(base, tmp / "sft0", gold, args.sft_steps, 1e-3)  # the policy whose drafts are refined
    report: dict = {"args": vars(args), "starts": {"sft0": {**two_pass(store, first, task, args.eval_limit),
                                                              "wall_s": time.perf_counter() - began}}}  # fmt: skip
    print(f"{args.task}/{args.model}: after {args.sft_steps} SFT steps {report['starts']['sft0']}", flush=True)
    from reasonloop.tasks.engines.transformers_engine import TransformersEngine

    began = time.perf_counter()
    engine = TransformersEngine(first, batch_size=256)
    data = RefineDataConfig(drafts=4, temperature=args.temperature, max_new_tokens=task.max_new,
                            source=task.source, limit=args.refine_limit)  # fmt: skip
    counts = refine_data(store, engine, engine.tokenizer, data)
    report["refine_data"] = {**counts, "wall_s": time.perf_counter() - began}
    # Both starts continue from `first` for the same steps; they differ only in the refinement rows.
    mixes = {"sft": gold, "refine": sft_rows(store, "train", "")}
    starts = {}
    for name, rows in mixes.items():
        began = time.perf_counter()
        starts[name] = sft(first, tmp / name, rows, args.refine_sft_steps, 5e-4)
        report["starts"][name] = {**two_pass(store, starts[name], task, args.eval_limit),
                                  "wall_s": time.perf_counter() - began}  # fmt: skip
        print(f"start {name} ({len(rows)} rows): {report['starts'][name]}", flush=True)
    results = []
    for seed in args.seeds:
        for arm in args.arms:
            r = run_arm(store, arm, starts[arm.split(":")[0]], task, seed, args, tmp)
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "curves"}), flush=True)
    report["results"] = results
    out = Path(args.out)
    name = f"learning-{args.task}-{args.model}-{args.size}" + (f"-{args.tag}" if args.tag else "")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report))
    plot(results, out / f"{name}.png", f"{args.task}, {args.model} {args.size}: {args.steps} steps, mean of seeds")
    table(results, args.arms)


def table(results: list[dict], arms: list[str]) -> None:
    print("\n| arm | single-pass (per seed) | draft→refine | refine − draft | w→c | c→w | sequences | tokens | wall |")
    for arm in arms:
        rs = [r for r in results if r["arm"] == arm]

        def mean(key: str, rows: list[dict] = rs) -> float:
            return statistics.fmean(r[key] for r in rows)

        singles = ", ".join(f"{100 * r['single']:.1f}" for r in rs)
        print(f"| {arm} | {100 * mean('single'):.1f}% ({singles}) | {100 * mean('refine_accuracy'):.1f}% | "
              f"{100 * mean('refine_minus_draft'):+.1f} | {100 * mean('w_to_c'):.1f}% | {100 * mean('c_to_w'):.1f}% | "
              f"{mean('sequences'):,.0f} | {mean('tokens'):,.0f} | {mean('wall_s'):.0f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
