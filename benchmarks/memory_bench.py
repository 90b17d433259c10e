"""Memory of one training step with a 151,936-token vocabulary: the chunked selective log-softmax
(trainers/logprobs.py) against the old full-vocabulary path, in the same run.

    python benchmarks/memory_bench.py [--sequences 8] [--tokens 1024] [--hidden 256] [--device cpu]

A Qwen2-shaped model built offline (Qwen2.5's vocabulary size, a small hidden size so it runs on a
CPU), 8 sequences x 1,024 completion tokens, one forward + DAPO loss + backward per arm. Each arm runs
in a fresh process (so one arm's allocations cannot hide the other's), twice, interleaved. Peak
activation memory: on CPU the process's peak RSS during the step over its RSS before it (the kernel's
high-water mark is reset just before the step, /proc/self/clear_refs), on CUDA
`torch.cuda.max_memory_allocated` over the memory allocated before the step. The losses of both arms
must agree (1e-5): the same inputs, seeded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VOCAB = 151_936


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def arm(path: str, args: argparse.Namespace) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from reasonloop.trainers.algos import POLICY_LOSSES, ClipRange
    from reasonloop.trainers.logprobs import completion_logprobs, full_vocab_logprobs

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=args.tokens + 64, tie_word_embeddings=True)  # fmt: skip
    model = Qwen2ForCausalLM(config).to(args.device)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, VOCAB, (16,), generator=gen).tolist() for _ in range(args.sequences)]
    completions = [torch.randint(0, VOCAB, (args.tokens,), generator=gen).tolist() for _ in range(args.sequences)]
    advantages = torch.randn(args.sequences, generator=gen).to(args.device)
    forward = completion_logprobs if path == "new" else full_vocab_logprobs
    loss_fn = POLICY_LOSSES.get("dapo")
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
        base = _rss("VmRSS:")
    start = time.perf_counter()
    scored = forward(model, prompts, completions, pad_id=0)
    old = scored.logprobs.detach()
    out = loss_fn(scored.logprobs, old, advantages, scored.mask, clip=ClipRange(0.2, 0.28))
    out.loss.backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if cuda else _rss("VmHWM:")) - base
    grad = sum(float(p.grad.double().square().sum()) for p in model.parameters() if p.grad is not None) ** 0.5
    entropy = float((scored.entropies * scored.mask).sum() / scored.mask.sum())
    return {"path": path, "peak_bytes": peak, "seconds": seconds, "loss": out.loss.item(), "grad_norm": grad,
            "entropy": entropy}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--arm", choices=["new", "old"], help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(arm(args.arm, args)))
        return 0
    results: dict[str, list[dict]] = {"new": [], "old": []}
    for _ in range(args.repeats):
        for path in ("new", "old"):
            cmd = [sys.executable, __file__, "--arm", path, "--sequences", str(args.sequences), "--tokens",
                   str(args.tokens), "--hidden", str(args.hidden), "--device", args.device]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{path}: exit {done.returncode} (killed: out of memory?) {done.stderr[-500:]}")
                results[path].append({"path": path, "peak_bytes": float("nan"), "seconds": float("nan"), "loss": float("nan"),
                                      "grad_norm": float("nan"), "entropy": float("nan")})  # fmt: skip
                continue
            results[path].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"one training step: {args.sequences} sequences x {args.tokens} completion tokens, vocabulary {VOCAB}, "
          f"hidden {args.hidden}, {args.device}")  # fmt: skip
    print(f"{'path':<8}{'peak activation GB':>20}{'seconds':>10}{'loss':>14}{'grad norm':>14}{'entropy':>10}")
    for path, runs in results.items():
        for r in runs:
            print(f"{path:<8}{r['peak_bytes'] / 1e9:>20.2f}{r['seconds']:>10.2f}{r['loss']:>14.7f}{r['grad_norm']:>14.6f}"
                  f"{r['entropy']:>10.4f}")  # fmt: skip
    new_peak = min(r["peak_bytes"] for r in results["new"])
    old_peak = min(r["peak_bytes"] for r in results["old"])
    new_s, old_s = min(r["seconds"] for r in results["new"]), min(r["seconds"] for r in results["old"])
    print(
        f"\npeak activation memory new/old: {new_peak / old_peak:.3f}x (goal <= 0.3); time new/old: {new_s / old_s:.2f}x"
    )
    loss_gap = abs(results["new"][0]["loss"] - results["old"][0]["loss"])
    print(f"loss new - old: {loss_gap:.2e} (goal <= 1e-5)")
    return 0 if new_peak / old_peak <= 0.3 and loss_gap <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
