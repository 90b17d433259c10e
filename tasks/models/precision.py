"""Precision: which dtype a model computes in, and which its parameters are kept in.

    dtype        the compute dtype: auto (the checkpoint's `torch_dtype`, where the device computes
                 it natively: a CPU without bf16 instructions (no AVX512-BF16 / AMX) computes
                 a bf16 checkpoint in float32, ~10x faster there than emulated bf16), float32,
                 bfloat16, float16 (an explicit choice is always honored)
    param_dtype  float32 (default: fp32 master weights, compute under autocast, so AdamW never
                 updates bf16 parameters) or `compute` (parameters in the compute dtype: half the
                 memory, and the lossy updates that come with it — only when asked for)

Inference-only users (rollout workers, evaluation) load the weights in the compute dtype directly.
Imports torch and transformers only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)


def checkpoint_dtype(path: str | Path) -> torch.dtype:
    """The dtype a checkpoint's config declares (`dtype` or `torch_dtype`), float32 if none."""
    config = Path(path) / "config.json"
    if not config.exists():  # a hub id: ask transformers
        from transformers import AutoConfig

        declared = getattr(AutoConfig.from_pretrained(str(path)), "dtype", None)
        return declared if isinstance(declared, torch.dtype) else DTYPES.get(str(declared), torch.float32)
    data = json.loads(config.read_text())
    return DTYPES.get(str(data.get("dtype") or data.get("torch_dtype") or "float32"), torch.float32)


def native(dtype: torch.dtype, device: str | torch.device = "cpu") -> bool:
    """Whether `device` computes `dtype` in hardware (not emulated)."""
    if dtype == torch.float32:
        return True
    kind = torch.device(device).type
    if kind == "cuda":
        return dtype == torch.float16 or torch.cuda.is_bf16_supported()
    if kind == "cpu" and dtype == torch.bfloat16:
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return kind not in ("cpu", "cuda")  # other accelerators: trust the checkpoint


def resolve_dtype(name: str, path: str | Path | None = None, device: str | torch.device = "cpu") -> torch.dtype:
    """A dtype option as torch's dtype (`auto`: the checkpoint's, if `device` computes it natively,
    else float32)."""
    if name == "auto":
        declared = checkpoint_dtype(path) if path is not None else torch.float32
        return declared if native(declared, device) else torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {name!r}") from None


def param_dtype_of(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


@contextlib.contextmanager
def compute_in(model: torch.nn.Module, dtype: torch.dtype | None) -> Iterator[None]:
    """Run the block's forward passes in `dtype`: autocast when the parameters are kept in another
    (fp32 masters), nothing when they already are in it."""
    if dtype is None or dtype == param_dtype_of(model):
        yield
        return
    device = next(model.parameters()).device.type
    with torch.autocast(device_type=device, dtype=dtype):
        yield


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends a completion, as `generate` stops: the generation config's
    `eos_token_id` (an int or a list: chat models end a turn on a token that is not the
    tokenizer's EOS) and the tokenizer's EOS."""
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    declared = getattr(config, "eos_token_id", None) if config is not None else None
    if declared is None:
        declared = getattr(getattr(model, "config", None), "eos_token_id", None)
    if isinstance(declared, int):
        ids.add(declared)
    elif declared:
        ids.update(int(i) for i in declared)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def pad_token_id(tokenizer: Any, model: Any = None) -> int:
    """The pad id; a tokenizer without one (Llama 3, many Qwen exports) pads with its EOS, as TRL
    does (padded positions are masked, so which id fills them does not matter)."""
    if getattr(tokenizer, "pad_token_id", None) is not None:
        return int(tokenizer.pad_token_id)
    eos = sorted(eos_token_ids(model, tokenizer)) if model is not None else []
    if getattr(tokenizer, "eos_token_id", None) is not None:
        return int(tokenizer.eos_token_id)
    if eos:
        return eos[0]
    raise ValueError("the tokenizer has neither a pad nor an EOS token")
