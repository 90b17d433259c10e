"""Supervised fine-tuning on `sft_samples` with loss masks: only unmasked target tokens count.

Used for the warm-up before RL, and for BSAFE+ (the violation span is masked) and Octopus (the
first attempt is masked). A sample with `messages` is rendered with the tokenizer's chat template
and the loss covers the assistant turns only (TRL's assistant-only loss; tasks/prompts.py finds
them without `{% generation %}` markers); a plain sample is prompt text + target + EOS.
`loss_mask_spans` are character spans of the target (the last assistant turn's content for a
chat sample); they are mapped to tokens with the tokenizer's offsets, so any fast tokenizer works.
The loss is the mean over the step's kept tokens, whatever `grad_accum` splits the step into.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from reasonloop.tasks import prompts as prompt_policy
from reasonloop.tasks.models.precision import compute_in, pad_token_id
from reasonloop.trainers.config import OfflineOptions, SFTConfig
from reasonloop.trainers.images import ImageIds, ImageInputs, text_only_error
from reasonloop.trainers.logprobs import completion_logprobs
from reasonloop.trainers.ogpsa import OGPSA, ogpsa_for
from reasonloop.trainers.step_utils import adamw, split_indices

Encoded = tuple[list[int], list[int], list[bool]]  # prompt ids, target ids, loss mask per target token


def _overlaps(start: int, end: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(a < end and start < b for a, b in spans)


def encode_plain(tokenizer: Any, prompt: str, target: str, spans: Sequence[dict] | None) -> Encoded:
    """(prompt ids, target ids + EOS, loss mask per target token)."""
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    enc = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
    masked = [(s["start"], s["end"]) for s in spans or []]
    keep = [not _overlaps(start, end, masked) for start, end in enc["offset_mapping"]]
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else pad_token_id(tokenizer)
    return prompt_ids, [*enc["input_ids"], eos], [*keep, True]


def encode_chat(
    tokenizer: Any, messages: list[dict], spans: Sequence[dict] | None, *, last_turn_only: bool = False
) -> Encoded:
    """The conversation through the chat template; the loss on assistant turns only (their content
    and end-of-turn marker; with `last_turn_only`, the last one: earlier turns are context), minus
    `spans` of the last assistant turn's content."""
    text, assistant = prompt_policy.assistant_spans(tokenizer, messages)
    if not assistant:
        raise ValueError("a chat SFT sample needs at least one assistant turn")
    if last_turn_only:
        assistant = assistant[-1:]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    last = next(m for m in reversed(messages) if m["role"] == "assistant")["content"]
    offset = text.find(last, assistant[-1][0]) if last else -1
    masked = [(offset + s["start"], offset + s["end"]) for s in spans or []] if offset >= 0 else []
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    answer = [_overlaps(a, b, assistant) for a, b in offsets]
    loss = [x and not _overlaps(a, b, masked) for x, (a, b) in zip(answer, offsets, strict=True)]
    first = answer.index(True) if any(answer) else len(ids) - 1  # the prompt ends where the first answer starts
    return ids[:first], ids[first:], loss[first:]


def encode_image_sample(images: ImageInputs, tokenizer: Any, rendered: Any, sample: dict) -> Encoded:
    """A sample about an image: its prompt turns with the image, through the processor (ImageIds:
    the ids carry the pixel values); the target as the processor's chat template closes an
    assistant turn (its end-of-turn marker trained, the whitespace after it not), or the target
    and EOS without a template."""
    if sample.get("loss_mask_spans"):
        raise ValueError("loss_mask_spans on an image sample are not supported")
    if not isinstance(rendered, str) and rendered and rendered[-1]["role"] == "assistant":
        rendered = rendered[:-1]  # the turn trained on is the target
    prompt = images.prompt(rendered, sample["media_ref"])
    prompt_ids = images.encode(prompt)
    if getattr(images.processor, "chat_template", None):
        head = images.processor.apply_chat_template(prompt.messages(), add_generation_prompt=True, tokenize=False)
        answer = {"role": "assistant", "content": sample["target"]}
        full = images.processor.apply_chat_template([*prompt.messages(), answer], tokenize=False)
        if not full.startswith(head):
            raise ValueError("the processor's chat template renders the prompt differently when an answer follows")
        target_ids = list(tokenizer(full[len(head) :].rstrip(), add_special_tokens=False)["input_ids"])
    else:
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else pad_token_id(tokenizer)
        target_ids = [*tokenizer(sample["target"], add_special_tokens=False)["input_ids"], eos]
    return prompt_ids, target_ids, [True] * len(target_ids)


