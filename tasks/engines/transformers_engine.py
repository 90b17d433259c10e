"""The default engine: batched sampling with a KV cache on any Hugging Face causal LM (CPU or GPU).

A hand-written decode loop rather than `model.generate`: it needs the tempered log-probability and
entropy of every sampled token anyway, and computing them where the token is sampled costs less
than asking `generate` for its logits and redoing the softmax (see benchmarks/engine_bench.py).
It stops like `generate`: on every id of the generation config's `eos_token_id` (chat models end a
turn on a token that is not the tokenizer's EOS) and on optional stop strings; a tokenizer without
a pad token pads with EOS. With a compute `dtype` other than the parameters' (fp32 masters), the
forward passes run under autocast.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from reasonloop.tasks import prompts as prompt_policy
from reasonloop.tasks.engines.base import Completion, ImagePrompt, Prompt, SamplingParams, register_engine
from reasonloop.tasks.engines.static_decode import StaticDecoder
from reasonloop.tasks.models.loading import unwrap_peft
from reasonloop.tasks.models.precision import compute_in, eos_token_ids, pad_token_id, resolve_dtype


def truncate_logprobs(logp: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) what top-k / top-p sampling excludes. logp: (B, V) log-probabilities.
    Only the sampling distribution is truncated; recorded logprobs stay untruncated."""
    if top_k and top_k < logp.shape[-1]:
        kth = torch.topk(logp, top_k, dim=-1).values[:, -1:]
        logp = logp.masked_fill(logp < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logp, order = torch.sort(logp, dim=-1, descending=True)
        cumulative = sorted_logp.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logp.softmax(-1) >= top_p  # keep the token that crosses top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logp = logp.masked_fill(drop, float("-inf"))
    return logp


MASK64 = (1 << 64) - 1


def signed64(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def splitmix64(x: int) -> int:
    """A 64-bit mix (Steele et al., SplitMix64's finalizer), for deriving per-sample stream keys."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's `>>` is arithmetic on signed values)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def counter_uniform(keys: torch.Tensor, t: int | range) -> torch.Tensor:
    """Uniforms in (0, 1), float64: SplitMix64 of (row key, step t), computed on the keys' device.
    keys: (B,) int64 -> (B,) for one step t, or (B, len(t)) for a range of steps (a decode run draws
    all of its uniforms at once). A row's stream depends on its key only (batch invariance); int64
    multiplication wraps as the unsigned arithmetic needs."""
    steps = range(t, t + 1) if isinstance(t, int) else t
    offsets = [signed64(((s + 1) * 0x9E3779B97F4A7C15) & MASK64) for s in steps]
    z = keys[:, None] + torch.tensor(offsets, dtype=torch.long, device=keys.device)
    z = (z ^ _shr(z, 30)) * signed64(0xBF58476D1CE4E5B9)
    z = (z ^ _shr(z, 27)) * signed64(0x94D049BB133111EB)
    z = z ^ _shr(z, 31)
    uniforms = (_shr(z, 11).double() + 0.5) / float(1 << 53)
    return uniforms[:, 0] if isinstance(t, int) else uniforms


def sample_inverse_cdf(logp: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row from exp(logp) (unnormalized is fine: -inf entries are never drawn) by
    inverting the row's CDF at its own uniform. logp: (B, V); uniforms: (B,) -> (B,) int64.
    The CDF is summed in float64 so a 150k vocabulary loses no tail mass to rounding."""
    cdf = logp.double().exp().cumsum(-1)
    target = (uniforms * cdf[:, -1])[:, None]
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=logp.shape[-1] - 1)


def image_inputs(processor: Any, prompt: ImagePrompt) -> tuple[list[int], torch.Tensor]:
    """A vision-language processor's (token ids, pixel values (n_images, C, H, W)) for an image
    prompt: its turns through the processor's chat template (image parts become the image token,
    which the processor expands to one token per patch), else the image tokens before the text."""
    if getattr(processor, "chat_template", None):
        text = processor.apply_chat_template(prompt.messages(), add_generation_prompt=True, tokenize=False)
    elif isinstance(prompt.prompt, str):
        text = processor.image_token * len(prompt.images) + prompt.prompt
    else:
        raise ValueError("chat turns with images need a processor with a chat template")
    encoded = processor(text=[text], images=list(prompt.images), return_tensors="pt")
    return encoded["input_ids"][0].tolist(), encoded["pixel_values"]


@register_engine("transformers")
class TransformersEngine:
    name = "transformers"
    accepts_token_ids = True
    accepts_image_ids = True  # token ids that carry pixel values (trainers/images.ImageIds)

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        batch_size: int = 64,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        static_decode: bool = True,
        processor: Any = None,
    ) -> None:
        """`model`: a model object (with its `tokenizer`), or a folder / hub id, loaded here in the
        compute `dtype` (inference needs no fp32 masters). `dtype` for a model object: the dtype
        its forward passes run in (None: its parameters'). `static_decode`: decode Llama-shaped
        models through `StaticDecoder` (False: always transformers' forward). `processor`: a
        vision-language model's (AutoProcessor), for `ImagePrompt`s; loaded with a folder's model."""
        self.static_decode = static_decode
        if isinstance(model, (str, Path)):
            from reasonloop.tasks.models.loading import (
                dtype_source,
                is_vision_model,
                load_causal_lm,
                load_processor,
                load_tokenizer,
            )

            tokenizer = tokenizer or load_tokenizer(model)
            processor = processor or (load_processor(model) if is_vision_model(model) else None)
            where = device or "cpu"
            load_dtype = resolve_dtype(dtype, dtype_source(model), where) if isinstance(dtype, str) else dtype
            model = load_causal_lm(model, dtype=load_dtype or resolve_dtype("auto", dtype_source(model), where))
            dtype = None
        if tokenizer is None:
            raise ValueError("pass the tokenizer with a model object")
        if device is not None:
            model = model.to(device)
        self.model, self.tokenizer, self.batch_size, self.processor = model, tokenizer, batch_size, processor
        self._texts: dict[int, str] = {}  # token id -> text, for top_logprobs
        self.dtype = resolve_dtype(dtype) if isinstance(dtype, str) else dtype
        self.pad_id = pad_token_id(tokenizer, model)
        self.eos_ids = eos_token_ids(model, tokenizer)
        # transformers 5 renamed `past_key_values` to `cache`; 4.x knows only the old name.
        core = unwrap_peft(model)  # a PEFT wrapper takes **kwargs
        params = inspect.signature(core.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        # Only the last position's logits are needed: skip the LM head on the rest of the prompt.
        self._last_logits = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: ids as given, text, or chat messages through the chat template
        (an image prompt: with each image's placeholder expanded to its patch tokens)."""
        return self._encode(prompt)[0]

    def _encode(self, prompt: Prompt) -> tuple[list[int], torch.Tensor | None]:
        """(token ids, pixel values (n_images, C, H, W) or None)."""
        if getattr(prompt, "pixel_values", None) is not None:  # ids encoded with their images (trainers/images.py)
            return list(prompt), prompt.pixel_values
        if not isinstance(prompt, ImagePrompt):
            return prompt_policy.encode(self.tokenizer, prompt), None
        if self.processor is None:
            raise ValueError("an ImagePrompt needs a vision-language model and its processor (AutoProcessor)")
        return image_inputs(self.processor, prompt)

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingParams) -> list[Completion]:
        """With `sampling.seeds` (one per prompt), every sample draws from its own counter-based
        stream keyed by (prompt seed, sample index): the result does not depend on the batch; without,
        one torch generator seeded by `sampling.seed` serves the whole call."""
        encoded = [self._encode(p) for p in prompts]
        jobs = [(i, ids, pixels) for i, (ids, pixels) in enumerate(encoded) for _ in range(n)]
        if sampling.seeds and len(sampling.seeds) != len(prompts):
            raise ValueError(f"{len(sampling.seeds)} seeds for {len(prompts)} prompts")
        keys = (
            [
                signed64(splitmix64((sampling.seeds[i] & MASK64) ^ splitmix64(j)))
                for i in range(len(prompts))
                for j in range(n)
            ]
            if sampling.seeds
            else None
        )
        device = next(self.model.parameters()).device
        generator = torch.Generator(device=device)
        generator.manual_seed(sampling.seed if sampling.seed is not None else int(torch.seed() % 2**63))
        out: list[Completion] = []
        with compute_in(self.model, self.dtype):
            for start in range(0, len(jobs), self.batch_size):
                end = start + self.batch_size
                row_keys = torch.tensor(keys[start:end], dtype=torch.long, device=device) if keys else None
                out += self._generate_batch(jobs[start:end], sampling, generator, row_keys)
        return out

    @torch.inference_mode()
    def _generate_batch(
        self, jobs: list[tuple[int, list[int], torch.Tensor | None]], sampling: SamplingParams, generator: torch.Generator,
        row_keys: torch.Tensor | None = None,
    ) -> list[Completion]:  # fmt: skip
        device = next(self.model.parameters()).device
        batch, p_len, steps = len(jobs), max(len(ids) for _, ids, _ in jobs), sampling.max_new_tokens
        # Each distinct prompt is prefilled once and its cache rows copied to its samples: a group of
        # n samples shares one prompt, and the prefill was most of a short completion's cost. Image
        # prompts are told apart by prompt index too (the same ids stand for any image).
        distinct: dict[tuple, int] = {}
        pixels: list[torch.Tensor] = []
        rows = []
        for i, ids, image in jobs:
            key = (tuple(ids), i if image is not None else None)
            if key not in distinct:
                distinct[key] = len(distinct)
                pixels += [image] if image is not None else []
            rows.append(distinct[key])
        job_prompt = torch.tensor(rows, device=device)
        input_ids = torch.full((len(distinct), p_len), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(distinct), p_len), dtype=torch.long)
        for row, (ids, _) in enumerate(distinct):
            input_ids[row, p_len - len(ids) :] = torch.tensor(ids)
            attention[row, p_len - len(ids) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        stop_ids = torch.tensor(sorted(self.eos_ids | set(sampling.stop_token_ids)), device=device)
        cache = DynamicCache()
        kw = {self._cache_kw: cache, **self._last_logits}
        images = {"pixel_values": torch.cat(pixels).to(device, self.pixel_dtype)} if pixels else {}
        logits = self.model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, **kw, **images
        ).logits[:, -1, :][job_prompt]
        if len(distinct) < batch:
            cache.batch_select_indices(job_prompt)
        # Decode steps through a KV buffer of our own where the model is Llama-shaped (static_decode.py:
        # the same values without transformers' per-call plumbing; benchmarks/RESULTS.md, engine).
        # One mask for the whole run, sliced per step (growing it by concatenation costs a copy).
        full_attention = torch.ones((batch, p_len + steps), dtype=torch.long, device=device)
        full_attention[:, :p_len] = attention[job_prompt]
        positions = positions[job_prompt]
        next_pos = positions[:, -1:] + 1
        static = StaticDecoder(self.model, cache, p_len, steps, next_pos, full_attention.bool()) if (
            self.static_decode and StaticDecoder.supports(self.model, cache, p_len + steps)
        ) else None  # fmt: skip
        tokens = torch.full((batch, steps), self.pad_id, dtype=torch.long, device=device)
        logprobs = torch.zeros((batch, steps), device=device)
        entropies = torch.zeros((batch, steps), device=device)
        lengths = torch.full((batch,), steps, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        k = sampling.top_logprobs
        top_values = torch.zeros((batch, steps, k), device=device)
        top_ids = torch.zeros((batch, steps, k), dtype=torch.long, device=device)
        greedy = sampling.temperature == 0
        uniforms = counter_uniform(row_keys, range(steps)) if row_keys is not None and not greedy else None
        for t in range(steps):
            scaled = logits.float() if greedy or sampling.temperature == 1.0 else logits.float() / sampling.temperature
            logp = torch.log_softmax(scaled, dim=-1)  # (B, V): the distribution we record
            probs = logp.exp()
            truncated = sampling.top_k or sampling.top_p < 1.0
            if greedy:
                token = logp.argmax(-1)
            elif uniforms is not None:
                sample_logp = truncate_logprobs(logp, sampling.top_k, sampling.top_p) if truncated else logp
                token = sample_inverse_cdf(sample_logp, uniforms[:, t])
            elif truncated:
                sample_logp = truncate_logprobs(logp, sampling.top_k, sampling.top_p)
                token = torch.multinomial(sample_logp.exp(), 1, generator=generator).squeeze(-1)
            else:
                token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            token = token.masked_fill(finished, self.pad_id)
            tokens[:, t] = token
            logprobs[:, t] = logp.gather(-1, token[:, None]).squeeze(-1)
            entropies[:, t] = torch.special.entr(probs).sum(-1)
            if k:
                top_values[:, t], top_ids[:, t] = logp.topk(min(k, logp.shape[-1]), dim=-1)
            stopped = ~finished & torch.isin(token, stop_ids) if not sampling.ignore_eos else torch.zeros_like(finished)
            if sampling.stop:
                stopped |= self._stop_strings(tokens[:, : t + 1], ~finished & ~stopped, sampling.stop)
            lengths = torch.where(stopped, torch.full_like(lengths, t + 1), lengths)
            finished |= stopped
            if finished.all() or t == steps - 1:
                break
            if static is not None:
                logits = static.step(token, t)
            else:
                logits = self.model(
                    input_ids=token[:, None], attention_mask=full_attention[:, : p_len + t + 1], position_ids=next_pos,
                    use_cache=True, **kw,
                ).logits[:, -1, :]  # fmt: skip
            next_pos = next_pos + 1
        return self._completions(
            jobs,
            tokens.cpu(),
            logprobs.cpu(),
            entropies.cpu(),
            lengths.cpu(),
            finished.cpu(),
            sampling.stop,
            self.eos_ids | set(sampling.stop_token_ids),
            (top_values.cpu(), top_ids.cpu()) if k else None,
        )

    @property
    def pixel_dtype(self) -> torch.dtype:
        """What pixel values are cast to: the parameters' dtype (autocast, when on, casts from there)."""
        return next(self.model.parameters()).dtype

    def _stop_strings(self, tokens: torch.Tensor, live: torch.Tensor, stop: tuple[str, ...]) -> torch.Tensor:
        """Rows (B,) whose text now ends in a stop string. Only the last few tokens are decoded:
        enough to hold the longest stop string (a token is at least one byte)."""
        window = max(len(s.encode()) for s in stop) + 1
        hit = torch.zeros_like(live)
        for b in live.nonzero().flatten().tolist():
            tail = self.tokenizer.decode(tokens[b, -window:].tolist(), skip_special_tokens=True)
            hit[b] = any(s in tail for s in stop)
        return hit

    def _completions(
        self, jobs, tokens, logprobs, entropies, lengths, finished, stop=(), stop_ids=(), top=None
    ) -> list[Completion]:
        out = []
        text_of = self._token_text
        for b, (prompt_index, prompt_ids, _) in enumerate(jobs):
            n = int(lengths[b])
            ids = tokens[b, :n].tolist()
            stopped = bool(finished[b])
            text_ids = ids[:-1] if stopped and ids[-1] in stop_ids else ids  # a stop token is trained on, not shown
            text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
            cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
            out.append(Completion(
                text=text[:cut] if cut >= 0 else text,
                token_ids=ids,
                logprobs=logprobs[b, :n].tolist(),
                entropies=entropies[b, :n].tolist(),
                finish_reason="stop" if stopped else "length",
                prompt_ids=prompt_ids,
                prompt_index=prompt_index,
                extra={} if top is None else {
                    "tokens": [text_of(i) for i in ids],
                    "top_logprobs": [
                        {text_of(i): v for v, i in zip(top[0][b, t].tolist(), top[1][b, t].tolist(), strict=True)}
                        for t in range(n)
                    ],
                },
            ))  # fmt: skip
        return out

    def _token_text(self, token_id: int) -> str:
        """One token's text as decoding it alone gives (a byte-level BPE piece that is part of a
        multi-byte character decodes to a replacement character; option letters never are)."""
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return text
