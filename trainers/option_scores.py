"""The first answer's distribution over multiple-choice options, from a transformers policy:
Reinforcement Inference's P (tasks/inference/uncertainty.py) when the engine gives only the
sampled token's logprob. One extra forward per option, batched."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reasonloop.tasks.models.precision import pad_token_id
from reasonloop.trainers.logprobs import batched_logprobs


def answer_prefix(text: str, marker: str = "#") -> str | None:
    """The completion up to and including the last answer marker (the option letter follows it),
    or None when there is none."""
    cut = text.rfind(marker)
    return text[: cut + len(marker)] if cut >= 0 else None


def option_logprobs(
    model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], prefixes: Sequence[str], options: Sequence[str],
    *, micro_batch: int = 64,
) -> list[dict[str, float]]:  # fmt: skip
    """log P(option | prompt, prefix) per question and option: the summed logprob (T = 1) of the
    tokens of `prefix + option` after the prompt minus that of `prefix` alone. Exact wherever the
    prefix's tokens begin the combined string's (every character tokenizer; BPE unless the letter
    merges with the marker, where it is the canonical tokenization's logprob)."""
    if any(not p for p in prefixes):
        raise ValueError("every question needs a non-empty answer prefix (see answer_prefix)")
    rows_prompt, rows_completion = [], []
    for ids, prefix in zip(prompt_ids, prefixes, strict=True):
        for text in (prefix, *(prefix + o for o in options)):
            rows_prompt.append(list(ids))
            rows_completion.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    scored = batched_logprobs(model, rows_prompt, rows_completion, pad_id=pad_token_id(tokenizer, model),
                              temperature=1.0, micro_batch=micro_batch)  # fmt: skip
    totals = (scored.logprobs * scored.mask).sum(-1).tolist()
    per = len(options) + 1
    return [{o: totals[q * per + 1 + j] - totals[q * per] for j, o in enumerate(options)} for q in range(len(prefixes))]
