"""The trained policy: a model loaded the way its options say (precision, LoRA, gradient
checkpointing, device), its tokenizer, and the dtype its forward passes run in.

With `param_dtype="float32"` (the default) the weights are fp32 masters and the forward passes run
under autocast in the compute dtype, so AdamW's state and updates stay fp32 — what TRL and verl
do with bf16 checkpoints. LoRA wraps the model with peft: only the adapter trains, the reference
model is the base with the adapter disabled (no copy), checkpoints store the adapter, and engines
get merged weights (`save_weights(..., merged=True)`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reasonloop.tasks.models.loading import (
    dtype_source,
    is_adapter,
    is_vision_model,
    load_causal_lm,
    load_processor,
    load_tokenizer,
)
from reasonloop.tasks.models.precision import resolve_dtype
from reasonloop.trainers.config import ModelOptions
from reasonloop.trainers.step_utils import resolve_device


@dataclass
class Policy:
    model: Any
    tokenizer: Any
    compute_dtype: torch.dtype  # what the forward passes run in (autocast when params differ)
    processor: Any = None  # a vision-language model's AutoProcessor (None for a text model)

    @property
    def processing_class(self) -> Any:
        """What is saved beside the weights: the processor of a vision-language model, else the tokenizer."""
        return self.processor if self.processor is not None else self.tokenizer


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def load_policy(path: str | Path, options: ModelOptions) -> Policy:
    device = resolve_device(options.device)
    compute = resolve_dtype(options.dtype, dtype_source(path), device)
    params = torch.float32 if options.param_dtype == "float32" else compute
    model = load_causal_lm(path, dtype=params, trainable_adapter=True)
    if options.lora_r and not is_adapter(path):
        model = with_lora(model, options)
    if options.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if is_peft(model):
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need a grad path
    model = model.to(device)
    processor = load_processor(path) if is_vision_model(path) else None
    return Policy(model, load_tokenizer(path), compute, processor)


def with_lora(model: Any, options: ModelOptions) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ImportError("--lora-r needs peft: pip install 'reasonloop[lora]'") from exc
    targets = options.lora_target_modules
    config = LoraConfig(
        r=options.lora_r, lora_alpha=options.lora_alpha or 2 * options.lora_r, lora_dropout=options.lora_dropout,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
        task_type="CAUSAL_LM",
    )  # fmt: skip
    return get_peft_model(model, config)


@contextlib.contextmanager
def reference_of(model: Any) -> Iterator[Any]:
    """The reference policy of a LoRA model: the same model with its adapter disabled."""
    with model.disable_adapter():
        yield model


def reference_policy(
    model: Any, sharding: Any, preloaded: Any | None = None
) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """The KL term's reference, as a context manager factory: a LoRA model with its adapter
    disabled, or a frozen copy of the initial weights (`preloaded`: those weights loaded from
    elsewhere — a resumed run's initial folder), sharded like the policy under FSDP
    (trainers/sharding.py) and gathered for its forwards."""
    if is_peft(model):
        return lambda: reference_of(model)
    frozen = (preloaded or copy.deepcopy(model)).eval().requires_grad_(False)
    sharding.shard(frozen)

    @contextlib.contextmanager
    def gathered() -> Iterator[Any]:
        with sharding.gathered(frozen):
            yield frozen

    return gathered


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The weights a plain model of the base architecture loads: each LoRA layer's base weight plus
    its adapter's delta, computed into a new tensor — the model itself is never modified (an
    in-place merge and unmerge would leave rounding error in the frozen base weights at every
    publish) — adapter tensors dropped, peft's prefixes removed."""
    deltas = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight") and hasattr(module, "lora_A"):
                active = [a for a in module.active_adapters if a in module.lora_A]
                if active:
                    deltas[f"{name}.base_layer.weight"] = sum(module.get_delta_weight(a) for a in active)
        state = {}
        for key, value in model.state_dict().items():
            if "lora_" in key:
                continue
            merged = value + deltas[key].to(value.dtype) if key in deltas else value.clone()
            state[key.removeprefix("base_model.model.").replace(".base_layer.", ".")] = merged.detach()
    return state


def save_weights(model: Any, out: Path, *, merged: bool, state_dict: dict | None = None) -> None:
    """`save_pretrained` of the model; a LoRA model saves its adapter, or with `merged` the
    merged weights (what an engine loads). `state_dict`: the weights to save instead of the
    model's own (FSDP: the gathered whole of sharded ones)."""
    if is_peft(model) and merged:
        model.get_base_model().save_pretrained(out, state_dict=merged_state_dict(model), safe_serialization=True)
    else:
        model.save_pretrained(out, state_dict=state_dict, safe_serialization=True)
