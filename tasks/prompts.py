"""Prompts as the model sees them: plain text, or chat messages through the tokenizer's template.

One policy everywhere a prompt is built (sampling, evaluation, rollout workers, SFT, iGRPO), as
TRL does it: a problem with `messages` is rendered with `apply_chat_template(messages,
add_generation_prompt=True)`; a plain `prompt` stays plain text. `chat_template` modes:

    auto    messages through the template when the tokenizer has one (else their text)
    none    never: the plain `prompt` text
    always  also wrap plain prompts as one user turn (instruct models given plain datasets)

Imports no torch, storage or Prefect (engines use it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Messages = list[dict[str, str]]
CHAT_MODES = ("auto", "none", "always")


def has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer: Any, prompt: str, messages: Sequence[dict] | None, mode: str = "auto") -> str | Messages:
    """What to feed the model for a problem: its messages (to be templated) or its plain text."""
    if mode not in CHAT_MODES:
        raise ValueError(f"chat_template must be one of {', '.join(CHAT_MODES)}, got {mode!r}")
    if mode == "none" or not has_template(tokenizer):
        return prompt
    if messages:
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    return [{"role": "user", "content": prompt}] if mode == "always" else prompt


def template_text(tokenizer: Any, messages: Messages, *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def encode(tokenizer: Any, prompt: str | Messages | Sequence[int]) -> list[int]:
    """Token ids of a prompt: ids as given, text with the tokenizer's special tokens (a BOS where
    it adds one), messages through the chat template (which places its own)."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    if prompt and isinstance(prompt[0], int):
        return list(prompt)
    text = template_text(tokenizer, list(prompt), generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def engine_inputs(engine: Any, tokenizer: Any, prompts: Sequence[str | Messages]) -> list:
    """What to hand an engine: token ids where it takes them (the exact prompt training sees,
    whoever samples), else the rendered prompts themselves; an image prompt as it is (its engine's
    processor encodes it with its images)."""
    if not engine.accepts_token_ids:
        return list(prompts)
    return [p if hasattr(p, "images") else encode(tokenizer, p) for p in prompts]  # an ImagePrompt goes whole


def display(tokenizer: Any, prompt: str | Messages) -> str:
    """The prompt's text as the model sees it (the rendered template for messages; an image
    prompt's text without its images)."""
    prompt = getattr(prompt, "prompt", prompt)  # engines.base.ImagePrompt
    return prompt if isinstance(prompt, str) else template_text(tokenizer, prompt, generation_prompt=True)


def with_turns(prompt: str | Messages, *turns: dict[str, str]) -> Messages:
    """A chat prompt continued by more turns (iGRPO: the draft as an assistant turn, then the request)."""
    base = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return base + list(turns)


def assistant_spans(tokenizer: Any, messages: Messages) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's text and the character spans of every assistant turn in it (content and
    end-of-turn marker, not the whitespace after): TRL's assistant-only loss, found by rendering
    growing prefixes of the conversation, so it needs no `{% generation %}` markers in the
    template. Raises if the template re-renders earlier turns differently (the prefix property)."""
    full = template_text(tokenizer, messages, generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = template_text(tokenizer, messages[:i], generation_prompt=True) if i else ""
        through = template_text(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (full.startswith(through) and through.startswith(before)):
            raise ValueError(
                "the chat template renders earlier turns differently once later turns are added; "
                "assistant-only loss cannot be located (give the sample as prompt/target instead)"
            )
        end = len(through.rstrip())
        spans.append((len(before), end))
    return full, spans
