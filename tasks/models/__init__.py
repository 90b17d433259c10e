"""Policy models: load any Hugging Face causal LM, or build the tiny local one."""

from __future__ import annotations

from pathlib import Path

KINDS = ("char", "bpe")  # the two locally built model kinds every model-facing feature is tested on


def init_model(kind: str, out: str | Path, *, size: str = "tiny", seed: int = 0) -> Path:
    """Build a small model of `kind` (char: Llama + character tokenizer; bpe: Qwen2 + byte-level BPE,
    ChatML, two EOS ids, bf16; vision: LLaVA with that Qwen2) at `out`; ValueError for an unknown
    kind or size."""
    if kind == "char":
        from reasonloop.tasks.models.tiny import init_tiny_model

        return init_tiny_model(out, size=size, seed=seed)
    if kind == "bpe":
        from reasonloop.tasks.models.bpe import init_bpe_model

        return init_bpe_model(out, size=size, seed=seed)
    if kind == "vision":
        from reasonloop.tasks.models.vision import init_vision_model

        return init_vision_model(out, size=size, seed=seed)
    raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join((*KINDS, 'vision'))}")
