"""vLLM engine (GPU; `pip install reasonloop[vllm]`). vLLM is imported only when constructed.

The translation between our SamplingParams/Completion and vLLM's objects is plain functions,
unit-tested without vLLM installed. Semantics that differ from ours:
- vLLM returns raw (pre-temperature) logprobs by default; with `logprobs_mode="processed_logprobs"`
  they are post-temperature but renormalized after top-k/top-p. Only processed logprobs with no
  truncation match our definition exactly; otherwise completions say `logprobs_exact=False` and
  trainers recompute old logprobs (optionally with truncated importance sampling, as TRL does).
- vLLM returns at most `max_logprobs` alternatives per token, so exact entropy is unavailable:
  `entropies` is None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reasonloop.tasks.engines.base import Completion, Prompt, SamplingParams, register_engine

VLLM_MISSING = "the vllm engine needs vLLM: pip install 'reasonloop[vllm]' (GPU machines only)"


def vllm_sampling_kwargs(sampling: SamplingParams, n: int) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams`. logprobs=0 returns the sampled token's
    logprob only (no alternatives)."""
    return {
        "n": n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,  # vLLM: -1 disables top-k
        "max_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
        "logprobs": 0,
        "stop_token_ids": list(sampling.stop_token_ids),
        "ignore_eos": sampling.ignore_eos,
        "skip_special_tokens": True,
    }


def logprobs_are_exact(logprobs_mode: str, sampling: SamplingParams) -> bool:
    untruncated = sampling.top_k == 0 and sampling.top_p >= 1.0
    return logprobs_mode == "processed_logprobs" and untruncated and sampling.temperature > 0


def _token_logprob(step: Mapping[int, Any], token_id: int) -> float:
    entry = step[token_id]
    return float(entry.logprob if hasattr(entry, "logprob") else entry)


def completions_from_vllm(request_output: Any, prompt_index: int, *, exact: bool) -> list[Completion]:
    """One vLLM RequestOutput (its .outputs are the n samples) -> our Completions."""
    prompt_ids = list(request_output.prompt_token_ids or [])
    out = []
    for sample in request_output.outputs:
        ids = list(sample.token_ids)
        steps = sample.logprobs or []
        if len(steps) != len(ids):
            raise ValueError(f"vLLM returned {len(steps)} logprob steps for {len(ids)} tokens")
        out.append(Completion(
            text=sample.text,
            token_ids=ids,
            logprobs=[_token_logprob(step, tok) for step, tok in zip(steps, ids, strict=True)],
            entropies=None,
            finish_reason="length" if sample.finish_reason == "length" else "stop",
            prompt_ids=prompt_ids,
            prompt_index=prompt_index,
            logprobs_exact=exact,
            extra={"vllm_finish_reason": sample.finish_reason},
        ))  # fmt: skip
    return out


@register_engine("vllm")
class VLLMEngine:
    name = "vllm"

    def __init__(self, model: str, *, logprobs_mode: str = "processed_logprobs", **llm_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise ImportError(VLLM_MISSING) from exc
        self._vllm = vllm
        self.logprobs_mode = logprobs_mode
        self.llm = vllm.LLM(model=model, logprobs_mode=logprobs_mode, **llm_kwargs)

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingParams) -> list[Completion]:
        kwargs = vllm_sampling_kwargs(sampling, n)
        # Per-prompt seeds: a list of SamplingParams, one per prompt (LLM.generate/chat take either).
        params = (
            [self._vllm.SamplingParams(**{**kwargs, "seed": s}) for s in sampling.seeds]
            if sampling.seeds
            else self._vllm.SamplingParams(**kwargs)
        )
        exact = logprobs_are_exact(self.logprobs_mode, sampling)
        if all(isinstance(p, str) for p in prompts):
            outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        else:
            outputs = self.llm.chat(list(prompts), params, use_tqdm=False)
        return [c for i, o in enumerate(outputs) for c in completions_from_vllm(o, i, exact=exact)]

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Load trainer weights into the running engine (names as in the HF checkpoint)."""
        items = list(state_dict.items())
        self.llm.apply_model(lambda model: model.load_weights(items))
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
