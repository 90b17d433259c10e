"""Reinforcement Inference vs greedy vs re-ask-all, at matched calls (SPECS §9, issue 18).

    python benchmarks/ri_bench.py [--model char|bpe] [--seeds 0 1 2] [--sft-steps 3000]
                                  [--rates 0.2 0.4 0.61] [--limit 512]

Per seed: a fresh tiny model (`--model`, seeded) SFT'd on `arith_mc` (ten-option multiplication,
tasks/recipes/arith_choice.py) in both modes, direct ("#H") and deliberate (the instruction, then a
worked chain), so the second attempt has something to add. Then, with the product's
`evaluate_ri` on `--limit` held-out questions: greedy;
a deliberate second pass on every question (re-ask-all, 2 calls per question); and RI at each
target rate, for both signals (entropy, 1 - MSP), replayed from the same first and second answers
(greedy decoding: re-asking a subset gives the answers re-asking all gave), τ calibrated on the recipe's
dev split (`test`: never trained on). At each RI's measured
trigger rate r, two references at the same calls: a random trigger (expected accuracy
(1 - r)·greedy + r·re-ask-all) and the oracle (re-ask the wrong first answers first). Also the
second prompt showing the first answer (`include_first`), re-asking all. Prints a markdown table
per seed and the mean ± sd over seeds.
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
from reasonloop.tasks.inference.reinforcement import RIConfig
from reasonloop.tasks.inference.uncertainty import SIGNALS, calibrate_threshold, reask, uncertainty
from reasonloop.tasks.models import init_model
from reasonloop.tasks.recipes.arith_choice import ArithChoiceConfig, generate
from reasonloop.tasks.recipes.chat import as_chat
from reasonloop.trainers.config import SFTConfig
from reasonloop.trainers.ri_eval import evaluate_ri
from reasonloop.trainers.run import run_sft_to

INSTRUCTION = "think:"  # the tiny models' deliberate instruction (short: a character is a token)


def replay(result: dict, signal: str, rate: float) -> dict[str, float]:
    """RI at a target dev rate from a re-ask-all result: τ from the dev distributions, then each
    test question keeps its first answer or takes its second."""
    dev = [uncertainty(p, signal) for p in result["dev_p"]]
    fired = reask([uncertainty(p, signal) for p in result["p"]], calibrate_threshold(dev, rate))
    first, second = result["greedy_correct"], result["second_correct"]
    n = len(first)
    r = sum(fired) / n
    wrong_first = n - sum(first)
    oracle_fixes = sorted((s - f for f, s in zip(first, second, strict=True)), reverse=True)[: round(r * n)]
    return {
        "trigger": r,
        "accuracy": sum(s if t else f for f, s, t in zip(first, second, fired, strict=True)) / n,
        "random": (1 - r) * sum(first) / n + r * sum(second) / n,
        "oracle": (sum(first) + sum(x for x in oracle_fixes if x > 0)) / n,
        "wrong_share_triggered": sum(not f for f, t in zip(first, fired, strict=True) if t) / max(1, wrong_first),
    }  # fmt: skip


def one_seed(args: argparse.Namespace, seed: int, work: Path) -> dict[str, float]:
    store = ReplayStore(work / "store")
    problems, samples = generate(ArithChoiceConfig(n=args.n, instruction=INSTRUCTION, seed=0))
    if args.model == "bpe":
        problems, samples = as_chat(problems, samples)
    store.write("problems", problems)
    store.write("sft_samples", samples)
    model = init_model(args.model, work / "base", seed=seed)
    start = time.perf_counter()
    sft = SFTConfig(steps=args.sft_steps, batch_size=32, lr=args.lr, seed=seed, source="arith_mc")
    run_sft_to(store, sft, model=model, out=work / "sft")
    sft_s = time.perf_counter() - start
    config = RIConfig(instruction=INSTRUCTION, second_tokens=args.max_new)
    common = {"limit": args.limit, "dev_limit": args.limit, "reask_all": True, "batch_size": 512}
    start = time.perf_counter()
    result = evaluate_ri(store, work / "sft", config, **common)
    eval_s = time.perf_counter() - start
    shown = evaluate_ri(store, work / "sft", RIConfig(instruction=INSTRUCTION, second_tokens=args.max_new,
                                                      include_first=True), **common)  # fmt: skip
    row = {"greedy": result["greedy_accuracy"], "reask_all": result["reask_all_accuracy"],
           "reask_all_shown": shown["reask_all_accuracy"], "sft_s": sft_s, "eval_s": eval_s}  # fmt: skip
    for signal in SIGNALS:
        for rate in args.rates:
            for key, value in replay(result, signal, rate).items():
                row[f"{signal}@{rate}:{key}"] = value
    print(f"\n## seed {seed} ({args.model}, {result['n']} held-out questions, dev {result['dev_n']}; "
          f"SFT {sft_s:.0f} s, RI eval {eval_s:.0f} s)\n")  # fmt: skip
    print(f"greedy {100 * row['greedy']:.1f}%; re-ask all {100 * row['reask_all']:.1f}% "
          f"(showing the first answer: {100 * row['reask_all_shown']:.1f}%)\n")  # fmt: skip
    table(row, args.rates)
    return row


def table(row: dict[str, float], rates: list[float], spread: dict[str, float] | None = None) -> None:
    def cell(key: str) -> str:
        sd = f" ± {100 * spread[key]:.1f}" if spread else ""
        return f"{100 * row[key]:.1f}{sd}"

    print(
        "| signal @ dev rate | test trigger | calls/q | RI acc | random at same calls | oracle | wrong answers caught |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for signal in SIGNALS:
        for rate in rates:
            k = f"{signal}@{rate}:"
            print(f"| {signal} @ {rate} | {cell(k + 'trigger')} | {1 + row[k + 'trigger']:.2f} | "
                  f"{cell(k + 'accuracy')} | {cell(k + 'random')} | {cell(k + 'oracle')} | "
                  f"{cell(k + 'wrong_share_triggered')} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("char", "bpe"), default="char")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=12000, help="recipe items drawn (~7.9k distinct)")
    parser.add_argument("--sft-steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.4, 0.61])
    parser.add_argument("--limit", type=int, default=512)
    parser.add_argument("--max-new", type=int, default=48, help="second-attempt cap (the longest chain is ~35)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(one_seed(args, seed, Path(tmp)))
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
    sd = {k: statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0 for k in rows[0]}
    print(f"\n## mean ± sd over seeds {args.seeds} ({args.model})\n")
    print(f"greedy {100 * mean['greedy']:.1f} ± {100 * sd['greedy']:.1f}%; re-ask all {100 * mean['reask_all']:.1f} "
          f"± {100 * sd['reask_all']:.1f}% (showing the first answer: {100 * mean['reask_all_shown']:.1f} ± "
          f"{100 * sd['reask_all_shown']:.1f}%)\n")  # fmt: skip
    table(mean, args.rates, sd)


if __name__ == "__main__":
    main()
