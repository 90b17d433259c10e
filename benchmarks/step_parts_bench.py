"""The two hot paths of an RL step against transformers' own forward, in one process, interleaved:

    python benchmarks/step_parts_bench.py [--model char|bpe] [--rounds 30]

- generation: the transformers engine with its static decode path (tasks/engines/static_decode.py)
  vs the same engine decoding through `model(...)` (`static_decode=False`); 8 prompts x 4 samples x
  32 tokens, EOS suppressed, counter-based seeds (both paths sample the same tokens);
- update: one RL trainer step's policy update (forward, loss, backward, fused AdamW) with the
  trainer's Llama forward (trainers/llama_forward.py) vs transformers' forward on the same batch
  layout (shared prompts), alternating step by step on one trainer with the store in the loop.

Torch runs 1 thread. Each round times every variant once; reported: medians and their ratio to
transformers' path (lower is better), so this shared machine's drift hits both sides alike.
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

from benchmarks.trl_compare import reasonloop_trainer
from reasonloop.storage import ReplayStore
from reasonloop.tasks.engines import SamplingParams
from reasonloop.tasks.engines.transformers_engine import TransformersEngine
from reasonloop.tasks.models.bpe import init_bpe_model
from reasonloop.tasks.models.tiny import init_tiny_model
from reasonloop.tasks.recipes.arith import ArithConfig, generate
from reasonloop.tasks.recipes.chat import as_chat
from reasonloop.trainers import llama_forward


def report(name: str, times: dict[str, list[float]], baseline: str) -> None:
    base = statistics.median(times[baseline])
    parts = [f"{k} {statistics.median(v) * 1000:6.1f} ms ({statistics.median(v) / base:.2f})" for k, v in times.items()]
    print(f"{name}: " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("char", "bpe"), default="char")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp())
    model_dir = (init_bpe_model if args.model == "bpe" else init_tiny_model)(tmp / "model", seed=0)
    problems, _ = generate(ArithConfig(n=4000, max_digits=3, seed=0))
    if args.model == "bpe":
        problems = as_chat(problems, [])[0]

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    engines = {
        name: TransformersEngine(model, tokenizer, static_decode=name == "static") for name in ("static", "plain")
    }
    sampling = SamplingParams(max_new_tokens=32, ignore_eos=True, seeds=tuple(range(8)))
    generation: dict[str, list[float]] = {name: [] for name in engines}
    for r in range(args.rounds + 3):
        prompts = [p.get("messages") or p["prompt"] for p in problems[8 * r : 8 * r + 8]]
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.generate(prompts, 4, sampling)
            if r >= 3:  # warm-up rounds left out
                generation[name].append(time.perf_counter() - start)
    report(f"{args.model} generation (8 x 4 x 32 tokens)", generation, "plain")

    store = ReplayStore(tmp / "store")
    store.write("problems", problems)
    trainer = reasonloop_trainer(model_dir, tmp / "store", 10 * args.rounds)
    takes = llama_forward.takes_llama_forward
    update: dict[str, list[float]] = {"llama forward": [], "transformers forward": []}
    for r in range(args.rounds + 3):
        for name in update:
            llama_forward.takes_llama_forward = takes if name == "llama forward" else (lambda *a: False)
            seconds = trainer.train_step()["time/update"]
            if r >= 3:
                update[name].append(seconds)
    llama_forward.takes_llama_forward = takes
    report(f"{args.model} update (32 rows, store in the loop)", update, "transformers forward")


if __name__ == "__main__":
    main()
