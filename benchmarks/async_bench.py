"""Sync vs async training on `arith`, at an equal rollout budget, in one run.

    python benchmarks/async_bench.py [--steps 60] [--ks 0 1 4]

One SFT warm-up, then GRPO (8 prompts x 8 samples, T 0.7, lr 2e-5) for `--steps` steps:
- sync: one process, generation and training in turn (`reasonloop train`);
- async: `reasonloop train --async` + one `reasonloop rollout-worker` process, the worker sampling
  one step's worth of groups per published version (rounds_per_version 1: the same rollout budget),
  for each staleness bound k in `--ks`.
Reports trainer steps per minute (from the start of its first step to the commit of its last,
checkpoints/publishing included; process start-up excluded: each CLI process pays the same ~5 s of
imports), rollouts generated, and held-out greedy
accuracy (512 problems) every `--eval-every` steps against the trainer's elapsed time: the
accuracy-vs-wall-time curve, as a table and benchmarks/out/async_curve.png.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from reasonloop.flows.processes import spawn_cli, stop_process  # noqa: E402
from reasonloop.storage import ReplayStore  # noqa: E402
from reasonloop.tasks.engines.transformers_engine import TransformersEngine  # noqa: E402
from reasonloop.tasks.models.tiny import init_tiny_model  # noqa: E402
from reasonloop.tasks.recipes.arith import ArithConfig, generate  # noqa: E402
from reasonloop.trainers.config import SFTConfig  # noqa: E402
from reasonloop.trainers.evaluate import greedy_accuracy  # noqa: E402
from reasonloop.trainers.sft import run_sft  # noqa: E402

MAX_NEW = 40


def cli(*args: str, log: Path) -> subprocess.Popen:
    return spawn_cli(list(args), log, env=dict(os.environ, PYTHONPATH=str(REPO), OMP_WAIT_POLICY="PASSIVE"), cwd=REPO)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 1, 4])
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--async-threads", type=int, default=0, help="torch threads per async process (0: default)")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp(prefix="async-bench-"))
    store = ReplayStore(tmp / "store")
    problems, samples = generate(ArithConfig(n=8000, min_digits=1, max_digits=3, heldout_percent=10, seed=0))
    store.write("problems", problems)
    heldout = sorted((p for p in problems if p["split"] == "heldout"), key=lambda p: p["prompt"])[:512]
    base = init_tiny_model(tmp / "base", seed=0)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    run_sft(SFTConfig(steps=args.sft_steps, batch_size=32, lr=1e-3, seed=0), model=model, tokenizer=tokenizer,
            samples=[s for s in samples if s["split"] == "train"])  # fmt: skip
    sft = tmp / "sft"
    model.save_pretrained(sft)
    tokenizer.save_pretrained(sft)

    def accuracy(path: Path) -> float:
        return greedy_accuracy(TransformersEngine(path, batch_size=512), heldout, max_new_tokens=MAX_NEW).accuracy

    start_acc = accuracy(sft)
    print(f"after SFT: held-out accuracy {100 * start_acc:.1f}% (n={len(heldout)})", flush=True)
    common = ["--algo", "grpo", "--steps", str(args.steps), "--prompts-per-step", "8", "--group-size", "8",
              "--temperature", "0.7", "--lr", "2e-5", "--max-completion-length", str(MAX_NEW), "--rewards", "exact",
              "--save-every", str(args.eval_every), "--root", str(store.root), "--model", str(sft)]  # fmt: skip
    runs = [("sync", None)] + [(f"async k={k}", k) for k in args.ks]
    rows, curves = [], {}
    for name, k in runs:
        run_id = name.replace(" ", "-").replace("=", "")
        out = tmp / run_id
        procs = []
        try:
            if k is None:
                procs.append(
                    cli("train", "--run-id", run_id, "--output-dir", str(out), *common, log=tmp / f"{run_id}.log")
                )
            else:
                procs.append(cli("train", "--async", "--run-id", run_id, "--output-dir", str(out), "--max-staleness",
                                 str(k), "--publish-every", "1", "--torch-threads", str(args.async_threads), *common,
                                 log=tmp / f"{run_id}.log"))  # fmt: skip
                procs.append(cli("rollout-worker", "--run-id", run_id, "--rounds-per-version", "1", "--root",
                                 str(store.root), log=tmp / f"{run_id}-worker.log"))  # fmt: skip
            if procs[0].wait(timeout=3600) != 0:
                print((tmp / f"{run_id}.log").read_text()[-3000:])
                return 1
        finally:
            for p in procs:
                stop_process(p)
        # Trainer time at step s: from the start of step 1 to the commit of step s's metrics, so
        # everything between steps (checkpoints, i.e. publishing weights in async mode) counts.
        times = store.query(
            "SELECT step, epoch(created_at) AS at, metrics['step_time'] AS t FROM train_metrics WHERE run_id = $r "
            "ORDER BY step", {"r": run_id},
        ).to_pylist()  # fmt: skip
        origin = times[0]["at"] - times[0]["t"]
        elapsed, curve = 0.0, [(0.0, start_acc)]
        for t in times:
            elapsed = t["at"] - origin
            if t["step"] % args.eval_every == 0:
                curve.append((elapsed, accuracy(out / f"checkpoint-{t['step']:06d}")))
        generated = store.query(
            "SELECT count(*) AS n FROM rollouts WHERE run_id = $r", {"r": run_id}
        ).column("n")[0].as_py()  # fmt: skip
        curves[name] = curve
        rows.append((name, args.steps / elapsed * 60, generated, curve[-1][1], elapsed))
        print(f"{name}: {args.steps / elapsed * 60:.1f} steps/min ({elapsed:.0f} s of trainer time), "
              f"{generated} rollouts generated, final accuracy {100 * curve[-1][1]:.1f}%; curve "
              + ", ".join(f"{s:.0f}s:{100 * a:.1f}%" for s, a in curve), flush=True)  # fmt: skip
    sync_rate = rows[0][1]
    print("\n| run | steps/min | vs sync | rollouts generated | final accuracy |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, rate, generated, acc, _ in rows:
        print(f"| {name} | {rate:.1f} | {rate / sync_rate:.2f}x | {generated} | {100 * acc:.1f}% |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, curve in curves.items():
            ax.plot([s for s, _ in curve], [100 * a for _, a in curve], marker="o", label=name)
        ax.set_xlabel("trainer wall time (s)")
        ax.set_ylabel("held-out accuracy (%)")
        ax.legend()
        fig.tight_layout()
        (REPO / "benchmarks" / "out").mkdir(exist_ok=True)
        fig.savefig(REPO / "benchmarks" / "out" / "async_curve.png", dpi=110)
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
