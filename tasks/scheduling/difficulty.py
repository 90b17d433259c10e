"""VeriTime difficulty scheduling (SPECS §4, reconstructed): order by taxonomy level, annotate each
problem's pass rate with k samples from the current model, then

    pass rate 1                      -> drop (already solved: zero-variance groups, no signal)
    pass rate in (0, 1)              -> learnable: train on it, in taxonomy order
    pass rate 0, process score >= t  -> promising-challenging: keep, schedule last
    pass rate 0, process score < t   -> drop (hopeless for now)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonloop.tasks.engines.base import Engine, SamplingParams
from reasonloop.tasks.prompts import render
from reasonloop.tasks.recipes.veritime import LEVEL
from reasonloop.tasks.rewards import get_reward


@dataclass(frozen=True)
class Annotated:
    problem: dict
    pass_rate: float  # share of k samples whose answer is right
    process: float  # mean VeriTime process score of the k samples (0..6)

    @property
    def bucket(self) -> str:
        if self.pass_rate >= 1.0:
            return "solved"
        if self.pass_rate > 0.0:
            return "learnable"
        return "promising" if self.process >= PROMISING else "hopeless"


PROMISING = 3.0


def rendered_prompts(engine: Engine, problems: Sequence[dict]) -> list:
    """Prompts as the engine's model sees them in training: problems with `messages` go through its
    tokenizer's chat template (tasks/prompts.py); engines without a tokenizer get the plain text."""
    tokenizer = getattr(engine, "tokenizer", None)
    return [render(tokenizer, p["prompt"], p.get("messages")) if tokenizer else p["prompt"] for p in problems]


def annotate(
    engine: Engine, problems: Sequence[dict], *, k: int = 4, max_new_tokens: int = 48, seed: int = 0
) -> list[Annotated]:
    """Pass rate and mean process score of k samples per problem from `engine`'s model."""
    rendered = rendered_prompts(engine, problems)
    prompts = [p["prompt"] for p in problems]
    out = engine.generate(rendered, k, SamplingParams(max_new_tokens=max_new_tokens, seed=seed))
    rows = [problems[c.prompt_index] for c in out]
    answer = get_reward("vt_answer")(prompts, [c.text for c in out], answer=[r["answer"] for r in rows])
    process = get_reward("vt_process")(
        prompts, [c.text for c in out], process_labels=[r.get("process_labels") for r in rows]
    )
    result = []
    for i, problem in enumerate(problems):
        a = [s or 0.0 for s in answer[i * k : (i + 1) * k]]
        p = [s or 0.0 for s in process[i * k : (i + 1) * k]]
        result.append(Annotated(problem, sum(x > 0 for x in a) / k, sum(p) / k))
    return result


def schedule(annotated: Sequence[Annotated]) -> list[dict]:
    """Learnable problems by taxonomy level (deductive/quantitative, causal, inductive), then the
    promising-challenging ones; solved and hopeless problems are dropped."""

    def level(a: Annotated) -> int:
        return LEVEL.get(a.problem.get("taxonomy") or "", 9)

    learnable = sorted((a for a in annotated if a.bucket == "learnable"), key=lambda a: (level(a), -a.pass_rate))
    promising = sorted((a for a in annotated if a.bucket == "promising"), key=lambda a: (level(a), -a.process))
    return [a.problem for a in (*learnable, *promising)]


def write_curriculum(
    engine: Engine, problems: Sequence[dict], out: str | Path, *, k: int = 4, max_new_tokens: int = 48, seed: int = 0
) -> dict[str, int]:
    """Annotate `problems` with `engine`'s model, schedule them, and write the ordered ids as the
    JSON file `TrainConfig.curriculum` reads. Returns the count per bucket (and `scheduled`)."""
    annotated = annotate(engine, problems, k=k, max_new_tokens=max_new_tokens, seed=seed)
    scheduled = schedule(annotated)
    counts = {b: sum(a.bucket == b for a in annotated) for b in ("solved", "learnable", "promising", "hopeless")}
    counts["scheduled"] = len(scheduled)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"problem_ids": [p["id"] for p in scheduled], "buckets": counts, "k": k}))
    return counts


def pass_rates(
    engine: Engine, problems: Sequence[dict], score: Any, *, k: int = 8, pass_at: float = 0.7,
    max_new_tokens: int = 48, temperature: float = 1.0, seed: int = 0,
) -> list[float]:  # fmt: skip
    """Share of k samples per problem whose score (`score(prompts, texts, rows)` -> one float or
    None per sample) is at least `pass_at`: rule checkers give 0/1, a rubric judge a fraction. The
    success rate Dr. SCI uses as difficulty (SPECS §6); None counts as a failure."""
    if not problems:
        return []
    rendered = rendered_prompts(engine, problems)
    # One seed per problem, from its prompt: a problem's samples do not depend on which other
    # problems share the call (chunking, order, a rerun over a grown table).
    seeds = tuple(int.from_bytes(hashlib.blake2b(f"{seed}/{p['prompt']}".encode(), digest_size=8).digest(), "big") >> 1
                  for p in problems)  # fmt: skip
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seeds=seeds)
    out = sorted(engine.generate(rendered, k, sampling), key=lambda c: c.prompt_index)
    rows = [problems[c.prompt_index] for c in out]
    scores = score([r["prompt"] for r in rows], [c.final_text for c in out], rows)
    passed = [0] * len(problems)
    for c, s in zip(out, scores, strict=True):
        passed[c.prompt_index] += s is not None and s >= pass_at
    return [p / k for p in passed]
