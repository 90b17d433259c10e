"""CoTZero: SFT on hierarchical chains vs flat answers, then GRPO with CCVR vs answer-only reward.

    python benchmarks/cotzero_bench.py [--model char|bpe|vision] [--seeds 0 1 2] [--scenes 1500]
                                       [--sft-steps 800] [--rl-steps 60] [--eval 400]

Per seed: CoTZero problems in text mode (the scene graph in the prompt; `--model bpe` as chats),
or in image mode for `--model vision` (the tiny LLaVA sees the rendered scene, not its graph),
held-out scenes split by composition (no held-out combination of sized, coloured shapes is in
training; asserted). Two SFT runs from the same fresh model on the same training questions: `hier`
(G/L/R steps, then the answer) and `flat` (the answer only). From the `hier` start, two GRPO arms
of `--rl-steps` steps: `ccvr` (format 0.1, answer 0.5, semantic 0.2, edit 0.2) and `answer` (the
answer alone). Each model answers the same held-out questions greedily (trainers/cotzero_eval.py), beside `always-no`
(no model: the majority answer), scored by
accuracy overall, per level, on the perturbed negatives, and the F1 of "no" over the perturbation
set (the paper's inconsistency F1), with the chain's format rate and per-step agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.learning import sft
from benchmarks.rl_arms import mean_sd, train_arm
from reasonloop.storage import ReplayStore
from reasonloop.storage.samplers import sft_rows
from reasonloop.tasks import prompts as prompt_policy
from reasonloop.tasks.engines import make_engine
from reasonloop.tasks.models import init_model
from reasonloop.tasks.models.loading import load_tokenizer
from reasonloop.tasks.recipes.chat import as_chat
from reasonloop.tasks.recipes.cotzero import CoTZeroConfig, generate
from reasonloop.trainers.cotzero_eval import evaluate_cotzero, score_cotzero
from reasonloop.trainers.eval_setup import with_images

ARMS = ("always-no", "sft-flat", "sft-hier", "grpo-answer", "grpo-ccvr")
REWARDS = {"grpo-answer": "ccvr_answer:1", "grpo-ccvr": "ccvr"}
MAX_NEW = 128  # the longest gold chain is ~110 characters


def build_store(tmp: Path, seed: int, scenes: int, chat: bool, mode: str) -> ReplayStore:
    data = generate(CoTZeroConfig(scenes=scenes, seed=seed, mode=mode))
    problems, samples = as_chat(data.problem_rows(), data.samples) if chat else (data.problem_rows(), data.samples)
    train = {json.loads(p["metadata"])["composition"] for p in problems if p["split"] == "train"}
    held = {json.loads(p["metadata"])["composition"] for p in problems if p["split"] == "heldout"}
    assert not train & held, "a held-out composition is in training"
    store = ReplayStore(tmp / "store")
    store.write("problems", problems)  # image rows carry their image: the store puts it
    store.write("sft_samples", samples)
    return store


def heldout(store: ReplayStore, limit: int) -> list[dict]:
    return store.query(
        "SELECT prompt, messages, answer, process_labels, metadata, media_ref FROM problems "
        "WHERE source = 'cotzero' AND split = 'heldout' ORDER BY id LIMIT $n",
        {"n": limit},
    ).to_pylist()


def evaluate(model: Path, problems: list[dict], store: ReplayStore) -> dict:
    tokenizer = load_tokenizer(model)
    engine = make_engine("transformers", model=model, batch_size=256)
    prompts = [prompt_policy.render(tokenizer, p["prompt"], p["messages"]) for p in problems]
    return evaluate_cotzero(engine, problems, with_images(store, prompts, problems), max_new_tokens=MAX_NEW)


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, dict]:
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    store = build_store(
        tmp, seed, args.scenes, chat=args.model == "bpe", mode="image" if args.model == "vision" else "text"
    )
    problems = heldout(store, args.eval)
    hier = sft_rows(store, "train", "cotzero")
    flat = [{**r, "target": r["target"].rsplit(";", 1)[-1]} for r in hier]  # '#yes' / '#no'
    if args.model == "bpe":
        flat = [{**r, "messages": [*r["messages"][:-1], {"role": "assistant", "content": r["target"]}]} for r in flat]
    base = init_model(args.model, tmp / "base", seed=seed)
    out: dict[str, dict] = {"always-no": score_cotzero(problems, ["#no"] * len(problems))}  # the majority answer
    began = time.perf_counter()
    starts = {"sft-flat": sft(base, tmp / "flat", flat, args.sft_steps, 1e-3, store),
              "sft-hier": sft(base, tmp / "hier", hier, args.sft_steps, 1e-3, store)}  # fmt: skip
    print(f"seed {seed}: {len(hier)} training chains, {len(problems)} held-out questions, "
          f"SFT x2 {time.perf_counter() - began:.0f} s", flush=True)  # fmt: skip
    for arm, path in starts.items():
        out[arm] = evaluate(path, problems, store)
    for arm, rewards in REWARDS.items():
        final, wall = train_arm(store, starts["sft-hier"], f"{arm}-s{seed}", args.rl_steps, seed, tmp,
                                source="cotzero", rewards=rewards, max_completion_length=MAX_NEW)  # fmt: skip
        out[arm] = {**evaluate(final, problems, store), "wall_s": wall}
    for arm in ARMS:
        print(f"  {arm:12s} {json.dumps(out[arm], sort_keys=True)}", flush=True)
    return out


def table(results: list[dict[str, dict]]) -> None:
    levels = sorted({lvl for r in results for arm in r.values() for lvl in arm["by_level"]})
    cols = ["accuracy", *(f"level {lvl}" for lvl in levels), "perturbed", "inconsistency F1", "format", "semantic"]
    print("\n| arm | " + " | ".join(cols) + " |")
    print("| --- |" + " ---: |" * len(cols))
    for arm in ARMS:
        runs = [r[arm] for r in results]
        cells = [mean_sd([x["accuracy"] for x in runs])]
        cells += [mean_sd([x["by_level"].get(lvl) for x in runs]) for lvl in levels]
        cells += [mean_sd([x[k] for x in runs]) for k in ("perturbed", "inconsistency_f1", "format", "semantic")]
        print(f"| {arm} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("char", "bpe", "vision"), default="char")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scenes", type=int, default=1500)
    parser.add_argument("--sft-steps", type=int, default=800)
    parser.add_argument("--rl-steps", type=int, default=60)
    parser.add_argument("--eval", type=int, default=400)
    args = parser.parse_args()
    results = [run_seed(seed, args) for seed in args.seeds]
    table(results)


if __name__ == "__main__":
    main()
