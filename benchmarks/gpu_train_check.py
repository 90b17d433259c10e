"""RL and SFT through the store on a GPU: the trainer's device path, timed against the CPU in the
same run. Needs torch, transformers, tokenizers, pyarrow, numpy and duckdb (no Prefect, no vLLM).

    python benchmarks/gpu_train_check.py [--steps 20] [--size small] [--model char|bpe] [--dtype bfloat16]

Checks: SFT and RL run on CUDA with every step committed to and read back from the store; the
checkpoint is registered; the rollouts carry policy versions 0..steps-1. Prints seconds per RL
step on each device and the ratio. With `--model bpe` (the Qwen2-shaped checkpoint: ChatML, two
EOS ids, no pad, bf16 on disk) the data are conversations, and each device also reports the
training-inference gap (`mismatch/logprob_abs_diff_mean|max`), the clip fraction at μ = 1 (0 by
construction), and the peak memory of the run.
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
from reasonloop.tasks.models.bpe import init_bpe_model
from reasonloop.tasks.models.tiny import init_tiny_model
from reasonloop.tasks.recipes.arith import ArithConfig, generate
from reasonloop.tasks.recipes.chat import as_chat
from reasonloop.trainers.config import SFTConfig, TrainConfig
from reasonloop.trainers.run import run_rl, run_sft_to


def _peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    for line in Path("/proc/self/status").read_text().splitlines():  # the process's peak RSS
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", default="small")
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--out", default="")
    parser.add_argument("--model", choices=["char", "bpe"], default="char")
    parser.add_argument("--dtype", default="auto", help="compute dtype (the BPE checkpoint's own is bfloat16)")
    parser.add_argument("--sft-steps", type=int, default=100)
    parser.add_argument("--algo", default="dapo", help="grpo trains on every group (dapo drops zero-variance ones)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    store = ReplayStore(tmp / "store")
    problems, samples = generate(ArithConfig(n=3000, max_digits=2, seed=0))
    if args.model == "bpe":
        problems, samples = as_chat(problems, samples)
    store.write("problems", problems)
    store.write("sft_samples", samples)
    init = init_bpe_model if args.model == "bpe" else init_tiny_model
    base = init(tmp / "base", size=args.size, seed=0)
    results: dict[str, dict] = {}
    for device in args.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            print("no CUDA device visible to torch", file=sys.stderr)
            return 2
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        sft_config = SFTConfig(steps=args.sft_steps, batch_size=64, lr=1e-3, device=device, dtype=args.dtype)
        sft = run_sft_to(store, sft_config, model=base, out=tmp / f"sft-{device}", run_id=f"sft-{device}")
        sft_s = time.perf_counter() - start
        config = TrainConfig(algo=args.algo, steps=args.steps, prompts_per_step=16, group_size=8,
                             max_completion_length=32, temperature=0.7, lr=2e-5, device=device, dtype=args.dtype)  # fmt: skip
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
            **{k: result.final_metrics.get(k) for k in ("mismatch/logprob_abs_diff_mean", "mismatch/logprob_abs_diff_max",
                                                         "clip_ratio_low", "clip_ratio_high", "is_ratio_mean")},
            "peak_memory_gb": round(_peak_bytes(device) / 1e9, 3),
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
