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

from reasonloop.tasks.engines.base import Completion, ImagePrompt, Prompt, SamplingParams, register_engine

VLLM_MISSING = "the vllm engine needs vLLM: pip install 'reasonloop[vllm]' (GPU machines only)"


def vllm_sampling_kwargs(sampling: SamplingParams, n: int) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams`. logprobs=0 returns the sampled token's
    logprob only; k > 0 also its k most likely alternatives (`top_logprobs`)."""
    return {
        "n": n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,  # vLLM: -1 disables top-k
        "max_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
        "logprobs": sampling.top_logprobs,
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


def _top(step: Mapping[int, Any]) -> dict[str, float]:
    """A step's alternatives (vLLM's Logprob objects, decoded) as {token text: logprob}."""
    return {str(entry.decoded_token): float(entry.logprob) for entry in step.values()}


def completions_from_vllm(
    request_output: Any, prompt_index: int, *, exact: bool, top_logprobs: int = 0
) -> list[Completion]:
    """One vLLM RequestOutput (its .outputs are the n samples) -> our Completions (with
    `top_logprobs`: the alternatives and token texts in `extra`, as SamplingParams says)."""
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
            extra={"vllm_finish_reason": sample.finish_reason, **({
                "tokens": [str(step[tok].decoded_token) for step, tok in zip(steps, ids, strict=True)],
                "top_logprobs": [_top(step) for step in steps],
            } if top_logprobs else {})},
        ))  # fmt: skip
    return out


def colocate_environment(distributed: bool) -> dict[str, str]:
    """What vLLM's in-process executor (`distributed_executor_backend="external_launcher"`,
    vllm/v1/executor/uniproc_executor.py::ExecutorWithExternalLauncher, vLLM 0.17-0.25) reads: the
    torchrun variables (RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; filled in for one process) and
    VLLM_ENABLE_V1_MULTIPROCESSING=0, which it asserts: the engine then lives in this process, so
    weights are loaded into it directly, as TRL's colocate mode does."""
    import os
    import socket

    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    if not distributed:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        env.update({k: os.environ.get(k, v) for k, v in
                    {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                     "MASTER_PORT": port}.items()})  # fmt: skip
    return env


@register_engine("vllm")
class VLLMEngine:
    """vLLM's offline `LLM`. With `colocate`, in this process (the trainer's), with weights loaded
    from the trainer after every update (`update_weights`) and optional sleep mode; calls as in
    vLLM 0.17-0.25 (`LLM.generate/chat/sleep/wake_up/reset_prefix_cache/apply_model`), the range
    TRL 0.2x pins for the same colocate use."""

    name = "vllm"
    accepts_token_ids = True

    def __init__(
        self, model: str, *, logprobs_mode: str = "processed_logprobs", colocate: bool = False,
        distributed: bool = False, enable_sleep_mode: bool = False, **llm_kwargs: Any,
    ) -> None:  # fmt: skip
        try:
            import vllm
        except ImportError as exc:
            raise ImportError(VLLM_MISSING) from exc
        self._vllm = vllm
        self.logprobs_mode = logprobs_mode
        self.sleep_mode = enable_sleep_mode
        if colocate:
            import os

            os.environ.update(colocate_environment(distributed))
            llm_kwargs.setdefault("distributed_executor_backend", "external_launcher")
        self.llm = vllm.LLM(model=model, logprobs_mode=logprobs_mode, enable_sleep_mode=enable_sleep_mode, **llm_kwargs)
        self.asleep = self.weights_gone = False

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingParams) -> list[Completion]:
        if self.asleep:  # woken for weights by update_weights; now the KV cache
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = self.weights_gone = False
        kwargs = vllm_sampling_kwargs(sampling, n)
        # Per-prompt seeds: a list of SamplingParams, one per prompt (LLM.generate/chat take either).
        params = (
            [self._vllm.SamplingParams(**{**kwargs, "seed": s}) for s in sampling.seeds]
            if sampling.seeds
            else self._vllm.SamplingParams(**kwargs)
        )
        exact = logprobs_are_exact(self.logprobs_mode, sampling)
        if any(isinstance(p, ImagePrompt) for p in prompts):  # one request each, images as multi_modal_data
            outputs = self.llm.generate([self.request(p) for p in prompts], params, use_tqdm=False)
        elif all(isinstance(p, list) and (not p or isinstance(p[0], int)) for p in prompts):  # token ids
            outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        elif all(isinstance(p, str) for p in prompts):
            outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        else:
            outputs = self.llm.chat(list(prompts), params, use_tqdm=False)
        top = sampling.top_logprobs
        return [c for i, o in enumerate(outputs) for c in completions_from_vllm(o, i, exact=exact, top_logprobs=top)]

    def request(self, prompt: Prompt) -> dict[str, Any]:
        """One prompt as a vLLM request dict: ids, text, chat turns (templated by vLLM's tokenizer)
        or an image prompt (its turns templated with image parts; the images as `multi_modal_data`,
        which vLLM's processor expands into the placeholder's tokens)."""
        if isinstance(prompt, list) and (not prompt or isinstance(prompt[0], int)):
            return {"prompt_token_ids": list(prompt)}
        if isinstance(prompt, str):
            return {"prompt": prompt}
        turns = prompt.messages() if isinstance(prompt, ImagePrompt) else list(prompt)
        text = self.llm.get_tokenizer().apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        if not isinstance(prompt, ImagePrompt):
            return {"prompt": text}
        images = prompt.images[0] if len(prompt.images) == 1 else list(prompt.images)
        return {"prompt": text, "multi_modal_data": {"image": images}}

    def sleep(self) -> None:
        """Free the engine's GPU memory for the update (with enable_sleep_mode): level 2 drops the
        weights too, which is right only because `update_weights` reloads all of them after it."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = self.weights_gone = True

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Load trainer weights into the running engine (names as in the HF checkpoint)."""
        if self.asleep:
            self.llm.wake_up(tags=["weights"])  # map the weights' memory before writing into it
        items = list(state_dict.items())
        self.llm.apply_model(lambda model: model.load_weights(items))
        self.weights_gone = False
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
