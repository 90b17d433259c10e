"""The pieces of a Llama-shaped decoder layer as plain functions over the model's own modules and
weights, for the two hot loops that bypass transformers' forward: the engine's decode steps
(tasks/engines/static_decode.py) and the trainer's shared-prompt forward (trainers/llama_forward.py).

Why: on small models a forward through transformers is mostly per-call plumbing (mask building,
cache objects, output dataclasses, hooks) and many small kernels. These functions keep the model's
modules where they matter (embedding, rotary embedding, o/down projections, LM head; LoRA-wrapped
projections are called as modules) and remove the rest: one `rms_norm` kernel, rotary cos/sin
computed once per table instead of per layer, `rotate_half` as one `roll` against a sign-folded
sine, and — in decode only — q/k/v and gate/up fused into one matrix product each while the
copies are small.

Scope (`llama_shaped`): layers that are exactly transformers' Llama layer —
`input_layernorm → self_attn(q/k/v/o_proj, rotary) → residual → post_attention_layernorm → mlp →
residual` — with no sliding window in use, no q/k norms, rotary on every head dimension, no logit
softcapping or scaling. Llama, Qwen2 and Mistral are; anything else keeps transformers' forward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from reasonloop.tasks.models.loading import unwrap_peft

SUPPORTED_TYPES = frozenset({"llama", "qwen2", "mistral"})
LAYER_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
ATTENTION_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj")
FUSE_BYTES = 2**26  # fused projection copies above this are not worth it: large products amortize a call
RMS_NORMS = frozenset({"LlamaRMSNorm", "Qwen2RMSNorm", "MistralRMSNorm"})
SILU = frozenset({"SiLU", "SiLUActivation"})  # torch's and transformers' (ACT2FN["silu"])
Fused = tuple[torch.Tensor, torch.Tensor | None]  # (weight, bias) of a fused projection


def llama_shaped(model: Any, window: int) -> bool:
    """Whether these functions compute what `model` computes, over `window` positions."""
    core = unwrap_peft(model)
    config = getattr(core, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED_TYPES:
        return False
    scale = getattr(config, "logit_scale", None)
    if getattr(config, "final_logit_softcapping", None) or scale not in (None, 1, 1.0):
        return False
    if getattr(config, "partial_rotary_factor", None) not in (None, 1, 1.0):  # rotary on every head dim
        return False
    sliding = getattr(config, "sliding_window", None)
    if sliding and getattr(config, "use_sliding_window", True) and window > sliding:
        return False
    decoder = getattr(core, "model", None)
    if decoder is None or not hasattr(decoder, "rotary_emb") or getattr(core, "lm_head", None) is None:
        return False
    for layer in decoder.layers:
        if not all(hasattr(layer, name) for name in LAYER_PARTS):
            return False
        attention = layer.self_attn
        if not all(hasattr(attention, name) for name in ATTENTION_PARTS) or hasattr(attention, "q_norm"):
            return False
    return True


def head_counts(model: Any) -> tuple[int, int, int]:
    """(attention heads, key/value heads, head dim)."""
    core = unwrap_peft(model)
    heads = core.config.num_attention_heads
    kv_heads = getattr(core.config, "num_key_value_heads", None) or heads
    return heads, kv_heads, core.model.layers[0].self_attn.head_dim


def plain_linear(module: Any) -> Fused | None:
    """(weight, bias) of an unwrapped nn.Linear; None for anything else (a LoRA layer, a quantized one)."""
    return (module.weight, module.bias) if type(module) is torch.nn.Linear else None


def projection_bytes(layer: Any) -> int:
    """Bytes of a layer's q/k/v and MLP input projection weights (what fusing them would copy)."""
    attention, mlp = layer.self_attn, layer.mlp
    modules = [getattr(attention, f"{n}_proj", None) for n in "qkv"]
    modules += [getattr(mlp, n, None) for n in ("gate_proj", "up_proj")]
    weights = [getattr(m, "weight", None) for m in modules]
    return sum(w.numel() * w.element_size() for w in weights if isinstance(w, torch.Tensor))


def _fuse(modules: list[Any]) -> Fused | None:
    parts = [plain_linear(m) for m in modules]
    if any(p is None for p in parts):
        return None
    if all(b is None for _, b in parts):
        return torch.cat([w for w, _ in parts]), None
    biases = [b if b is not None else w.new_zeros(w.shape[0]) for w, b in parts]
    return torch.cat([w for w, _ in parts]), torch.cat(biases)


def fused_projections(layers: Any) -> list[tuple[Fused | None, Fused | None]]:
    """Per layer, its q/k/v and gate/up projections each concatenated into one (weight, bias) where
    they are plain linear layers (and the MLP is SiLU-gated) and the copies stay under FUSE_BYTES;
    else None (the modules are called). The weights are copied: call this once per decode run.
    Not used in training: there the products are large enough that fusing measured no gain, and
    the gate/up split's backward cost more than it saved (benchmarks/RESULTS.md, step speed)."""
    if sum(projection_bytes(layer) for layer in layers) > FUSE_BYTES:
        return [(None, None)] * len(layers)
    out = []
    for layer in layers:
        attention, mlp = layer.self_attn, layer.mlp
        gated = all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))
        silu = gated and type(getattr(mlp, "act_fn", None)).__name__ in SILU
        qkv = _fuse([attention.q_proj, attention.k_proj, attention.v_proj])
        out.append((qkv, _fuse([mlp.gate_proj, mlp.up_proj]) if silu else None))
    return out


def rms_norm(module: Any, x: torch.Tensor) -> torch.Tensor:
    """`module(x)` for transformers' Llama-family RMSNorm, which normalizes in float32 and then
    multiplies by its weight in the input's dtype. With float32 input and weight that is one fused
    `rms_norm` kernel (the same values); any other dtype keeps the module's exact rounding (a
    float64 model's norm is float32-precise there too). Any other norm module is called."""
    if type(module).__name__ not in RMS_NORMS:
        return module(x)
    eps = module.variance_epsilon
    if x.dtype == torch.float32 and module.weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), module.weight, eps)
    return module.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def rotary_tables(rotary_emb: Any, like: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sign-folded sin (N, S, head_dim) for positions (N, S), from the model's rotary
    embedding (`like` gives the dtype): rotate_half(x) * sin == roll(x, half) * sin with its first
    half negated, exactly, so `rotate` needs no concatenation."""
    cos, sin = rotary_emb(like, positions)
    half = sin.shape[-1] // 2
    return cos, torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (..., head_dim) with `rotary_tables`' cos and sin, broadcast."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


def project_qkv(
    layer: Any, h: torch.Tensor, fused: Fused | None, counts: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q (..., heads, d), k and v (..., kv_heads, d) of normed hidden states h (..., H)."""
    heads, kv_heads, d = counts
    if fused is not None:
        return F.linear(h, *fused).unflatten(-1, (-1, d)).split((heads, kv_heads, kv_heads), -2)
    attention = layer.self_attn
    return tuple(getattr(attention, f"{n}_proj")(h).unflatten(-1, (-1, d)) for n in "qkv")  # type: ignore[return-value]


def mlp(layer: Any, h: torch.Tensor, fused: Fused | None) -> torch.Tensor:
    """The layer's MLP on normed hidden states h (..., H)."""
    if fused is None:
        return layer.mlp(h)
    gate, up = F.linear(h, *fused).chunk(2, dim=-1)
    return layer.mlp.down_proj(F.silu(gate) * up)
