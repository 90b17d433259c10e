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

import sys
from typing import Any

import torch
import torch.nn.functional as F

from reasonloop.tasks.models.loading import unwrap_peft

SUPPORTED_TYPES = frozenset({"llama", "qwen2", "mistral"})
LAYER_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
ATTENTION_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj")
INITIAL_STEPS = 256  # decode slots allocated up front; doubled when a run needs more


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

    def __init__(self, model: Any, cache: Any, p_len: int, steps: int) -> None:
        core = unwrap_peft(model)
        self.decoder, self.head = core.model, core.lm_head
        self.rotate = sys.modules[type(self.decoder.layers[0].self_attn).__module__].apply_rotary_pos_emb
        self.p_len, self.limit = p_len, p_len + steps
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

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, t: int) -> torch.Tensor:
        """Logits (B, V) after tokens (B,) at rotary positions (B, 1), written to slot p_len + t;
        `mask` (B, p_len + steps) bool marks the slots a row attends to (its prompt, not padding)."""
        slot = self.p_len + t
        if slot >= self.capacity:
            self._grow(2 * self.capacity)
        x = self.decoder.embed_tokens(tokens[:, None])  # (B, 1, H)
        cos, sin = self.decoder.rotary_emb(x, positions)
        visible = mask[:, None, None, : slot + 1]  # (B, 1, 1, L)
        for i, layer in enumerate(self.decoder.layers):
            attention = layer.self_attn
            h = layer.input_layernorm(x)
            q = attention.q_proj(h).view(h.shape[0], 1, -1, attention.head_dim).transpose(1, 2)  # (B, heads, 1, d)
            k = attention.k_proj(h).view(h.shape[0], 1, -1, attention.head_dim).transpose(1, 2)
            v = attention.v_proj(h).view(h.shape[0], 1, -1, attention.head_dim).transpose(1, 2)
            q, k = self.rotate(q, k, cos, sin)
            self.keys[i][:, :, slot : slot + 1] = k
            self.values[i][:, :, slot : slot + 1] = v
            keys, values = self.keys[i][:, :, : slot + 1], self.values[i][:, :, : slot + 1]
            out = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=visible, scale=attention.scaling, enable_gqa=q.shape[1] != k.shape[1]
            )  # (B, heads, 1, d)
            x = x + attention.o_proj(out.transpose(1, 2).reshape(h.shape[0], 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.head(self.decoder.norm(x))[:, -1, :]
