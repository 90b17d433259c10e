"""One-token decode steps over a KV buffer written in place, for Llama-shaped decoders.

Why: a decode step of a small model is mostly framework plumbing, not arithmetic. Measured on the
tiny char Llama (batch 64, 2 threads): one `model(...)` decode call through transformers takes
3.8 ms, of which the layers' own projections, norms and MLPs are 0.7 ms; the rest is building the
causal mask, the dynamic cache's per-step concatenation, output dataclasses and hooks. vLLM gets
there with its own model implementations; this runs the model's layers through the functions of
tasks/models/llama_parts.py (fused q/k/v and gate/up products, one rms_norm kernel, rotary tables
per 64 steps) with a KV buffer written in place at one slot per step and one
`scaled_dot_product_attention` call per layer with the padding as an additive bias.

Scope: `llama_parts.llama_shaped` models, with a cache that exposes its layers' keys and values;
anything else keeps the transformers forward. Values equal that forward's to float rounding (tests
compare every sampled token and logprob, on both test models).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from reasonloop.tasks.models.llama_parts import (
    fused_projections,
    head_counts,
    llama_shaped,
    mlp,
    project_qkv,
    rms_norm,
    rotary_tables,
    rotate,
)
from reasonloop.tasks.models.loading import unwrap_peft

INITIAL_STEPS = 256  # decode slots allocated up front; doubled when a run needs more
ROTARY_STEPS = 64  # decode steps per table of rotary cos/sin


class StaticDecoder:
    """Decode steps for `batch` rows whose prompts (left-padded to `p_len`) are already in a
    transformers cache; `steps` more tokens fit. Call `step(tokens, t)` once per generated token."""

    @staticmethod
    def supports(model: Any, cache: Any, window: int) -> bool:
        """Whether this decoder computes what `model` computes, for a run of `window` positions."""
        if not llama_shaped(model, window):
            return False
        # Rotary tables run ahead of the decoded position; frequencies that depend on the longest
        # position seen so far (dynamic NTK, LongRoPE) would change early: those keep transformers'.
        if getattr(unwrap_peft(model).model.rotary_emb, "rope_type", "default") in ("dynamic", "longrope"):
            return False
        layers = getattr(cache, "layers", None)
        return layers is not None and len(layers) == len(unwrap_peft(model).model.layers)

    def __init__(
        self, model: Any, cache: Any, p_len: int, steps: int, first_positions: torch.Tensor, visible: torch.Tensor
    ) -> None:
        """`first_positions` (B, 1): the rotary position of the first decoded token of each row;
        `visible` (B, p_len + steps) bool: the slots a row attends to (its prompt, not padding)."""
        core = unwrap_peft(model)
        self.decoder, self.head = core.model, core.lm_head
        self.p_len, self.limit = p_len, p_len + steps
        self.first_positions = first_positions
        self.counts, self.scale = head_counts(model), self.decoder.layers[0].self_attn.scaling
        dtype = self.head.weight.dtype
        # Padding as an additive bias: one add per layer instead of SDPA's mask handling.
        self.bias = torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(~visible, float("-inf"))
        self.fused = fused_projections(self.decoder.layers)
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
            self._cos, self._sin = rotary_tables(self.decoder.rotary_emb, self.bias, self.first_positions + offsets)
        r = t % ROTARY_STEPS
        return self._cos[:, r : r + 1], self._sin[:, r : r + 1]

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """Logits (B, V) after tokens (B,), written to KV slot p_len + t."""
        slot = self.p_len + t
        if slot >= self.capacity:
            self._grow(2 * self.capacity)
        batch, (heads, kv_heads, _) = tokens.shape[0], self.counts
        cos, sin = self._rotary(t)  # (B, 1, d): broadcast over heads
        bias = self.bias[:, None, None, : slot + 1]  # (B, 1, 1, L)
        x = self.decoder.embed_tokens(tokens)  # (B, H)
        for i, layer in enumerate(self.decoder.layers):
            qkv, gate_up = self.fused[i]
            q, k, v = project_qkv(layer, rms_norm(layer.input_layernorm, x), qkv, self.counts)  # (B, heads, d)
            self.keys[i][:, :, slot] = rotate(k, cos, sin)
            self.values[i][:, :, slot] = v
            keys, values = self.keys[i][:, :, : slot + 1], self.values[i][:, :, : slot + 1]
            out = F.scaled_dot_product_attention(
                rotate(q, cos, sin)[:, :, None], keys, values, attn_mask=bias, scale=self.scale,
                enable_gqa=heads != kv_heads,
            )  # fmt: skip
            x = x + layer.self_attn.o_proj(out.view(batch, -1))
            x = x + mlp(layer, rms_norm(layer.post_attention_layernorm, x), gate_up)
        return self.head(rms_norm(self.decoder.norm, x))
