"""Backtrack decoding (BSAFE+, SPECS §7): on `[CATEGORY_c][BACKTRACK_BY_X]`, delete the X tokens
before the signal and the signal itself from what the user sees; generation goes on.

Generation goes on with the raw tokens in context, the deleted span included: that is what the
BSAFE+ targets teach (s[:k] ⊕ v ⊕ signal ⊕ s[k:] — the safe continuation is learned with v in
view), so rolling the KV cache back would show the model a context it was never trained on.
Engines return the raw completion (what a trainer trains on); `apply_backtrack` adds the
post-backtrack text (`Completion.visible_text`, what rewards, evaluation and users get) and the
counts a reward penalizes, whatever engine sampled: the trainer's sampler calls it on every
rollout (after a prefill too), and `BacktrackingEngine` wraps an engine for everything else.

Rules, the same for the data generator's X and for this decoder: a token is "before" a signal
when it starts before the signal's first character; X counts tokens of the policy's tokenizer
(characters for the character model). A signal fragment that does not parse (`[BACKTRACK_BY_`
without a number, no closing bracket, an unknown category, X = 0) is not executed: it stays in
the text and counts as malformed. X beyond the tokens still visible deletes them all and counts
as malformed too (the model asked for more than it wrote).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from reasonloop.tasks.engines.base import Completion, Engine, Prompt, SamplingParams

SIGNAL = re.compile(r"\[CATEGORY_(?P<category>[a-z_]+)\]\[BACKTRACK_BY_(?P<x>\d+)\]")
# An attempted signal, well-formed or not (one count per attempt, however it breaks).
FRAGMENT = re.compile(r"\[CATEGORY_[^\[\]]*\]?(?:\[BACKTRACK_BY_[^\[\]]*\]?)?|\[BACKTRACK_BY_[^\[\]]*\]?")


def signal_text(category: str, x: int) -> str:
    return f"[CATEGORY_{category}][BACKTRACK_BY_{x}]"


@dataclass(frozen=True)
class Backtracked:
    text: str  # what the user sees
    signals: int  # well-formed signals executed
    deleted_tokens: int  # tokens deleted by them (the signals' own tokens not counted)
    malformed: int  # fragments not executed + signals whose X exceeded the visible tokens
    categories: tuple[str, ...]  # of the executed signals, in order

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "categories": list(self.categories)}


def backtrack(
    text: str, token_starts: Sequence[int] | None = None, categories: Collection[str] | None = None
) -> Backtracked:
    """Execute the signals in `text`. `token_starts`: the character offset where each token
    starts, ascending (None: one token per character); `categories`: the valid ones (None: any)."""
    starts = list(range(len(text))) if token_starts is None else list(token_starts)
    shown = [True] * len(text)
    executed: list[str] = []
    deleted = malformed = 0
    inside = []  # character spans of executed signals (their fragments are not malformed)
    for match in SIGNAL.finditer(text):
        x, category = int(match["x"]), match["category"]
        if x == 0 or (categories is not None and category not in categories):
            continue  # left as text; counted with the other fragments below
        inside.append((match.start(), match.end()))
        before = [s for s in starts if s < match.start() and shown[s]]
        if x > len(before):
            malformed += 1
        chosen = before[-x:] if x <= len(before) else before
        cut = chosen[0] if chosen else match.start()
        for i in range(cut, match.end()):
            shown[i] = False
        deleted += len(chosen)
        executed.append(category)
    malformed += sum(not any(a <= f.start() < b for a, b in inside) for f in FRAGMENT.finditer(text))
    visible = "".join(ch for ch, keep in zip(text, shown, strict=True) if keep)
    return Backtracked(visible, len(executed), deleted, malformed, tuple(executed))


def token_starts(tokenizer: Any, ids: Sequence[int], text: str) -> list[int]:
    """Where each of `ids` starts in `text` (their decoding), by decoding prefixes: exact for
    byte-level BPE, whose single tokens may not decode alone. Special tokens decode to nothing;
    offsets are clipped to the text (an engine may have cut a stop string off)."""
    starts, previous = [], 0
    for i in range(len(ids)):
        starts.append(min(previous, len(text)))
        previous = len(tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True))
    return sorted({s for s in starts if s < len(text)})


class BacktrackingEngine:
    """Any engine, with backtrack decoding applied to what it returns: `visible_text` and
    `extra["backtrack"]` (Backtracked.as_dict) on every completion; the raw text and tokens are
    kept for training. Attributes of the wrapped engine (weight sync, flags) pass through."""

    def __init__(self, engine: Engine, tokenizer: Any, categories: Collection[str] | None = None) -> None:
        self.engine, self.tokenizer, self.categories = engine, tokenizer, categories
        self.name = f"backtracking:{engine.name}"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingParams) -> list[Completion]:
        completions = self.engine.generate(prompts, n, sampling)
        for c in completions:
            apply_backtrack(c, self.tokenizer, self.categories)
        return completions


def apply_backtrack(
    completion: Completion, tokenizer: Any, categories: Collection[str] | None = None, prefix: str = ""
) -> Backtracked:
    """Set `completion.visible_text` and `extra["backtrack"]`; return the result. `prefix`: text
    the response was forced to start with (a prefill; it ends the prompt): the shown response
    includes it, and a signal may delete into it."""
    text = prefix + completion.text
    ids = list(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else []
    starts = token_starts(tokenizer, ids + list(completion.token_ids), text) if FRAGMENT.search(text) else None
    result = backtrack(text, starts, categories)
    completion.visible_text = result.text
    completion.extra["backtrack"] = {**result.as_dict(), "tokens": len(completion.token_ids)}
    return result
