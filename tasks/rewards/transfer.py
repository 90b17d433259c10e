"""RLTR's transfer reward (2602.08489, SPECS §11.1): is a rollout's reasoning good enough that
another model, handed a random prefix of it, still reaches the right answer?

Per rollout y (its content tokens, a trailing end-of-sequence token dropped):
    τ ~ U(0, 1]          one draw per rollout, keyed by (seed, prompt ids, completion ids): a
                         rescoring of the same rollout draws the same τ
    ℓ = ⌊τ·|y|⌋          prefix length in tokens
    receiver continues   from prompt ⊕ y[:ℓ], a frozen model (any engine taking token ids and
                         sharing the policy's tokenizer); every call of a scoring is one batch
    R_tr = 1[answer(y[:ℓ] ⊕ continuation) is right]   (ℓ = |y|: the rollout itself, no call)

The total R = R_RLVR + λ·R_tr is the composite reward with `transfer` weighted λ
(`--rewards exact:1,transfer:1`). Per rollout, τ, ℓ, the receiver's token count and whether it
was called are kept as the components `transfer/tau`, `transfer/prefix_len`,
`transfer/receiver_tokens`, `transfer/called` (weight 0: stored in the rollout's `rewards` map,
queryable, not summed).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from reasonloop.tasks.engines.base import Engine, SamplingParams
from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type


def transfer_tau(seed: int, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> float:
    """τ in (0, 1], a deterministic function of the seed and the rollout's tokens."""
    digest = hashlib.blake2b(repr((seed, list(prompt_ids), list(completion_ids))).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / 2**64  # (0, 1]


def prefix_length(tau: float, n: int) -> int:
    return min(n, math.floor(tau * n))


class TransferReward:
    """The `transfer` reward component (TRL calling convention plus `prompt_ids`)."""

    def __init__(
        self, receiver: Engine, tokenizer: Any, *, eos_ids: Sequence[int] = (), max_new_tokens: int = 64,
        temperature: float = 0.0, seed: int = 0,
    ) -> None:  # fmt: skip
        """`receiver`: frozen, takes token ids (the policy's tokenizer). `temperature` 0: the
        receiver's greedy continuation (the least noisy single sample)."""
        if not getattr(receiver, "accepts_token_ids", False):
            raise ValueError("the transfer receiver must take token ids (it continues the policy's own tokens)")
        self.receiver, self.tokenizer, self.eos_ids = receiver, tokenizer, set(eos_ids)
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.details: dict[str, list[float | None]] = {}
        self.counts = {"transfer/calls": 0.0, "transfer/receiver_tokens": 0.0}

    def __call__(
        self, prompts: list[Any], completions: list[Any], completion_ids: Sequence[Sequence[int]] | None = None,
        prompt_ids: Sequence[Sequence[int]] | None = None, answer: Sequence[Any] = (),
        answer_type: Sequence[str | None] | None = None, **_: Any,
    ) -> list[float | None]:  # fmt: skip
        if completion_ids is None or prompt_ids is None:
            raise ValueError("the transfer reward needs prompt_ids and completion_ids (the sampler passes both)")
        contents = [list(ids[:-1]) if ids and ids[-1] in self.eos_ids else list(ids) for ids in completion_ids]
        taus = [transfer_tau(self.seed, p, c) for p, c in zip(prompt_ids, contents, strict=True)]
        cuts = [prefix_length(t, len(c)) for t, c in zip(taus, contents, strict=True)]
        texts = [self.tokenizer.decode(c[:k], skip_special_tokens=True) for c, k in zip(contents, cuts, strict=True)]
        asked = [i for i, (c, k) in enumerate(zip(contents, cuts, strict=True)) if k < len(c)]
        tokens = [0] * len(contents)
        if asked:
            sampling = SamplingParams(temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=self.seed)
            out = self.receiver.generate([list(prompt_ids[i]) + contents[i][: cuts[i]] for i in asked], 1, sampling)
            for i, c in zip(asked, out, strict=True):
                texts[i] += c.final_text
                tokens[i] = len(c.token_ids)
        kinds = list(answer_type) if answer_type is not None else [None] * len(texts)
        scores = score_by_answer_type([str(p) for p in prompts], texts, list(answer), kinds)
        called = set(asked)
        self.details = {
            "tau": list(taus), "prefix_len": [float(k) for k in cuts], "receiver_tokens": [float(t) for t in tokens],
            "called": [float(i in called) for i in range(len(texts))],
        }  # fmt: skip
        self.counts["transfer/calls"] += len(asked)
        self.counts["transfer/receiver_tokens"] += sum(tokens)
        return [None if s is None else float(s == 1.0) for s in scores]

    def drain_metrics(self) -> dict[str, float]:
        out, self.counts = self.counts, dict.fromkeys(self.counts, 0.0)
        return out
