"""`reasonloop model init --tokenizer bpe`: a small Qwen2 checkpoint shaped like the ones users bring.

What it has that the character model has not, each a way real checkpoints break naive code:
- a byte-level BPE tokenizer trained here with `tokenizers`, built exactly as transformers'
  `Qwen2Tokenizer` is (same normalizer, split regex, byte-level pre-tokenizer and decoder), so
  `AutoTokenizer` on the folder gives the same ids it was trained with;
- a ChatML chat template (`<|im_start|>role\\n...<|im_end|>\\n`) with system/user/assistant roles;
- no pad token; the tokenizer's EOS (`<|endoftext|>`) is not the end of an assistant turn:
  `generation_config.json` lists two EOS ids, `[<|endoftext|>, <|im_end|>]`, and a chat model
  stops on the second;
- bf16 weights on disk, grouped-query attention, tied embeddings, and an embedding matrix padded
  past the tokenizer's size (to a multiple of 64, as Qwen's 151,936 rows are).

Deterministic for a seed: the corpus, the tokenizer and the weights.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from reasonloop.tasks.models.tiny import SIZES, TinySize, seeded

END_OF_TEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIALS = (END_OF_TEXT, IM_START, IM_END)
VOCAB_SIZE = 2048  # learned tokens (specials included), before the embedding is padded
PAD_TO = 64
# transformers' Qwen2Tokenizer pre-tokenization (models/qwen2/tokenization_qwen2.py).
PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# ChatML, as Qwen2.5-Instruct's template without its default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def corpus(seed: int = 0) -> list[str]:
    """Text to learn merges from: the recipes' prompts and targets, as prompts and as chats."""
    from reasonloop.tasks.recipes.arith import ArithConfig
    from reasonloop.tasks.recipes.arith import generate as arith
    from reasonloop.tasks.recipes.veritime import VeriTimeConfig
    from reasonloop.tasks.recipes.veritime import generate as veritime

    texts = []
    for _, samples in (arith(ArithConfig(n=3000, seed=seed)), veritime(VeriTimeConfig(n=3000, seed=seed))):
        for s in samples:
            texts.append(s["prompt"] + s["target"])
            texts.append(f"{IM_START}user\n{s['prompt']}{IM_END}\n{IM_START}assistant\n{s['target']}{IM_END}\n")
    rng = random.Random(seed)
    words = ["the", "answer", "is", "Review", "your", "draft", "and", "give", "a", "corrected", "final", "step"]
    texts += [" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(500)]
    return texts


def build_bpe_tokenizer(seed: int = 0, vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerBase:
    """A byte-level BPE trained on `corpus(seed)`, wrapped as the transformers Qwen2Tokenizer."""
    from transformers import Qwen2Tokenizer

    core = Tokenizer(
        models.BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    )
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    core.train_from_iterator(corpus(seed), trainer)
    state = json.loads(core.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"], merges=merges, unk_token=None, eos_token=END_OF_TEXT, pad_token=None,
        additional_special_tokens=[IM_START, IM_END], padding_side="left", clean_up_tokenization_spaces=False,
    )  # fmt: skip
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def qwen2_config(tokenizer: PreTrainedTokenizerBase, spec: TinySize) -> Qwen2Config:
    """The Qwen2 shape for a size: grouped-query attention, tied embeddings, the embedding padded
    past the tokenizer to a multiple of 64, EOS the tokenizer's."""
    return Qwen2Config(
        vocab_size=-(-len(tokenizer) // PAD_TO) * PAD_TO,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=max(1, spec.heads // 2),  # grouped-query attention
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TEXT),
        pad_token_id=None,
    )


def save_chat_checkpoint(model: Any, processing_class: Any, out: str | Path) -> Path:
    """Write a chat model as real ones ship: sampling defaults without truncation, a turn ending on
    either EOS id ([<|endoftext|>, <|im_end|>]), bf16 safetensors, the tokenizer or processor."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=1.0, top_p=1.0, top_k=0, bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids([END_OF_TEXT, IM_END]), pad_token_id=None,
    )  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    processing_class.save_pretrained(out)
    return out


def init_bpe_model(out: str | Path, *, size: str = "tiny", seed: int = 0) -> Path:
    """Write a Qwen2 checkpoint (bf16 safetensors, tokenizer, generation config) to `out`."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    tokenizer = build_bpe_tokenizer(seed)
    model = seeded(Qwen2ForCausalLM, qwen2_config(tokenizer, SIZES[size]), seed)
    return save_chat_checkpoint(model, tokenizer, out)
