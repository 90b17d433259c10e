"""What every evaluation starts from: a fixed list of stored problems (by id, so every model sees
the same ones) and an engine for the model under test."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reasonloop.storage import ReplayStore
    from reasonloop.tasks.engines.base import Engine

COLUMNS = "id, prompt, messages, answer, answer_type, taxonomy, choices, media_ref"


def eval_problems(store: ReplayStore, split: str, source: str, limit: int) -> list[dict]:
    """The first `limit` problems of a split (and source: '' = all) in id order."""
    from reasonloop.storage.samplers import split_filter

    where, params = split_filter(split, source)
    params["n"] = limit
    return store.query(f"SELECT {COLUMNS} FROM problems WHERE {where} ORDER BY id LIMIT $n", params).to_pylist()


def eval_engine(
    model: str | Path, tokenizer: Any, *, engine: str = "transformers", engine_url: str = "", batch_size: int = 256,
    device: str = "auto", dtype: str = "auto",
) -> Engine:  # fmt: skip
    """`engine`: transformers (here, on `device` in `dtype`) | vllm (this process) | openai (a
    server at `engine_url` serving `model`; prompts are rendered and tokenized here, as in
    training). An unknown name fails listing the valid ones."""
    from reasonloop.tasks.engines import make_engine
    from reasonloop.trainers.step_utils import resolve_device

    options: dict[str, dict[str, Any]] = {
        "transformers": {
            "model": model,
            "batch_size": batch_size,
            "device": str(resolve_device(device)),
            "dtype": dtype,
        },
        "vllm": {"model": str(model), "dtype": dtype},
        "openai": {"base_url": engine_url, "model": str(model), "tokenizer": tokenizer},
    }
    return make_engine(engine, **options.get(engine, {}))


def with_images(store: ReplayStore, prompts: list, problems: list[dict]) -> list:
    """Rendered prompts, those of problems with an image as `ImagePrompt`s (a vision-language model's)."""
    from reasonloop.tasks.engines.base import ImagePrompt

    return [ImagePrompt(p, (store.media.open_image(row["media_ref"]),)) if row.get("media_ref") else p
            for p, row in zip(prompts, problems, strict=True)]  # fmt: skip
