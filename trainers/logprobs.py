"""Log-probabilities of given completions under a model: the trainer's side of the engine contract.

    logprobs[b, t] = log_softmax(logits / temperature)[completion[b, t]]

in one batched forward pass, with the same left-padded prompt layout as generation and position
ids from the attention mask, so recomputed values match the engine's sampling logprobs.

Memory (a 152k vocabulary makes the logits the largest tensor of a step by far): the decoder runs
once, then the LM head runs chunk by chunk over the real completion tokens only — never padding,
never prompt positions — and each chunk keeps two numbers per token, its target's logit and the
logsumexp (a selective log-softmax), not a (T, V) matrix of log-probabilities. When the whole
batch's logits would be large (`RECOMPUTE_BYTES`), each chunk is checkpointed (its logits are
recomputed in backward instead of kept), so peak memory is one chunk's logits. Entropy is computed
from the same chunk, without gradient. `full_vocab_logprobs` is the plain path (every logit, a
full log_softmax): the reference in tests and benchmarks, and the fallback for models whose
logits are not `head(hidden)` (softcapping, logit scaling).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from reasonloop.trainers import llama_forward

DECODER_FORWARD = "sharded_decoder_forward"  # the decoder call FSDP's root hooks wrap (trainers/sharding.py)
CHUNK_TOKENS = 1024  # completion tokens per LM-head chunk
RECOMPUTE_BYTES = 2**28  # checkpoint the chunks when the batch's fp32 logits would exceed this


@dataclass
class ScoredBatch:
    logprobs: torch.Tensor  # (B, T) float32, 0 where mask is 0
    entropies: torch.Tensor  # (B, T) float32, entropy of the tempered distribution (0 if not asked)
    mask: torch.Tensor  # (B, T) bool, True on real completion tokens


def pack(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Layout [pad.. prompt | completion ..pad]: prompts left-padded to P, completions right-padded
    to T. Returns input_ids (B, P+T), attention_mask (B, P+T), completion mask (B, T), and P."""
    batch = len(prompts)
    p_len = max(len(p) for p in prompts)
    t_len = max(1, max(len(c) for c in completions))
    ids = torch.full((batch, p_len + t_len), pad_id, dtype=torch.long)
    attn = torch.zeros((batch, p_len + t_len), dtype=torch.long)
    for b, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        ids[b, p_len - len(prompt) : p_len] = torch.tensor(prompt, dtype=torch.long)
        attn[b, p_len - len(prompt) : p_len] = 1
        if completion:
            ids[b, p_len : p_len + len(completion)] = torch.tensor(completion, dtype=torch.long)
            attn[b, p_len : p_len + len(completion)] = 1
    comp_mask = attn[:, p_len:].bool()
    return ids.to(device), attn.to(device), comp_mask.to(device), p_len


@lru_cache(maxsize=32)
def _forward_params(model_cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_cls.forward).parameters)


