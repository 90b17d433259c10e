"""The trainer's shared-prompt forward for Llama-shaped models, through the functions of
tasks/models/llama_parts.py instead of transformers' forward.

Same contract and values (to float rounding) as `logprobs.shared_prompt_hidden`: the U distinct
prompts run once, each layer's prompt keys and values are copied to their B samples by
`index_select` (the samples' gradients add up on the shared prompt, deterministically), and the
completions attend to them and to themselves causally. What it removes, per layer and pass: the
dynamic cache's concatenation through cache objects, mask building, the rotary embedding's call
(one table per pass), `rotate_half`'s concatenation and the RMSNorm's five kernels; in backward, as
many autograd nodes fewer. The projections stay separate module calls (fusing them, as the decode
steps do, measured no gain here). The update costs ~0.90× of the transformers path on both test
models (benchmarks/RESULTS.md, step speed).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from reasonloop.tasks.models.llama_parts import (
    head_counts,
    llama_shaped,
    project_qkv,
    rms_norm,
    rotary_tables,
    rotate,
)
from reasonloop.tasks.models.loading import unwrap_peft


def takes_llama_forward(model: Any, decoder: Any, window: int) -> bool:
    """Whether `llama_shared_hidden` computes what `decoder` (the model's, as `split_lm` gives it)
    computes: a Llama-shaped model whose decoder is its own module (not FSDP's registered forward),
    and no attention dropout in a training forward."""
    if not llama_shaped(model, window) or decoder is not unwrap_peft(model).model:
        return False
    dropout = getattr(getattr(decoder, "config", None), "attention_dropout", 0.0) or 0.0
    return not (dropout > 0 and decoder.training)


def llama_shared_hidden(
    model: Any, prompt_ids: torch.Tensor, prompt_attn: torch.Tensor, comp_ids: torch.Tensor,
    comp_attn: torch.Tensor, row_prompt: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Hidden states (B, T, H) that predict each completion token: prompt_ids / prompt_attn (U, P)
    left-padded distinct prompts, comp_ids / comp_attn (B, T) right-padded completions, row_prompt
    (B,) each sample's prompt row."""
    decoder = unwrap_peft(model).model
    counts = head_counts(model)
    heads, kv_heads, _ = counts
    scale = decoder.layers[0].self_attn.scaling
    p_len, (b, t_len), device = prompt_ids.shape[1], comp_ids.shape, prompt_ids.device
    seen = prompt_attn.bool()
    # Prompt queries: causal over the prompt's real tokens; a padding query sees itself (a fully
    # masked row would be NaN; its output is never read).
    eye = torch.eye(p_len, dtype=torch.bool, device=device)
    prompt_mask = (torch.ones_like(eye).tril() & seen[:, None, :] | eye)[:, None]  # (U, 1, P, P)
    causal = torch.ones((t_len, t_len), dtype=torch.bool, device=device).tril()
    comp_mask = torch.cat(
        [seen[row_prompt][:, None, :].expand(b, t_len, p_len), causal.expand(b, t_len, t_len)], dim=-1
    )[:, None]  # (B, 1, T, P+T)
    xp, xc = decoder.embed_tokens(prompt_ids), decoder.embed_tokens(comp_ids)  # (U, P, H), (B, T, H)
    p_cos, p_sin = rotary_tables(decoder.rotary_emb, xp, (prompt_attn.cumsum(-1) - 1).clamp(min=0))
    c_positions = prompt_attn.sum(-1)[row_prompt, None] + torch.arange(t_len, device=device)
    c_cos, c_sin = rotary_tables(decoder.rotary_emb, xc, c_positions)
    p_cos, p_sin, c_cos, c_sin = (x[:, None] for x in (p_cos, p_sin, c_cos, c_sin))  # (N, 1, S, d)

    def attend(x: torch.Tensor, layer: Any, cos: torch.Tensor, sin: torch.Tensor) -> tuple:
        q, k, v = (y.transpose(1, 2) for y in project_qkv(layer, rms_norm(layer.input_layernorm, x), None, counts))
        return rotate(q, cos, sin), rotate(k, cos, sin), v  # (N, heads | kv_heads, S, d)

    def residual(x: torch.Tensor, out: torch.Tensor, layer: Any) -> torch.Tensor:
        x = x + layer.self_attn.o_proj(out.transpose(1, 2).flatten(2))
        return x + layer.mlp(rms_norm(layer.post_attention_layernorm, x))

    for layer in decoder.layers:
        q, k, v = attend(xp, layer, p_cos, p_sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=prompt_mask, scale=scale, enable_gqa=heads != kv_heads)
        xp = residual(xp, out, layer)
        q, kc, vc = attend(xc, layer, c_cos, c_sin)
        keys = torch.cat([k.index_select(0, row_prompt), kc], dim=2)  # (B, kv_heads, P+T, d)
        values = torch.cat([v.index_select(0, row_prompt), vc], dim=2)
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=comp_mask, scale=scale, enable_gqa=heads != kv_heads
        )
        xc = residual(xc, out, layer)
    prompt_last = rms_norm(decoder.norm, xp[:, -1:]).index_select(0, row_prompt)  # (B, 1, H): predicts token 0
    return torch.cat([prompt_last, rms_norm(decoder.norm, xc[:, :-1])], dim=1)
