"""Greedy accuracy (and pass@k) of a policy on a fixed list of problems."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reasonloop.tasks.engines.base import Engine, SamplingParams
from reasonloop.tasks.recipes.octopus import SEPARATOR
from reasonloop.tasks.rewards import get_reward
from reasonloop.tasks.rewards.answers import extract_answer, normalize_answer
from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type


@dataclass
class EvalResult:
    accuracy: float
    n: int
    stderr: float  # binomial standard error of `accuracy`

    def __str__(self) -> str:
        return f"{100 * self.accuracy:.1f}% ± {100 * self.stderr:.1f} (n={self.n})"


def greedy_accuracy(
    engine: Engine, problems: Sequence[dict], *, max_new_tokens: int, reward: str | None = None
) -> EvalResult:
    """Share of problems whose greedy completion scores 1: by `reward`, or by each problem's
    `answer_type` (exact where a row has none)."""
    prompts = [p["prompt"] for p in problems]
    out = engine.generate(prompts, 1, SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
    texts, answers = [c.text for c in out], [p["answer"] for p in problems]
    if reward is not None:
        scores = get_reward(reward)(prompts, texts, answer=answers)
    else:
        scores = score_by_answer_type(prompts, texts, answers, [p.get("answer_type") for p in problems])
    acc = sum(s == 1.0 for s in scores) / max(1, len(scores))
    return EvalResult(acc, len(scores), math.sqrt(acc * (1 - acc) / max(1, len(scores))))


@dataclass(frozen=True)
class Gain:
    """Accuracy difference of two models on the same problems, with its standard error."""

    delta: float
    stderr: float
    paired: bool  # True: per-problem differences were available (the SE every A/B eval should use)

    @property
    def beyond_noise(self) -> bool:
        return abs(self.delta) > self.stderr


def paired_gain(after: dict, before: dict) -> Gain:
    """Difference of two evaluations (dicts with `accuracy`, `stderr` and, ideally, `ids`/`correct`).

    On the same problems the right standard error is that of the mean per-problem difference
    d_i = after_i - before_i: sd(d) / sqrt(n). Treating the two accuracies as independent
    (sqrt(se_a^2 + se_b^2)) ignores that both models solve mostly the same problems and overstates
    the noise; it is used only when the per-problem results are missing or cover other problems.
    """
    delta = after["accuracy"] - before["accuracy"]
    if after.get("ids") and after.get("ids") == before.get("ids"):
        diffs = [a - b for a, b in zip(after["correct"], before["correct"], strict=True)]
        n = len(diffs)
        mean = sum(diffs) / n
        var = sum((d - mean) ** 2 for d in diffs) / max(1, n - 1)
        return Gain(delta, math.sqrt(var / n), paired=True)
    return Gain(delta, math.sqrt(after["stderr"] ** 2 + before["stderr"] ** 2), paired=False)


def with_corrections(
    engine: Engine, tokenizer: Any, prompt_ids: list[list[int]], texts: list[str], rounds: int, max_new_tokens: int
) -> list[str]:
    """Octopus's test-time scaling: `rounds` times, append the self-correction separator to each
    completion and let the policy continue greedily; the whole texts (score the last answer)."""
    if rounds and not getattr(engine, "accepts_token_ids", False):
        raise ValueError("corrections need an engine that takes token ids (the continuation is prompt + completion)")
    texts = list(texts)
    for _ in range(rounds):
        asks = [
            list(ids) + list(tokenizer(text + SEPARATOR, add_special_tokens=False)["input_ids"])
            for ids, text in zip(prompt_ids, texts, strict=True)
        ]
        more = engine.generate(asks, 1, SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
        for c in more:
            texts[c.prompt_index] += SEPARATOR + c.text
    return texts


def refine_greedy(
    engine: Engine, tokenizer: Any, problems: Sequence[dict], rendered: Sequence[Any], drafts: Sequence[str], *,
    template: str, request: str, max_new_tokens: int,
) -> list[str]:  # fmt: skip
    """iGRPO's second pass at inference: each problem's refinement prompt around its draft (the
    prompt training uses), answered greedily; the refinements in problem order."""
    from reasonloop.tasks import prompts as prompt_policy
    from reasonloop.tasks.recipes.igrpo_refine import refinement_prompt

    asks = [
        refinement_prompt(r, p["prompt"], d, template, request)
        for p, r, d in zip(problems, rendered, drafts, strict=True)
    ]  # fmt: skip
    inputs = prompt_policy.engine_inputs(engine, tokenizer, asks)
    out = engine.generate(inputs, 1, SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
    texts = [""] * len(asks)
    for c in out:
        texts[c.prompt_index] = c.final_text
    return texts


def two_pass_stats(draft_right: Sequence[bool], refine_right: Sequence[bool]) -> dict[str, float]:
    """Single-pass (draft) vs draft→refine accuracy, and where the second pass moved answers:
    w→c is the share of wrong drafts it fixed, c→w the share of right drafts it broke."""
    n = max(1, len(draft_right))
    wrong = [r for d, r in zip(draft_right, refine_right, strict=True) if not d]
    right = [r for d, r in zip(draft_right, refine_right, strict=True) if d]
    draft_acc, refine_acc = sum(draft_right) / n, sum(refine_right) / n
    return {
        "draft_accuracy": draft_acc, "refine_accuracy": refine_acc, "refine_minus_draft": refine_acc - draft_acc,
        "w_to_c": sum(wrong) / max(1, len(wrong)), "c_to_w": sum(not r for r in right) / max(1, len(right)),
        "n": float(len(draft_right)),
    }  # fmt: skip


def majority_right(texts: Sequence[str], n: int, answers: Sequence[object]) -> list[bool]:
    """Per problem (n consecutive completions in `texts`): is its most common final answer the gold one?"""
    votes = [
        Counter(normalize_answer(extract_answer(t)) for t in texts[i * n : (i + 1) * n]) for i in range(len(answers))
    ]
    return [v.most_common(1)[0][0] == normalize_answer(str(a)) for v, a in zip(votes, answers, strict=True)]