def split_lm(model: Any) -> tuple[Any, Any] | None:
    """(decoder, LM head) when the logits are exactly `head(decoder(...))`, else None. The decoder
    of a model sharded by FSDP is its registered forward method (trainers/sharding.py)."""
    config = getattr(model, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return None
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if decoder is None or head is None or decoder is model:
        return None
    return getattr(model, DECODER_FORWARD, decoder), head


@lru_cache(maxsize=32)
def _cache_keyword(decoder_cls: type) -> str | None:
    """The decoder's KV-cache argument: `cache` (transformers 5), `past_key_values` (4.x), or None."""
    params = inspect.signature(decoder_cls.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def can_share_prompts(model: Any, decoder: Any) -> bool:
    """Whether the decoder can continue from a prompt's KV cache here: it takes a cache, and no
    gradient checkpointing is on (transformers turns the cache off under it while training)."""
    if not isinstance(decoder, torch.nn.Module) or _cache_keyword(type(decoder)) is None:
        return False
    return not (torch.is_grad_enabled() and activation_checkpointing(model))


def activation_checkpointing(model: Any) -> bool:
    """Whether gradient (activation) checkpointing is on (transformers 5 renamed the flag)."""
    name = (
        "is_activation_checkpointing"
        if hasattr(type(model), "is_activation_checkpointing")
        else "is_gradient_checkpointing"
    )
    return bool(getattr(model, name, False))


def copy_cache_rows(cache: Any, rows: torch.Tensor) -> None:
    """Cache rows -> `rows` (B,) of them, repeats allowed, by `index_select`: its backward adds the
    samples' gradients with `index_add_`, deterministic on CPU, where the backward of `x[rows]`
    (an accumulating `index_put_`) sums repeated rows in a thread-dependent order — runs with one
    seed then differed in the last bits from step 2 on."""
    layers = getattr(cache, "layers", None)
    if layers is None:  # transformers 4.x before cache layers: its own row selection
        cache.batch_select_indices(rows)
        return
    for layer in layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)


def shared_prompt_hidden(
    decoder: Any, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
    device: torch.device, model: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The hidden states that predict each completion token, with every distinct prompt run once:
    the U distinct prompts (left-padded to P) fill a KV cache, its rows are copied to their B
    samples (an index op: the samples' gradients add up on the shared prompt), and the completions
    (right-padded to T) run on that cache. The same values as one forward over [prompt | completion]
    rows, for (U·P + B·T) tokens instead of B·(P+T). Llama-shaped models (`model` given) take
    trainers/llama_forward.py's forward, the same computation without transformers' plumbing.
    Returns hidden (B, T, H), targets (B, T) and the completion mask (B, T)."""
    from transformers import DynamicCache

    distinct: dict[tuple[int, ...], int] = {}
    row_prompt = torch.tensor([distinct.setdefault(tuple(p), len(distinct)) for p in prompts], device=device)
    p_len = max(len(p) for p in distinct)
    t_len = max(1, max(len(c) for c in completions))
    prompt_ids = torch.full((len(distinct), p_len), pad_id, dtype=torch.long)
    prompt_attn = torch.zeros((len(distinct), p_len), dtype=torch.long)
    for row, prompt in enumerate(distinct):
        prompt_ids[row, p_len - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        prompt_attn[row, p_len - len(prompt) :] = 1
    comp_ids = torch.full((len(completions), t_len), pad_id, dtype=torch.long)
    comp_attn = torch.zeros((len(completions), t_len), dtype=torch.long)
    for row, completion in enumerate(completions):
        comp_ids[row, : len(completion)] = torch.tensor(completion, dtype=torch.long)
        comp_attn[row, : len(completion)] = 1
    prompt_ids, prompt_attn = prompt_ids.to(device), prompt_attn.to(device)
    comp_ids, comp_attn = comp_ids.to(device), comp_attn.to(device)
    if model is not None and llama_forward.takes_llama_forward(model, decoder, p_len + t_len):
        hidden = llama_forward.llama_shared_hidden(model, prompt_ids, prompt_attn, comp_ids, comp_attn, row_prompt)
        return hidden, comp_ids, comp_attn.bool()
    cache = DynamicCache()
    keyword = _cache_keyword(type(decoder))
    positions = (prompt_attn.cumsum(-1) - 1).clamp(min=0)
    prompt_hidden = (
        decoder(
            input_ids=prompt_ids, attention_mask=prompt_attn, position_ids=positions, use_cache=True, **{keyword: cache}
        )
        .last_hidden_state[:, -1:]
        .index_select(0, row_prompt)
    )  # (B, 1, H): predicts completion token 0
    copy_cache_rows(cache, row_prompt)
    attention = torch.cat([prompt_attn[row_prompt], comp_attn], dim=1)  # (B, P+T)
    comp_positions = prompt_attn.sum(-1)[row_prompt, None] + torch.arange(t_len, device=device)
    comp_hidden = decoder(
        input_ids=comp_ids, attention_mask=attention, position_ids=comp_positions, use_cache=True, **{keyword: cache}
    ).last_hidden_state  # (B, T, H): position t predicts token t+1
    hidden = torch.cat([prompt_hidden, comp_hidden[:, :-1]], dim=1)
    return hidden, comp_ids, comp_attn.bool()


def _chunk_logprobs(
    hidden: torch.Tensor, targets: torch.Tensor, head: Any, temperature: float, out: dict
) -> torch.Tensor:
    """(N,) logprobs of `targets` for hidden states (N, H); the first call also leaves the chunk's
    entropies in `out` (a checkpointed call runs again in backward: it does not redo them)."""
    logits = head(hidden).float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    if out.get("want_entropy") and "entropy" not in out:
        with torch.no_grad():
            out["entropy"] = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logits.gather(-1, targets[..., None]).squeeze(-1) - lse


def selective_logprobs(
    hidden: torch.Tensor, targets: torch.Tensor, head: Any, *, temperature: float = 1.0,
    chunk_tokens: int = CHUNK_TOKENS, entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Logprobs (N,) and entropies (N,) of targets (N,) for hidden states (N, H), chunk by chunk."""
    vocab = head.weight.shape[0] if hasattr(head, "weight") else 0
    recompute = torch.is_grad_enabled() and hidden.requires_grad and hidden.shape[0] * vocab * 4 > RECOMPUTE_BYTES
    if vocab:  # a chunk's fp32 logits stay near RECOMPUTE_BYTES whatever the vocabulary (152k: ~440 tokens)
        chunk_tokens = min(chunk_tokens, max(64, RECOMPUTE_BYTES // (vocab * 4)))
    logps, ents = [], []
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens]
        out = {"want_entropy": entropy}
        if recompute:
            logps.append(checkpoint(_chunk_logprobs, h, t, head, temperature, out, use_reentrant=False))
        else:
            logps.append(_chunk_logprobs(h, t, head, temperature, out))
        if entropy:
            ents.append(out["entropy"])
    empty = hidden.new_zeros(0, dtype=torch.float32)
    logp = torch.cat(logps) if logps else empty
    return logp, (torch.cat(ents) if ents else empty) if entropy else None


def image_features_of(model: Any) -> Any | None:
    """The module that turns pixel values into image-token features (LLaVA-style: `model.model`
    with `get_image_features`), or None."""
    inner = getattr(model, "model", None)
    return inner if hasattr(inner, "get_image_features") else None


def image_prompt_embeddings(model: Any, ids: torch.Tensor, p_len: int, pixel_values: torch.Tensor) -> torch.Tensor:
    """Input embeddings (B, P+T, H) with image features at the prompt's image tokens (the first P
    positions) only. A completion may hold the image token id as text (a policy can sample it; the
    engine embedded it as text), which the model's own merge would count as an image slot."""
    inner = image_features_of(model)
    embeds = inner.get_input_embeddings()(ids)
    features = inner.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
    features = torch.cat(list(features)) if isinstance(features, (list, tuple)) else features.flatten(0, -2)
    image_id = getattr(model.config, "image_token_id", None)
    image_id = image_id if image_id is not None else model.config.image_token_index
    slots = ids == image_id
    slots[:, p_len:] = False
    return embeds.masked_scatter(slots.unsqueeze(-1), features.to(embeds.dtype))


def image_kwargs(model: Any, pixel_values: Sequence[torch.Tensor | None] | None) -> dict[str, torch.Tensor]:
    """{"pixel_values": (N, C, H, W)} of the rows that have images, in row order (a LLaVA-style model
    puts the i-th image's features at the i-th run of image tokens), or {} without any."""
    present = [p for p in pixel_values or () if p is not None]
    if not present:
        return {}
    param = next(model.parameters())
    return {"pixel_values": torch.cat(present).to(param.device, param.dtype)}


def completion_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    pad_id: int,
    temperature: float = 1.0,
    entropy: bool = True,
    chunk_tokens: int = CHUNK_TOKENS,
    share_prompts: bool = True,
    pixel_values: Sequence[torch.Tensor | None] | None = None,
) -> ScoredBatch:
    """Logprobs and entropies of each completion token given its prompt (gradients flow if enabled).
    Rows with the same prompt (a GRPO group's samples) share one prompt forward (`shared_prompt_hidden`).
    `pixel_values`: per row, its prompt's images (n, C, H, W) or None, for a vision-language model
    (default: the prompts' own, when they are `ImageIds`); the prompt's image tokens are then image
    features, and only completion (text) tokens are scored."""
    if pixel_values is None:  # prompts that carry their images (trainers/images.ImageIds)
        pixel_values = [getattr(p, "pixel_values", None) for p in prompts]
    images = image_kwargs(model, pixel_values)
    parts = split_lm(model)
    if images and (parts is None or image_features_of(model) is None):  # the model's own image merge
        return full_vocab_logprobs(model, prompts, completions, pad_id=pad_id, temperature=temperature, images=images)
    if parts is None:
        return full_vocab_logprobs(model, prompts, completions, pad_id=pad_id, temperature=temperature)
    decoder, head = parts
    device = next(model.parameters()).device
    share_prompts = share_prompts and not images  # the same ids can stand for different images
    if share_prompts and can_share_prompts(model, decoder) and len({tuple(p) for p in prompts}) < len(prompts):
        hidden, targets, mask = shared_prompt_hidden(decoder, prompts, completions, pad_id, device, model)
    else:
        ids, attn, mask, p_len = pack(prompts, completions, pad_id, device)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        inputs = (
            {"inputs_embeds": image_prompt_embeddings(model, ids, p_len, images["pixel_values"])}
            if images
            else {"input_ids": ids}
        )
        hidden = decoder(**inputs, attention_mask=attn, position_ids=positions, use_cache=False).last_hidden_state
        hidden = hidden[:, p_len - 1 : -1]  # position i predicts token i+1: (B, T, H)
        targets = ids[:, p_len:]
    zeros = torch.zeros(mask.shape, dtype=torch.float32, device=device)
    vocab = head.weight.shape[0] if hasattr(head, "weight") else 0
    if vocab and mask.numel() * vocab * 4 <= RECOMPUTE_BYTES:
        # Small logits (a small vocabulary or batch): one pass over the padded (B, T) layout costs
        # less than gathering the real tokens out and scattering the results back.
        out = {"want_entropy": entropy}
        logp = _chunk_logprobs(hidden, targets, head, temperature, out)
        entropies = torch.where(mask, out["entropy"], zeros) if entropy else zeros
        return ScoredBatch(torch.where(mask, logp, zeros), entropies, mask)
    logp, ent = selective_logprobs(
        hidden[mask], targets[mask], head, temperature=temperature, chunk_tokens=chunk_tokens, entropy=entropy
    )
    entropies = zeros.masked_scatter(mask, ent) if ent is not None else zeros
    return ScoredBatch(zeros.masked_scatter(mask, logp), entropies, mask)


def full_vocab_logprobs(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    pad_id: int,
    temperature: float = 1.0,
    images: dict[str, torch.Tensor] | None = None,
) -> ScoredBatch:
    """The plain path: the full (B, T, V) logits, their log_softmax and its exp for the entropy.
    `images`: a vision-language model's `pixel_values` (image_kwargs)."""
    images = images or {}
    device = next(model.parameters()).device
    ids, attn, mask, p_len = pack(prompts, completions, pad_id, device)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    t_len = ids.shape[1] - p_len
    if "logits_to_keep" in _forward_params(type(model)):  # the LM head only where completion tokens are predicted
        logits = model(
            input_ids=ids, attention_mask=attn, position_ids=positions, logits_to_keep=t_len + 1, **images
        ).logits
        logits = logits[:, :-1, :].float()  # (B, T, V)
    else:
        logits = model(input_ids=ids, attention_mask=attn, position_ids=positions, **images).logits  # (B, P+T, V)
        logits = logits[:, p_len - 1 : -1, :].float()  # position i predicts token i+1: (B, T, V)
    if temperature > 0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = ids[:, p_len:]
    logprobs = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropies = -(logp_all.exp() * logp_all).sum(-1)
    zero = torch.zeros_like(logprobs)
    return ScoredBatch(torch.where(mask, logprobs, zero), torch.where(mask, entropies, zero), mask)


def batched_logprobs(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
    pad_id: int, temperature: float, micro_batch: int, entropy: bool = False,
    pixel_values: Sequence[torch.Tensor | None] | None = None,
) -> ScoredBatch:  # fmt: skip
    """`completion_logprobs` without gradient, `micro_batch` rows at a time (π_old, the reference
    model, evaluation): memory of one micro-batch, results padded to the batch's longest completion."""
    t_len = max(1, max(len(c) for c in completions))
    device = next(model.parameters()).device
    out_lp = torch.zeros((len(prompts), t_len), dtype=torch.float32, device=device)
    out_ent = torch.zeros_like(out_lp)
    mask = torch.zeros((len(prompts), t_len), dtype=torch.bool, device=device)
    with torch.no_grad():
        for start in range(0, len(prompts), max(1, micro_batch)):
            rows = slice(start, start + max(1, micro_batch))
            part = completion_logprobs(
                model, prompts[rows], completions[rows], pad_id=pad_id, temperature=temperature, entropy=entropy,
                pixel_values=pixel_values[rows] if pixel_values is not None else None,
            )  # fmt: skip
            width = part.logprobs.shape[1]
            out_lp[rows, :width], out_ent[rows, :width], mask[rows, :width] = part.logprobs, part.entropies, part.mask
    return ScoredBatch(out_lp, out_ent, mask)
