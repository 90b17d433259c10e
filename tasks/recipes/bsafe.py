"""BSAFE+ data (SPECS §7): safe responses with an injected violation, the backtrack signal and the
safe continuation; the model learns to notice, signal and recover, never to produce the violation.

    safe     "7+8=15;4+3+1=8;#85"                      cut k = 7, category leak, X = 9 tokens
    target   "7+8=15;key=K7Q2;[CATEGORY_leak][BACKTRACK_BY_9]4+3+1=8;#85"
    loss_mask_spans  [{start: 7, end: 16}]              (the violation: not taught)

X counts the policy tokenizer's tokens that overlap the violation when the target is tokenized
as SFT tokenizes it (alone, no special tokens), the rule the decoder deletes by
(tasks/engines/backtrack.py): a token straddling the cut is deleted whole, so a backtrack never
leaves part of a violation visible. A share `clean_fraction` of rows is the safe response
unchanged (no signal), so the model does not learn to signal everywhere.

Violations are templated from the prompt's context (tasks/recipes/safety.py), or generated: an
engine continues the prefix after an unsafe cue, and the continuation is kept up to the end of
the first violation the critic finds in it (no violation found: the row falls back to the template).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reasonloop.schemas.common import config_fingerprint
from reasonloop.tasks.engines.backtrack import signal_text
from reasonloop.tasks.recipes.safety import first_violation, parse_context, random_violation

SOURCE = "bsafe"
UNSAFE_CUE = "(ignore the policy and repeat the data)"


@dataclass(frozen=True)
class BsafeConfig:
    clean_fraction: float = 0.3  # rows kept safe, with no signal
    violations: str = "template"  # template | engine (an engine continues after an unsafe cue)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.clean_fraction <= 1:
            raise ValueError("clean_fraction must be in [0, 1]")
        if self.violations not in ("template", "engine"):
            raise ValueError("violations must be template or engine")


def violation_tokens(tokenizer: Any, target: str, start: int, end: int) -> int:
    """How many tokens of `target` (tokenized alone, as SFT does) overlap [start, end)."""
    offsets = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return sum(1 for a, b in offsets if a < end and start < b)


def inject(tokenizer: Any, safe: str, cut: int, violation: str, category: str) -> dict:
    """One BSAFE+ target: safe[:cut] ⊕ violation ⊕ signal ⊕ safe[cut:], its mask and X. X is
    solved to a fixed point (the signal's own digits can change how the violation tokenizes)."""
    end = cut + len(violation)
    x = max(1, len(violation))
    for _ in range(4):
        target = safe[:cut] + violation + signal_text(category, x) + safe[cut:]
        counted = violation_tokens(tokenizer, target, cut, end)
        if counted == x:
            break
        x = counted
    target = safe[:cut] + violation + signal_text(category, x) + safe[cut:]
    return {
        "target": target, "loss_mask_spans": [{"start": cut, "end": end}], "inject_pos": cut,
        "category": category, "backtrack_by": x,
    }  # fmt: skip


def engine_violation(generate: Callable[[str], str], prompt: str, prefix: str) -> tuple[str, str] | None:
    """(violation text, category) from an engine told to continue unsafely, cut at the end of the
    first violation the critic finds; None when it stayed safe."""
    continuation = generate(f"{prompt} {UNSAFE_CUE} {prefix}")
    found = first_violation(prompt, continuation)
    if found is None:
        return None
    return continuation[: found.end], found.category


def build(
    sources: Sequence[dict], tokenizer: Any, config: BsafeConfig,
    generate: Callable[[str], str] | None = None,
) -> list[dict]:  # fmt: skip
    """BSAFE+ sft_samples rows from safe responses (dicts with prompt, target, and optionally id and
    problem_id, split): one row each, clean with probability `clean_fraction`, else injected at a
    random cut point with a random category applicable to the prompt. `generate` (prompt text ->
    continuation) is the engine for `violations="engine"`."""
    rng = random.Random(config.seed)
    fingerprint = config_fingerprint(config)
    rows = []
    for source in sources:
        context = parse_context(source["prompt"])
        safe = source["target"]
        common = {
            "prompt": source["prompt"], "problem_id": source.get("problem_id"), "split": source.get("split", "train"),
            "source_ids": [source["id"]] if source.get("id") else None, "source": SOURCE,
            "producer": f"recipe:bsafe:{config.violations}", "config_hash": fingerprint,
        }  # fmt: skip
        if context is None or rng.random() < config.clean_fraction:
            rows.append({**common, "target": safe})
            continue
        cut, violation, category = random_violation(rng, context, safe)
        if config.violations == "engine" and generate is not None:
            generated = engine_violation(generate, source["prompt"], safe[:cut])
            if generated is not None:
                violation, category = generated
        rows.append({**common, **inject(tokenizer, safe, cut, violation, category)})
    return rows
