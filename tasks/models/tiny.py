"""`reasonloop model init`: a tiny Llama that loads with `from_pretrained` and no network.

Llama, not Qwen2: transformers 5.x gives a folder whose config says `qwen2` a Qwen2Tokenizer no
matter which tokenizer was saved, which silently changes the ids. A Llama folder loads its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from reasonloop.tasks.models.char_tokenizer import build_char_tokenizer


@dataclass(frozen=True)
class TinySize:
    hidden: int  # model width
    layers: int  # decoder layers
    heads: int  # attention heads (head dim = hidden / heads)
    intermediate: int  # MLP width
    max_positions: int  # longest prompt + completion, in characters


SIZES = {
    "tiny": TinySize(hidden=128, layers=2, heads=4, intermediate=384, max_positions=512),  # ~0.45M params
    "small": TinySize(hidden=256, layers=4, heads=8, intermediate=768, max_positions=1024),  # ~3.2M params
}


def seeded(model_cls: type, config: Any, seed: int) -> Any:
    """A randomly initialized model, the same for a seed, leaving the global RNG as it was."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return model_cls(config)
    finally:
        torch.random.set_rng_state(state)


def init_tiny_model(out: str | Path, *, size: str = "tiny", seed: int = 0) -> Path:
    """Write config, safetensors weights, tokenizer and generation config to `out`.
    Deterministic for a seed: the same seed writes byte-identical weights."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    spec = SIZES[size]
    out = Path(out)
    tokenizer = build_char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = seeded(LlamaForCausalLM, config, seed)
    # transformers defaults top_k=50, which silently truncates a ~100-symbol vocabulary: write the
    # sampling defaults explicitly so `generate` samples from the model's own distribution.
    # A chat turn ends with <|end|>, plain text with <eos>: both stop generation, as a chat model's
    # generation config lists its end-of-turn token beside the tokenizer's EOS.
    end_of_turn = tokenizer.convert_tokens_to_ids("<|end|>")
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=1.0, top_p=1.0, top_k=0, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, end_of_turn], pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
