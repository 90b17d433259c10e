"""CoTZero evaluation: greedy answers on stored CoTZero problems, scored per level and on the
lexical-perturbation negatives, with the paper's anchor metric.

    accuracy           share of right yes/no answers (the last '#yes'/'#no' of the completion)
    by_level           accuracy per question level (1 atomic, 2 relation/count, 3 multi-hop)
    perturbed          accuracy on the negatives alone (one token changed so the answer flipped)
    inconsistency_f1   F1 of answering "no" (the statement is inconsistent with the scene) over the
                       perturbation set: each negative and the question it was made from
    format, semantic   share of well-formed chains; mean per-step agreement with the gold steps
    steps              over the well-formed chains: G right, L and R item F1, R exactly right, and
                       whether the answer is the one the chain's own facts give (exist/relation
                       questions, whose one fact decides): where a chain goes wrong
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from reasonloop.tasks.engines.base import Engine, SamplingParams
from reasonloop.tasks.rewards.ccvr import ANSWER, format_score, parse_chain, semantic_score, step_scores


def predicted_answer(text: str) -> str | None:
    found = ANSWER.findall(text)
    return found[-1].lower() if found else None


def f1_of(pairs: Sequence[tuple[str | None, str]], positive: str = "no") -> float:
    """F1 for `positive` over (predicted, gold) pairs; an unreadable prediction counts as wrong."""
    tp = sum(1 for p, g in pairs if p == positive and g == positive)
    fp = sum(1 for p, g in pairs if p == positive and g != positive)
    fn = sum(1 for p, g in pairs if p != positive and g == positive)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def score_cotzero(problems: Sequence[dict], texts: Sequence[str]) -> dict[str, Any]:
    """Metrics for completions `texts` aligned with `problems` (rows with answer, process_labels,
    metadata)."""
    by_level: dict[int, list[bool]] = defaultdict(list)
    perturbed, pair_set, formats, semantics = [], [], [], []
    steps: dict[str, list[float]] = defaultdict(list)  # per level of the chain, over well-formed chains
    bases = {_base_key(p) for p in problems if _meta(p).get("is_perturbed")}
    for problem, text in zip(problems, texts, strict=True):
        meta, gold = _meta(problem), str(problem["answer"]).lower()
        guess = predicted_answer(text)
        right = guess == gold
        by_level[int(meta.get("level", 0))].append(right)
        formats.append(format_score(text))
        semantics.append(semantic_score(text, problem["process_labels"]) if problem.get("process_labels") else 0.0)
        chain = parse_chain(text)
        if chain is not None and problem.get("process_labels"):
            for name, value in step_scores(chain, problem["process_labels"]).items():
                steps[name].append(value)
        if meta.get("is_perturbed"):
            perturbed.append(right)
        if meta.get("is_perturbed") or _key(problem) in bases:
            pair_set.append((guess, gold))
    n = len(texts)
    return {
        "n": n,
        "accuracy": sum(sum(v) for v in by_level.values()) / n if n else 0.0,
        "by_level": {level: sum(v) / len(v) for level, v in sorted(by_level.items())},
        "perturbed": sum(perturbed) / len(perturbed) if perturbed else None,
        "inconsistency_f1": f1_of(pair_set) if pair_set else None,
        "format": sum(formats) / n if n else 0.0,
        "semantic": sum(semantics) / n if n else 0.0,
        "steps": {name: sum(v) / len(v) for name, v in steps.items()},
    }


def _meta(problem: dict) -> dict:
    meta = problem.get("metadata")
    return json.loads(meta) if isinstance(meta, str) and meta else dict(meta or {})


def _key(problem: dict) -> tuple:
    meta = _meta(problem)
    return json.dumps(meta.get("scene"), sort_keys=True), json.dumps(meta.get("query"), sort_keys=True)


def _base_key(problem: dict) -> tuple:
    """The key of the question a negative was made from."""
    meta = _meta(problem)
    return json.dumps(meta.get("scene"), sort_keys=True), json.dumps(meta.get("base_query"), sort_keys=True)


def evaluate_cotzero(
    engine: Engine, problems: Sequence[dict], prompts: Sequence[Any], *, max_new_tokens: int = 128
) -> dict[str, Any]:
    """Greedy completions of `prompts` (the problems rendered for the engine) and their metrics."""
    completions = engine.generate(list(prompts), 1, SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens))
    return score_cotzero(problems, [c.final_text for c in completions])