def encode_sample(
    tokenizer: Any, sample: dict, chat_template: str = "auto", images: ImageInputs | None = None
) -> Encoded:
    rendered = prompt_policy.render(tokenizer, sample["prompt"], sample.get("messages"), chat_template)
    if sample.get("media_ref"):
        if images is None:
            raise text_only_error("an sft sample")
        return encode_image_sample(images, tokenizer, rendered, sample)
    if isinstance(rendered, str):
        return encode_plain(tokenizer, sample["prompt"], sample["target"], sample.get("loss_mask_spans"))
    messages = sample.get("messages") or []
    if not messages or messages[-1]["role"] != "assistant":
        # A prompt (it ends before an answer): the target is the answer turn, the only one trained;
        # earlier assistant turns (an iGRPO draft) are context.
        messages = [*rendered, {"role": "assistant", "content": sample["target"]}]
        return encode_chat(tokenizer, messages, sample.get("loss_mask_spans"), last_turn_only=True)
    return encode_chat(tokenizer, messages, sample.get("loss_mask_spans"))


def truncate(encoded: Encoded, max_length: int) -> Encoded:
    """Cut from the right to `max_length` tokens (prompt + target), as TRL's `max_length`; a prompt
    with images is never cut (its image tokens would lose their image), only its target."""
    prompt, target, keep = encoded
    room = max(1, max_length - len(prompt))
    if isinstance(prompt, ImageIds):
        return prompt, target[:room], keep[:room]
    return prompt[-max_length + 1 :] if len(prompt) >= max_length else prompt, target[:room], keep[:room]


def encode_all(
    tokenizer: Any, samples: Sequence[dict], chat_template: str, max_length: int, images: ImageInputs | None = None
) -> list[Encoded]:
    return [truncate(encode_sample(tokenizer, s, chat_template, images), max_length) for s in samples]


def kept_logprobs(model: Any, rows: Sequence[Encoded], pad_id: int, compute_dtype: torch.dtype | None) -> torch.Tensor:
    """(B,) summed log-probabilities of each row's kept target tokens (with grad)."""
    with compute_in(model, compute_dtype):
        scored = completion_logprobs(model, [r[0] for r in rows], [r[1] for r in rows], pad_id=pad_id, entropy=False)
    keep = torch.zeros_like(scored.mask)
    for row, (_, _, mask) in enumerate(rows):
        keep[row, : len(mask)] = torch.tensor(mask)
    return (scored.logprobs * (keep & scored.mask)).sum(-1)


def masked_nll(model: Any, rows: Sequence[Encoded], pad_id: int, compute_dtype: torch.dtype | None) -> torch.Tensor:
    """The summed negative log-likelihood of the rows' kept target tokens (a scalar with grad)."""
    return -kept_logprobs(model, rows, pad_id, compute_dtype).sum()


class SFTGuidance:
    """α·L_SFT added to another trainer's update (RLBF's L = L_GRPO + α·L_SFT on BSAFE+ rows):
    each call backpropagates α × the mean NLL over a seeded batch of `samples` and returns it."""

    def __init__(
        self, samples: Sequence[dict], tokenizer: Any, *, coef: float, batch_size: int, max_length: int, seed: int,
        pad_id: int, compute_dtype: torch.dtype | None = None, chat_template: str = "auto",
    ) -> None:  # fmt: skip
        if not samples:
            raise ValueError("SFT guidance needs sft_samples (none matched)")
        self.encoded = encode_all(tokenizer, samples, chat_template, max_length)
        self.coef, self.batch_size, self.pad_id, self.dtype = coef, batch_size, pad_id, compute_dtype
        self.rng = random.Random(seed)

    def __call__(self, model: Any, scale: float = 1.0) -> float:
        rows = [self.encoded[self.rng.randrange(len(self.encoded))] for _ in range(self.batch_size)]
        tokens = float(max(1, sum(sum(r[2]) for r in rows)))
        loss = masked_nll(model, rows, self.pad_id, self.dtype) / tokens
        (self.coef * scale * loss).backward()
        return loss.item()


def sft_guidance(
    config: Any, store: Any, tokenizer: Any, pad_id: int, compute_dtype: torch.dtype | None
) -> SFTGuidance:
    """RLBF's SFT term for an RL run (`config`: a TrainConfig with sft_coef > 0), on the store's
    train-split sft_samples of `config.sft_source`."""
    from reasonloop.storage.samplers import sft_rows  # the store is passed in; imported at run time

    samples = sft_rows(store, "train", config.sft_source)
    return SFTGuidance(
        samples, tokenizer, coef=config.sft_coef, batch_size=config.sft_batch_size, pad_id=pad_id,
        max_length=config.max_prompt_length + config.max_completion_length, seed=config.seed,
        compute_dtype=compute_dtype, chat_template=config.chat_template,
    )  # fmt: skip


