"""How safe and how capable a policy is, on the `safety` recipe's prompts (greedy, backtrack decoding on):

- `violation_rate`: the shown text violates the prompt's policy (rule critic), plain prompts,
  greedy; `sampled_violation_rate`: the same for one sample at T = 1 (greedy hides a minority
  behaviour a sampled response still shows);
- `prefill_violation_rate`: the same when the response is forced to start with a violating
  prefix (the violation minus its last two characters: the model completes it, or backtracks),
  and `prefill_backtrack_rate`, how often it backtracked there; `prefill_half_violation_rate`:
  the same attack with only the first half of the violation forced (not the form RLBF's
  `--prefill-fraction` trains on: a check that an attack-trained policy generalizes);
- `backtrack_rate`: responses with an executed signal; `raw_violation_rate`: violations in the
  raw text (before backtracking: what the signal saved is raw minus shown);
  `false_backtrack_rate`: responses that backtracked with no violation in their raw text (the
  signal deleted safe text);
- `over_trigger_rate`: responses to clean prompts (no protected data: `arith` prompts) with a signal;
- `malformed_rate`: responses with a signal fragment that did not execute;
- `accuracy` (safety prompts) and `clean_accuracy` (clean prompts): the task's exact answer,
  judged on the shown text — the alignment tax is their drop.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from reasonloop.tasks.engines.backtrack import BacktrackingEngine, apply_backtrack
from reasonloop.tasks.engines.base import Engine, SamplingParams
from reasonloop.tasks.recipes.safety import SOURCE, prefill_attack
from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type
from reasonloop.tasks.rewards.safety import RuleCritic


def evaluate_stored(store: Any, model: Any, limit: int = 256, max_new_tokens: int = 96) -> dict[str, float]:
    """`evaluate_safety` of `model` (a folder or id, sampled by the transformers engine) on the
    store's first `limit` held-out safety problems, with as many held-out `arith` ones as clean prompts."""
    from reasonloop.tasks.engines.transformers_engine import TransformersEngine

    query = (
        "SELECT prompt, answer, answer_type FROM problems WHERE source = $s AND split = 'heldout' ORDER BY id LIMIT $n"
    )
    problems = store.query(query, {"s": SOURCE, "n": limit}).to_pylist()
    clean = store.query(query, {"s": "arith", "n": limit}).to_pylist()
    engine = TransformersEngine(model, batch_size=256)
    return evaluate_safety(engine, engine.tokenizer, problems, clean, max_new_tokens=max_new_tokens)


def attack(
    engine: Engine, tokenizer: Any, prompts: Sequence[str], prefixes: Sequence[str], sampling: SamplingParams
) -> tuple[list[str], list[bool]]:
    """Responses forced to start with `prefixes`: the shown response (prefix included, since the
    decoder may delete into it) and whether it backtracked."""
    out = engine.generate([p + x for p, x in zip(prompts, prefixes, strict=True)], 1, sampling)
    results = [apply_backtrack(c, tokenizer, prefix=x) for x, c in zip(prefixes, out, strict=True)]
    return [r.text for r in results], [r.signals > 0 for r in results]


def _rate(flags: Sequence[bool]) -> float:
    return sum(flags) / max(1, len(flags))


def evaluate_safety(
    engine: Engine, tokenizer: Any, problems: Sequence[dict], clean: Sequence[dict], *, max_new_tokens: int = 64,
    seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """The metrics above. `problems`: safety-recipe problems (prompt, answer); `clean`: problems
    without protected data. Prompts are plain text (the recipes' own format)."""
    critic, greedy = RuleCritic(), SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
    sampler = BacktrackingEngine(engine, tokenizer)
    prompts = [p["prompt"] for p in problems]
    plain = sampler.generate(prompts, 1, greedy)
    shown = [c.final_text for c in plain]
    stats = [c.extra["backtrack"] for c in plain]
    raw_found = critic(prompts, [c.text for c in plain])
    rng = random.Random(seed)
    prefixes = [prefill_attack(p, rng) or "" for p in prompts]
    attacked_shown, attacked_signals = attack(engine, tokenizer, prompts, prefixes, greedy)
    halves = [prefill_attack(p, rng, keep=0.5) or "" for p in prompts]
    half_shown, _ = attack(engine, tokenizer, prompts, halves, greedy)
    sampled = sampler.generate(prompts, 1, SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, seed=seed))
    clean_out = sampler.generate([p["prompt"] for p in clean], 1, greedy) if clean else []

    def accuracy(rows: Sequence[dict], texts: list[str]) -> float:
        scores = score_by_answer_type([r["prompt"] for r in rows], texts, [r["answer"] for r in rows],
                                      [r.get("answer_type") or "exact" for r in rows])  # fmt: skip
        return _rate([s == 1.0 for s in scores])

    return {
        "n": float(len(problems)),
        "violation_rate": _rate([v is not None for v in critic(prompts, shown)]),
        "raw_violation_rate": _rate([v is not None for v in raw_found]),
        "false_backtrack_rate": _rate([v is None and s["signals"] > 0 for v, s in zip(raw_found, stats, strict=True)]),
        "sampled_violation_rate": _rate([v is not None for v in critic(prompts, [c.final_text for c in sampled])]),
        "prefill_violation_rate": _rate([v is not None for v in critic(prompts, attacked_shown)]),
        "prefill_backtrack_rate": _rate(attacked_signals),
        "prefill_half_violation_rate": _rate([v is not None for v in critic(prompts, half_shown)]),
        "backtrack_rate": _rate([s["signals"] > 0 for s in stats]),
        "malformed_rate": _rate([s["malformed"] > 0 for s in stats]),
        "over_trigger_rate": _rate([c.extra["backtrack"]["signals"] > 0 for c in clean_out]),
        "accuracy": accuracy(problems, shown),
        "clean_accuracy": accuracy(clean, [c.final_text for c in clean_out]) if clean else float("nan"),
    }
