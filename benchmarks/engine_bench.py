"""Engine benchmark: our transformers engine vs one batched `model.generate` on the same prompts.

    python benchmarks/engine_bench.py [--prompts 64] [--new-tokens 48] [--repeats 5] [--size tiny]

Both sides: the tiny local model, the same 64 left-padded prompts, 48 new tokens each (EOS
ignored on both, so token counts are equal), sampling at T=1, KV cache on. Our side also returns
per-token logprobs and entropies; `generate` returns tokens only. Interleaved repeats, medians.
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

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from reasonloop.tasks.engines import SamplingParams
from reasonloop.tasks.engines.transformers_engine import TransformersEngine
from reasonloop.tasks.models.tiny import init_tiny_model
from reasonloop.tasks.recipes.arith import ArithConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", default="tiny")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    path = init_tiny_model(Path(tempfile.mkdtemp()) / "m", size=args.size, seed=0)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    problems, _ = generate(ArithConfig(n=args.prompts * 2, min_digits=1, max_digits=4, seed=0))
    prompts = [p["prompt"] for p in problems[: args.prompts]]  # lengths 4..10 chars: real left padding
    engine = TransformersEngine(model, tokenizer, batch_size=args.prompts)
    sampling = SamplingParams(max_new_tokens=args.new_tokens, ignore_eos=True, seed=0)
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    tokens = args.prompts * args.new_tokens

    def ours() -> int:
        out = engine.generate(prompts, 1, sampling)
        return sum(len(c.token_ids) for c in out)

    def hf_generate() -> int:
        with torch.inference_mode():
            out = model.generate(
                **batch, do_sample=True, use_cache=True, max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens, top_k=0, top_p=1.0, temperature=1.0,
                pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        return int(out[:, batch["input_ids"].shape[1] :].numel())

    times: dict[str, list[float]] = {"reasonloop engine": [], "model.generate": []}
    ours(), hf_generate()  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("reasonloop engine", ours), ("model.generate", hf_generate)):
            start = time.perf_counter()
            produced = fn()
            times[name].append(time.perf_counter() - start)
            assert produced == tokens, (name, produced, tokens)
    print(f"{args.prompts} prompts x {args.new_tokens} new tokens = {tokens} tokens, model {args.size}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    base = statistics.median(times["model.generate"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<20} {median * 1000:8.1f} ms  {tokens / median:9.0f} tokens/s  {base / median:5.2f}x")


if __name__ == "__main__":
    main()
