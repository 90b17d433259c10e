"""One-token decode steps over a KV buffer written in place, for Llama-shaped decoders.

Why: a decode step of a small model is mostly framework plumbing, not arithmetic. Measured on the
tiny char Llama (batch 64, 2 threads): one `model(...)` decode call through transformers takes
3.8 ms, of which the layers' own projections, norms and MLPs are 0.7 ms; the rest is building the
causal mask, the dynamic cache's per-step concatenation, output dataclasses and hooks. vLLM gets
there with its own model implementations; this keeps the model's own modules (embedding, rotary
embedding, norms, q/k/v/o projections with their biases or LoRA adapters, MLP, LM head) and
replaces only the plumbing around attention: a KV buffer written in place at one slot per step and
one `scaled_dot_product_attention` call per layer with the padding mask.

Scope (`StaticDecoder.supports`): decoder-only models whose layers are exactly transformers'
Llama layer — `input_layernorm → self_attn(q/k/v/o_proj, rotary) → residual → post_attention_layernorm
→ mlp → residual` — with no sliding window in use, no q/k norms, no logit softcapping or scaling,
and a cache that exposes its layers' keys and values. Llama, Qwen2 and Mistral are; anything else
keeps the transformers forward. Values equal that forward's to float rounding (tests compare
every sampled token and logprob, on both test models).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from reasonloop.tasks.models.loading import unwrap_peft

SUPPORTED_TYPES = frozenset({"llama", "qwen2", "mistral"})
LAYER_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
ATTENTION_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj")
INITIAL_STEPS = 256  # decode slots allocated up front; doubled when a run needs more
ROTARY_STEPS = 64  # decode steps per table of rotary cos/sin
FUSE_BYTES = 2**26  # fused projection copies above this are not worth it: large products amortize a call
RMS_NORMS = frozenset({"LlamaRMSNorm", "Qwen2RMSNorm", "MistralRMSNorm"})


class StaticDecoder:
    """Decode steps for `batch` rows whose prompts (left-padded to `p_len`) are already in a
    transformers cache; `steps` more tokens fit. Call `step(tokens, positions, mask, t)` once per
    generated token."""

    @staticmethod
    def supports(model: Any, cache: Any, window: int) -> bool:
        """Whether this decoder computes what `model` computes, for a run of `window` positions."""
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
        layers = getattr(cache, "layers", None)
        return layers is not None and len(layers) == len(decoder.layers)

    def __init__(
        self, model: Any, cache: Any, p_len: int, steps: int, first_positions: torch.Tensor, visible: torch.Tensor
    ) -> None:
        """`first_positions` (B, 1): the rotary position of the first decoded token of each row;
        `visible` (B, p_len + steps) bool: the slots a row attends to (its prompt, not padding)."""
        core = unwrap_peft(model)
        self.decoder, self.head = core.model, core.lm_head
        self.p_len, self.limit = p_len, p_len + steps
        self.first_positions = first_positions
        attention = self.decoder.layers[0].self_attn
        self.head_dim, self.scale = attention.head_dim, attention.scaling
        self.heads = core.config.num_attention_heads
        self.kv_heads = getattr(core.config, "num_key_value_heads", None) or self.heads
        dtype = self.head.weight.dtype
        # Padding as an additive bias: one add per layer instead of SDPA's mask handling.
        self.bias = torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, float("-inf"))
        layers = self.decoder.layers
        small = sum(projection_bytes(layer) for layer in layers) <= FUSE_BYTES
        self.fused = [fused_projections(layer) if small else (None, None) for layer in layers]
        # Per layer (B, kv_heads, capacity, head_dim). The buffer grows by doubling rather than
        # holding all `steps` from the start: most rows of a long budget stop early, and a dynamic
        # cache would never have grown that far.
        self.keys = [layer.keys for layer in cache.layers]
        self.values = [layer.values for layer in cache.layers]
        self._grow(p_len + min(steps, INITIAL_STEPS))

    def _grow(self, capacity: int) -> None:
        """Move every layer's keys and values into buffers of `capacity` slots (at most the limit)."""
        self.capacity = min(capacity, self.limit)
        for i, (keys, values) in enumerate(zip(self.keys, self.values, strict=True)):
            filled = keys.shape[2]  # the prompt's slots at first, then the whole old buffer
            self.keys[i] = keys.new_empty((*keys.shape[:2], self.capacity, keys.shape[3]))
            self.values[i] = values.new_empty((*values.shape[:2], self.capacity, values.shape[3]))
            self.keys[i][:, :, :filled], self.values[i][:, :, :filled] = keys, values

    def _rotary(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sign-folded sin (B, 1, head_dim) for step t, from tables of ROTARY_STEPS steps
        computed by the model's rotary embedding (one call per table, not per step)."""
        if t % ROTARY_STEPS == 0:
            offsets = torch.arange(t, t + ROTARY_STEPS, device=self.first_positions.device)
            cos, sin = self.decoder.rotary_emb(self.bias, self.first_positions + offsets)  # (B, S, d)
            half = sin.shape[-1] // 2
            # rotate_half(x) * sin == roll(x, half) * sin with its first half negated (exactly).
            self._cos, self._sin = cos, torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
        r = t % ROTARY_STEPS
        return self._cos[:, r : r + 1], self._sin[:, r : r + 1]

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """Logits (B, V) after tokens (B,), written to KV slot p_len + t."""
        slot = self.p_len + t
        if slot >= self.capacity:
            self._grow(2 * self.capacity)
        batch, d, groups = tokens.shape[0], self.head_dim, self.heads // self.kv_heads
        cos, sin = self._rotary(t)
        bias = self.bias[:, None, None, : slot + 1]  # (B, 1, 1, L)
        x = self.decoder.embed_tokens(tokens)  # (B, H)
        for i, layer in enumerate(self.decoder.layers):
            attention, (qkv, gate_up) = layer.self_attn, self.fused[i]
            h = rms_norm(layer.input_layernorm, x)
            if qkv is not None:
                q, k, v = F.linear(h, *qkv).view(batch, -1, d).split((self.heads, self.kv_heads, self.kv_heads), 1)
            else:
                q, k, v = (getattr(attention, f"{n}_proj")(h).view(batch, -1, d) for n in "qkv")
            q = q * cos + q.roll(d // 2, -1) * sin  # (B, heads, d)
            k = k * cos + k.roll(d // 2, -1) * sin  # (B, kv_heads, d)
            self.keys[i][:, :, slot] = k
            self.values[i][:, :, slot] = v
            keys, values = self.keys[i][:, :, : slot + 1], self.values[i][:, :, : slot + 1]
            out = F.scaled_dot_product_attention(
                q[:, :, None], keys, values, attn_mask=bias, scale=self.scale, enable_gqa=groups > 1
            ).view(batch, -1)  # (B, heads * d)
            x = x + attention.o_proj(out)
            h = rms_norm(layer.post_attention_layernorm, x)
            if gate_up is not None:
                gate, up = F.linear(h, *gate_up).chunk(2, dim=-1)
                x = x + layer.mlp.down_proj(F.silu(gate) * up)
            else:
                x = x + layer.mlp(h)
        return self.head(rms_norm(self.decoder.norm, x))


def plain_linear(module: Any) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight, bias) of an unwrapped nn.Linear; None for anything else (a LoRA layer, a quantized one)."""
    return (module.weight, module.bias) if type(module) is torch.nn.Linear else None


def projection_bytes(layer: Any) -> int:
    """Bytes of a layer's q/k/v and MLP input projection weights (what fusing them would copy)."""
    attention, mlp = layer.self_attn, layer.mlp
    modules = [getattr(attention, f"{n}_proj", None) for n in "qkv"] + [
        getattr(mlp, n, None) for n in ("gate_proj", "up_proj")
    ]
    weights = [getattr(m, "weight", None) for m in modules]
    return sum(w.numel() * w.element_size() for w in weights if isinstance(w, torch.Tensor))


def fused_projections(layer: Any) -> tuple[tuple | None, tuple | None]:
    """A layer's q/k/v and gate/up projections, each concatenated into one (weight, bias) when they
    are plain linear layers (and the MLP is SiLU-gated): one matrix product instead of three or two.
    The weights are copied, so this is done per generation call, when they cannot change."""

    def fuse(modules: list[Any]) -> tuple | None:
        parts = [plain_linear(m) for m in modules]
        if any(p is None for p in parts):
            return None
        biases = [b for _, b in parts]
        bias = None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else w.new_zeros(w.shape[0]) for (w, _), b in zip(parts, biases, strict=True)]
        )  # fmt: skip
        return torch.cat([w for w, _ in parts]), bias

    attention, mlp = layer.self_attn, layer.mlp
    qkv = fuse([attention.q_proj, attention.k_proj, attention.v_proj])
    gated = all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))
    silu = gated and isinstance(getattr(mlp, "act_fn", None), torch.nn.SiLU)
    return qkv, fuse([mlp.gate_proj, mlp.up_proj]) if silu else None


def rms_norm(module: Any, x: torch.Tensor) -> torch.Tensor:
    """`module(x)` for transformers' Llama-family RMSNorm as one kernel call: the same formula,
    weight * x / sqrt(mean(x²) + eps) (in float32 the same values to rounding; in bf16 the weight
    multiplies before the one rounding, not after). Any other norm module is called."""
    if type(module).__name__ not in RMS_NORMS:
        return module(x)
    return F.rms_norm(x, (x.shape[-1],), module.weight, module.variance_epsilon)
