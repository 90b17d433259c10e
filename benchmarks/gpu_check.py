"""GPU check: the transformers engine and one trainer step on CUDA, importing only tasks/engines,
tasks/models and trainers/ (no storage, Prefect, polars or vLLM needed on the GPU machine).

    python benchmarks/gpu_check.py [--device cuda] [--size small]

Checks: sampling runs on the device; its logprobs match a separate forward pass (1e-3 in fp32);
one policy-gradient step on those completions changes the weights. Prints timings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasonloop.tasks.engines import SamplingParams
from reasonloop.tasks.engines.transformers_engine import TransformersEngine
from reasonloop.tasks.models.tiny import init_tiny_model
from reasonloop.trainers.logprobs import completion_logprobs


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="small")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device visible to torch", file=sys.stderr)
        return 2
    heavy = [m for m in ("storage", "prefect", "polars", "duckdb", "vllm") if m in sys.modules]
    assert not heavy, f"imported {heavy}"
    path = init_tiny_model(Path(tempfile.mkdtemp()) / "m", size=args.size, seed=0)
    model = AutoModelForCausalLM.from_pretrained(path).to(args.device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    engine = TransformersEngine(model, tokenizer, batch_size=256)
    prompts = [f"{i}+{2 * i}=" for i in range(64)]
    start = time.perf_counter()
    out = engine.generate(prompts, 4, SamplingParams(max_new_tokens=48, seed=0, ignore_eos=True))
    gen_s = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for c in out)
    scored = completion_logprobs(model, [c.prompt_ids for c in out], [c.token_ids for c in out], pad_id=engine.pad_id)
    sampled = torch.zeros_like(scored.logprobs)
    for b, c in enumerate(out):
        sampled[b, : len(c.logprobs)] = torch.tensor(c.logprobs, device=sampled.device)
    max_err = (scored.logprobs - sampled).abs().max().item()
    assert max_err < 1e-3, max_err
    # One policy-gradient step: advantages from a made-up reward (completion contains '1').
    rewards = torch.tensor([float("1" in c.text) for c in out], device=args.device)
    adv = (rewards - rewards.view(-1, 4).mean(1).repeat_interleave(4)).unsqueeze(1)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    start = time.perf_counter()
    loss = -(adv * scored.logprobs * scored.mask).sum() / scored.mask.sum()
    loss.backward()
    optimizer.step()
    step_s = time.perf_counter() - start
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert changed > 0, "the step changed no parameter"
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}), "
          f"torch {torch.__version__}")  # fmt: skip
    print(f"generate: {len(out)} completions, {tokens} tokens in {gen_s:.2f}s ({tokens / gen_s:.0f} tokens/s)")
    print(f"logprob agreement: max |engine - forward| = {max_err:.2e}")
    print(f"trainer step: loss {loss.item():.4f}, {changed} tensors changed, {step_s * 1000:.0f} ms")
    print("gpu check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
