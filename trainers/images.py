"""Images in training: a vision-language run's rows carry `media_ref`s; this turns them into what
the model's forward takes.

A prompt about an image is encoded once, by the model's processor (tasks/engines/transformers_engine
`image_inputs`): the image placeholder expands to one token per patch. `ImageIds` are those token ids
carrying the pixel values their image tokens stand for, so they travel through everything that
handles a prompt's ids (the engine, micro-batching, π_old and reference forwards, SFT rows) and the
forward (trainers/logprobs.py) finds the images beside the ids. Rows read back from the store have
plain ids; `attach` gives them their images again by the problem's `media_ref`. Masks and
logprobs cover completion (text) tokens only: image tokens are prompt tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from reasonloop.tasks.engines.base import ImagePrompt
from reasonloop.tasks.engines.transformers_engine import image_inputs


class ImageIds(list):
    """A prompt's token ids with `pixel_values` (n_images, C, H, W) for its image tokens."""

    def __init__(self, ids: Sequence[int], pixel_values: torch.Tensor) -> None:
        super().__init__(ids)
        self.pixel_values = pixel_values


class ImageInputs:
    """The images of a run's rows, from the store's media through the model's processor; the last
    `cache_size` images and pixel tensors are kept (a group's samples share one image)."""

    def __init__(self, processor: Any, media: Any, *, cache_size: int = 1024) -> None:
        self.processor, self.media, self.cache_size = processor, media, cache_size
        self._images: OrderedDict[str, Any] = OrderedDict()
        self._pixels: OrderedDict[str, torch.Tensor] = OrderedDict()

    def _cached(self, cache: OrderedDict, ref: str, make: Any) -> Any:
        if ref in cache:
            cache.move_to_end(ref)
            return cache[ref]
        value = cache[ref] = make()
        if len(cache) > self.cache_size:
            cache.popitem(last=False)
        return value

    def image(self, ref: str) -> Any:
        return self._cached(self._images, ref, lambda: self.media.open_image(ref))

    def pixels(self, ref: str) -> torch.Tensor:
        """(1, C, H, W): what the processor makes of the image (the same values as in `encode`)."""
        return self._cached(
            self._pixels, ref, lambda: self.processor.image_processor(images=[self.image(ref)], return_tensors="pt")[
                "pixel_values"]
        )  # fmt: skip

    def prompt(self, rendered: Any, ref: str) -> ImagePrompt:
        """A problem's rendered prompt (text or chat turns) with its image."""
        return ImagePrompt(rendered, (self.image(ref),))

    def encode(self, prompt: ImagePrompt) -> ImageIds:
        ids, pixel_values = image_inputs(self.processor, prompt)
        return ImageIds(ids, pixel_values)

    def attach(self, prompts: Sequence[Sequence[int]], refs: Sequence[str | None]) -> list:
        """Prompt ids read back from the store, each with its image again (None: a text prompt)."""
        return [ImageIds(p, self.pixels(r)) if r else p for p, r in zip(prompts, refs, strict=True)]


def text_only_error(what: str) -> ValueError:
    return ValueError(
        f"{what} has an image (media_ref) and this model takes no images: train a vision-language model "
        "(reasonloop model init --vision), or use the recipe's text mode (the scene in the prompt)"
    )
