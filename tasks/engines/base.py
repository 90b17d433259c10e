"""The engine interface: prompts in, sampled completions with token-level data out.

Logprob semantics, the same for every engine that can provide them exactly:
    logprobs[t] = log_softmax(logits_t / temperature)[token_t]
with no top-k/top-p renormalization (truncation changes what is sampled, not what is recorded),
and entropies[t] the entropy of that same tempered distribution. An engine that cannot provide
them exactly (vLLM returns pre-temperature logprobs unless told otherwise) says so with
`logprobs_exact=False`, and trainers recompute old logprobs for its rollouts.

This package imports torch and transformers only: never storage, Prefect or polars, so the GPU
check can run it on a machine that has nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from reasonloop.tasks.registry import Registry

ChatMessages = list[dict[str, str]]
TokenIds = list[int]


@dataclass(frozen=True)
class ImagePrompt:
    """A prompt about images: its text or chat turns, and its images (PIL, RGB). The images go, in
    order, before the text of the first user turn, as image parts of that turn (`messages`): the
    form chat templates of LLaVA/Qwen2-VL-style processors and OpenAI-compatible servers take."""

    prompt: str | ChatMessages
    images: tuple[Any, ...]
    # The prompt's ids as the trainer's processor encodes them (image tokens expanded): what a
    # server that reports no prompt ids (OpenAI-compatible) records on its completions.
    token_ids: tuple[int, ...] = ()

    def messages(self) -> list[dict[str, Any]]:
        turns = [{"role": "user", "content": self.prompt}] if isinstance(self.prompt, str) else list(self.prompt)
        first = next(i for i, t in enumerate(turns) if t["role"] == "user")
        text = turns[first]["content"]
        parts = [{"type": "image"} for _ in self.images] + [{"type": "text", "text": text}]
        return [*turns[:first], {**turns[first], "content": parts}, *turns[first + 1 :]]


Prompt = Union[str, ChatMessages, TokenIds, ImagePrompt]  # noqa: UP007 - readable alias; ids: already encoded


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. Defaults sample from the model's own distribution (T=1, no truncation)."""

    temperature: float = 1.0  # 0 means greedy (logprobs then at T=1)
    top_p: float = 1.0  # nucleus truncation for sampling; 1 disables it
    top_k: int = 0  # top-k truncation for sampling; 0 disables it
    max_new_tokens: int = 64  # completion length cap; finish_reason "length" when reached
    seed: int | None = None  # same seed, same prompts -> same completions
    # One seed per prompt, as vLLM's per-request seed: prompt i's samples then depend on seeds[i]
    # (and the model) only, not on which batch or process generates them (data-parallel ranks
    # sampling their shares of a step reproduce what one process samples). Overrides `seed`.
    seeds: tuple[int, ...] = ()
    stop_token_ids: tuple[int, ...] = ()  # extra ids that end a completion (every EOS id always does)
    stop: tuple[str, ...] = ()  # strings that end a completion (not part of its text, as in vLLM)
    ignore_eos: bool = False  # always generate max_new_tokens (benchmarks, fixed-length tests)
    # k > 0: per generated token, its k most likely alternatives as {token text: logprob} in
    # Completion.extra["top_logprobs"] (at T=1 when greedy; as the engine reports them otherwise),
    # with the generated tokens' texts in extra["tokens"]: what Reinforcement Inference reads.
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0 or self.max_new_tokens < 1 or self.top_logprobs < 0:
            raise ValueError("top_k and top_logprobs must be >= 0 and max_new_tokens >= 1")


@dataclass
class Completion:
    """One sampled continuation. Token-level lists are aligned: one entry per completion token
    (an end-of-sequence token that stopped generation is included, as the trainer trains on it)."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    entropies: list[float] | None  # None where the engine cannot compute them exactly
    finish_reason: str  # "stop" | "length"
    prompt_ids: list[int]
    prompt_index: int  # which prompt of the call this continues
    logprobs_exact: bool = True
    extra: dict = field(default_factory=dict)
    # The text a user sees when it differs from the raw one: after backtrack decoding
    # (tasks/engines/backtrack.py). None: the raw text is what is shown.
    visible_text: str | None = None

    @property
    def final_text(self) -> str:
        """What rewards and evaluation judge: the visible text, else the raw one."""
        return self.text if self.visible_text is None else self.visible_text

    @property
    def mean_entropy(self) -> float | None:
        if not self.entropies:
            return None
        return sum(self.entropies) / len(self.entropies)


class Engine(Protocol):
    name: str

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingParams) -> list[Completion]:
        """n completions per prompt, grouped by prompt: [p0 s0, p0 s1, ..., p1 s0, ...]."""
        ...


EngineFactory = Callable[..., Engine]
ENGINES: Registry[EngineFactory] = Registry("engine")
register_engine = ENGINES.register


def make_engine(name: str, **kwargs: object) -> Engine:
    """An engine by name; an unknown name fails listing the valid ones."""
    import reasonloop.tasks.engines  # noqa: F401 - registers the built-in engines

    return ENGINES.get(name)(**kwargs)
