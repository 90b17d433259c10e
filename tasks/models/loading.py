"""Loading a causal LM from a folder or hub id, a LoRA adapter folder included.

A folder with `adapter_config.json` (what a LoRA run checkpoints: the adapter, not the base) loads
its base model (`base_model_name_or_path`) and applies the adapter: trainable for a resumed run,
merged into the weights for inference (rollout workers, evaluation), so engines always receive
plain weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

ADAPTER_CONFIG = "adapter_config.json"


def unwrap_peft(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (its LoRA layers stay in place), else `model`."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    return json.loads((Path(path) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]


def dtype_source(path: str | Path) -> str | Path:
    """Where a model's declared dtype is read: the base of an adapter, else the folder itself."""
    return adapter_base(path) if is_adapter(path) else path


def is_vision_model(path: str | Path) -> bool:
    """Whether the model at `path` (a folder, an adapter's base, or a hub id) takes images: its
    config has a vision tower (LLaVA, Qwen2-VL, Gemma 3, ...)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(dtype_source(path)))
    return getattr(config, "vision_config", None) is not None


def _auto_class(path: str | Path) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if is_vision_model(path) else AutoModelForCausalLM


def load_causal_lm(path: str | Path, *, dtype: torch.dtype = torch.float32, trainable_adapter: bool = False) -> Any:
    """The model at `path` with its parameters in `dtype` (a vision-language model through
    AutoModelForImageTextToText: the same generate/forward interface, plus `pixel_values`)."""
    if not is_adapter(path):
        return _auto_class(path).from_pretrained(str(path), dtype=dtype)
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ImportError(f"{path} is a LoRA adapter: pip install 'reasonloop[lora]' (peft)") from exc
    base = _auto_class(path).from_pretrained(adapter_base(path), dtype=dtype)
    model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable_adapter)
    return model if trainable_adapter else model.merge_and_unload()


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved with a model or adapter folder (an adapter folder carries one too)."""
    from transformers import AutoTokenizer

    source = path if (Path(path) / "tokenizer_config.json").exists() or not is_adapter(path) else adapter_base(path)
    return AutoTokenizer.from_pretrained(str(source))


def load_processor(path: str | Path) -> Any:
    """A vision-language model's processor (image processor + tokenizer + chat template)."""
    from transformers import AutoProcessor

    source = path if (Path(path) / "processor_config.json").exists() or not is_adapter(path) else adapter_base(path)
    return AutoProcessor.from_pretrained(str(source))
