"""RL and SFT through the store on a GPU: the trainer's device path, timed against the CPU in the
same run. Needs torch, transformers, tokenizers, pyarrow, numpy and duckdb (no Prefect, no vLLM).

    python benchmarks/gpu_train_check.py [--steps 20] [--size small]

Checks: SFT and RL run on CUDA with every step committed to and read back from the store; the
checkpoint is registered; the rollouts carry policy versions 0..steps-1. Prints seconds per RL
step on each device and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from reasonloop.storage import ReplayStore
from reasonloop.tasks.models.tiny import init_tiny_model
from reasonloop.tasks.recipes.arith import ArithConfig, generate
from reasonloop.trainers.config import SFTConfig, TrainConfig
from reasonloop.trainers.run import run_rl, run_sft_to


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", default="small")
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    store = ReplayStore(tmp / "store")
    problems, samples = generate(ArithConfig(n=3000, max_digits=2, seed=0))
    store.write("problems", problems)
    store.write("sft_samples", samples)
    base = init_tiny_model(tmp / "base", size=args.size, seed=0)
    results: dict[str, dict] = {}
    for device in args.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            print("no CUDA device visible to torch", file=sys.stderr)
            return 2
        start = time.perf_counter()
        sft = run_sft_to(store, SFTConfig(steps=100, batch_size=64, lr=1e-3, device=device), model=base,
                         out=tmp / f"sft-{device}", run_id=f"sft-{device}")  # fmt: skip
        sft_s = time.perf_counter() - start
        config = TrainConfig(algo="dapo", steps=args.steps, prompts_per_step=16, group_size=8,
                             max_completion_length=32, temperature=0.7, lr=2e-5, device=device)  # fmt: skip
        start = time.perf_counter()
        result = run_rl(store, config, run_id=f"rl-{device}", model=sft.checkpoint)
        rl_s = time.perf_counter() - start
        versions = store.query(
            "SELECT min(policy_version) AS lo, max(policy_version) AS hi, count(*) AS n FROM rollouts WHERE run_id = $r",
            {"r": f"rl-{device}"},
        ).to_pylist()[0]  # fmt: skip
        registered = store.query("SELECT count(*) AS n FROM checkpoints WHERE run_id = $r", {"r": f"rl-{device}"})
        assert versions["lo"] == 0 and versions["hi"] == args.steps - 1, versions
        assert registered.column("n")[0].as_py() >= 1
        results[device] = {
            "sft_s": round(sft_s, 2), "rl_s_per_step": round(rl_s / args.steps, 3), "rollouts": versions["n"],
            "final_reward_mean": round(result.final_metrics.get("reward_mean", float("nan")), 3),
            "sequences_per_step": result.final_metrics.get("sequences_generated"),
        }  # fmt: skip
        print(device, json.dumps(results[device]), flush=True)
    if "cuda" in results and "cpu" in results:
        ratio = results["cpu"]["rl_s_per_step"] / results["cuda"]["rl_s_per_step"]
        print(f"RL step: cuda {results['cuda']['rl_s_per_step']} s, cpu {results['cpu']['rl_s_per_step']} s "
              f"-> cuda is {ratio:.2f}x the cpu speed ({args.size} model, 16x8 samples, 32 tokens)")  # fmt: skip
        results["speedup"] = round(ratio, 2)
    if torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name(0)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
