"""A policy as its own verifier at inference (Learning to Self-Verify, SPECS §11.2): n samples per
problem, the policy judges each (the training template), and best-of-n keeps the first sample it
calls right (else the first sample). Reported with what the verdicts are worth: verification
accuracy against the true labels, balanced over right and wrong samples."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonloop.tasks.recipes.self_verify import verify_prompt
from reasonloop.tasks.rewards.answers import exact

if TYPE_CHECKING:
    from reasonloop.storage import ReplayStore


def pick_verified(verdicts: list[bool], n: int) -> list[int]:
    """Per problem (n consecutive samples), the index of the first sample judged right, else its first."""
    return [next((i * n + k for k in range(n) if verdicts[i * n + k]), i * n) for i in range(len(verdicts) // n)]


def evaluate_self_verify(
    store: ReplayStore, model: str | Path, *, n: int = 4, source: str = "", limit: int = 512, template: str = "teacher",
    mode: str = "full", temperature: float = 0.7, max_new_tokens: int = 64, verdict_tokens: int = 16, seed: int = 0,
    batch_size: int = 512,
) -> dict[str, Any]:  # fmt: skip
    """Held-out solve accuracy (greedy), and over n samples at `temperature`: first-sample,
    majority-vote and self-verified best-of-n accuracy, verification accuracy (all samples, and
    balanced: the mean of the accuracy on right and on wrong samples) and the Yes rate."""
    from reasonloop.tasks import prompts as prompt_policy
    from reasonloop.tasks.engines import SamplingParams
    from reasonloop.tasks.engines.transformers_engine import TransformersEngine
    from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type
    from reasonloop.trainers.eval_setup import eval_problems
    from reasonloop.trainers.evaluate import majority_right

    problems = [p for p in eval_problems(store, "heldout", source, limit) if p["answer_type"] != "rubric"]
    engine = TransformersEngine(model, batch_size=batch_size)
    tokenizer = engine.tokenizer

    def ask(texts: list[str], chat: list[bool], k: int, sampling: SamplingParams) -> list[Any]:
        rendered = [prompt_policy.render(tokenizer, t, [{"role": "user", "content": t}] if c else None)
                    for t, c in zip(texts, chat, strict=True)]  # fmt: skip
        return engine.generate(prompt_policy.engine_inputs(engine, tokenizer, rendered), k, sampling)

    def right(rows: list[dict], texts: list[str]) -> list[bool]:
        scores = score_by_answer_type([r["prompt"] for r in rows], texts, [r["answer"] for r in rows],
                                      [r["answer_type"] for r in rows])  # fmt: skip
        return [s == 1.0 for s in scores]

    chat = [bool(p["messages"]) for p in problems]
    questions = [p["prompt"] for p in problems]
    greedy = ask(questions, chat, 1, SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
    samples = ask(questions, chat, n, SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed))
    owners = [problems[c.prompt_index] for c in samples]
    texts = [c.final_text for c in samples]
    truth = right(owners, texts)
    asks = [verify_prompt(o["prompt"], t, template, mode) for o, t in zip(owners, texts, strict=True)]
    said = ask(
        asks, [bool(o["messages"]) for o in owners], 1, SamplingParams(temperature=0, max_new_tokens=verdict_tokens)
    )
    yes = [s == 1.0 for s in exact(asks, [c.final_text for c in said], answer=["Yes"] * len(said))]
    agree = [y == t for y, t in zip(yes, truth, strict=True)]
    on_right = [a for a, t in zip(agree, truth, strict=True) if t]
    on_wrong = [a for a, t in zip(agree, truth, strict=True) if not t]
    picked = pick_verified(yes, n)
    majority = majority_right(texts, n, [p["answer"] for p in problems])
    count = max(1, len(problems))
    return {
        "n": len(problems), "samples": n,
        "solve_accuracy": sum(right(problems, [c.final_text for c in greedy])) / count,
        "first_sample_accuracy": sum(truth[i * n] for i in range(len(problems))) / count,
        "majority_accuracy": sum(majority) / count,
        "verified_best_of_n_accuracy": sum(truth[i] for i in picked) / count,
        "verify_accuracy": sum(agree) / max(1, len(agree)),
        "verify_balanced_accuracy": (sum(on_right) / max(1, len(on_right)) + sum(on_wrong) / max(1, len(on_wrong))) / 2,
        "yes_rate": sum(yes) / max(1, len(yes)), "sample_accuracy": sum(truth) / max(1, len(truth)),
    }  # fmt: skip