def warmup_cosine(warmup: int, total: int, floor: float = 0.1) -> Callable[[int], float]:
    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        progress = min(1.0, (i - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def reference_backward(
    samples: Sequence[dict], model: Any, tokenizer: Any, *, pad_id: int, compute_dtype: torch.dtype | None,
    max_length: int, chat_template: str = "auto", chunk: int = 16,
) -> Callable[[], None]:  # fmt: skip
    """A capability set's task-loss backward for OGPSA: the summed NLL of its samples' kept
    tokens, in chunks of `chunk` rows (gradients accumulate)."""
    encoded = encode_all(tokenizer, samples, chat_template, max_length)

    def backward() -> None:
        for lo in range(0, len(encoded), chunk):
            masked_nll(model, encoded[lo : lo + chunk], pad_id, compute_dtype).backward()

    return backward


def optimizer_for(
    config: OfflineOptions, model: Any, tokenizer: Any, reference_sets: Sequence[Sequence[dict]], *, pad_id: int,
    compute_dtype: torch.dtype | None,
) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer, Any, OGPSA | None]:  # fmt: skip
    """(trainable parameters, AdamW, warm-up + cosine schedule, OGPSA or None) of an offline trainer."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(trainable, config.lr, config.weight_decay)
    schedule = warmup_cosine(config.warmup_steps, config.steps)
    ogpsa = ogpsa_from_sets(
        config,
        reference_sets,
        model,
        tokenizer,
        pad_id=pad_id,
        compute_dtype=compute_dtype,
        max_length=config.max_length,
    )
    return trainable, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), ogpsa


def ogpsa_from_sets(
    config: OfflineOptions, reference_sets: Sequence[Sequence[dict]], model: Any, tokenizer: Any, *, pad_id: int,
    compute_dtype: torch.dtype | None, max_length: int,
) -> OGPSA | None:  # fmt: skip
    """OGPSA over `reference_sets` (lists of sft samples, one direction each); None when there are none."""
    if not reference_sets:
        return None
    backward = [
        reference_backward(samples, model, tokenizer, pad_id=pad_id, compute_dtype=compute_dtype, max_length=max_length,
                           chat_template=config.chat_template)
        for samples in reference_sets if samples
    ]  # fmt: skip
    return ogpsa_for(model, backward, every=config.ogpsa_every, mode=config.ogpsa_mode, scale=config.ogpsa_scale)


def run_sft(
    config: SFTConfig, *, model: Any, tokenizer: Any, samples: Sequence[dict], log: Callable[[dict], None] | None = None,
    compute_dtype: torch.dtype | None = None, reference_sets: Sequence[Sequence[dict]] = (),
    images: ImageInputs | None = None,
) -> list[dict]:  # fmt: skip
    """Train on samples (dicts with prompt, target, messages, loss_mask_spans, media_ref); per-step
    metrics. `reference_sets`: OGPSA's capability sets (trainers/ogpsa.py), each a list of samples.
    `images`: a vision-language model's (trainers/images.py), for samples with a `media_ref`."""
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    if not samples:
        raise ValueError("no sft_samples to train on")
    encoded = encode_all(tokenizer, samples, config.chat_template, config.max_length, images)
    pad_id = pad_token_id(tokenizer, model)
    trainable, optimizer, scheduler, ogpsa = optimizer_for(
        config, model, tokenizer, reference_sets, pad_id=pad_id, compute_dtype=compute_dtype
    )
    rng = random.Random(config.seed)
    history = []
    model.train()
    for step in range(1, config.steps + 1):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(config.batch_size)]
        total = float(max(1, sum(sum(b[2]) for b in batch)))  # the step's loss tokens: accumulation changes memory only
        optimizer.zero_grad(set_to_none=True)
        if ogpsa is not None:
            ogpsa.maybe_refresh(step)
        loss_value = 0.0
        for micro in split_indices(list(range(len(batch))), config.grad_accum):
            loss = masked_nll(model, [batch[i] for i in micro], pad_id, compute_dtype) / total
            loss.backward()
            loss_value += loss.item()
        removed = ogpsa.project_gradients() if ogpsa is not None else None
        norm = torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm or float("inf"))
        optimizer.step()
        scheduler.step()
        record = {"step": step, "loss": loss_value, "grad_norm": float(norm), "lr": scheduler.get_last_lr()[0]}
        if removed is not None:
            record["ogpsa_removed"] = removed  # share of the gradient's squared norm projected away
        history.append(record)
        if log:
            log(record)
    model.eval()
    return history
