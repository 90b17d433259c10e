"""A stand-in for the `vllm` package with the signatures of the calls reasonloop makes (vLLM
0.17-0.25: `LLM`, `SamplingParams`, RequestOutput's fields), backed by a transformers model on
CPU so its samples and logprobs are real. It checks what vLLM checks that matters here: unknown
engine arguments are refused, the in-process executor needs its environment, an engine asleep at
level 2 has lost its weights (they are zeroed, so sampling before a reload is visibly wrong)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

ENGINE_ARGS = {"logprobs_mode", "enable_sleep_mode", "distributed_executor_backend", "max_model_len",
               "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching"}  # fmt: skip


class SamplingParams:
    def __init__(
        self, n: int = 1, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
        repetition_penalty: float = 1.0, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
        min_p: float = 0.0, seed: int | None = None, stop: str | list[str] | None = None,
        stop_token_ids: list[int] | None = None, ignore_eos: bool = False, max_tokens: int | None = 16,
        min_tokens: int = 0, logprobs: int | None = None, prompt_logprobs: int | None = None,
        detokenize: bool = True, skip_special_tokens: bool = True,
    ) -> None:  # fmt: skip
        self.n, self.temperature, self.top_p, self.top_k, self.seed = n, temperature, top_p, top_k, seed
        self.stop, self.stop_token_ids, self.ignore_eos = stop, stop_token_ids or [], ignore_eos
        self.max_tokens, self.logprobs, self.skip_special_tokens = max_tokens or 16, logprobs, skip_special_tokens


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = True


class _Model:
    """vLLM's model object as `apply_model` hands it over: `load_weights` takes (name, tensor) pairs."""

    def __init__(self, hf: Any) -> None:
        self.hf = hf
        self.loads = 0

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        state = self.hf.state_dict()
        names = set()
        with torch.no_grad():
            for name, tensor in weights:
                state[name].copy_(tensor.to(state[name].dtype))
                names.add(name)
        self.loads += 1
        return names


class LLM:
    instances: ClassVar[list[LLM]] = []  # every engine made, for tests to inspect

    def __init__(
        self, model: str, *, tokenizer: str | None = None, tensor_parallel_size: int = 1, dtype: str = "auto",
        seed: int | None = 0, gpu_memory_utilization: float = 0.9, enforce_eager: bool = False, **kwargs: Any,
    ) -> None:  # fmt: skip
        from reasonloop.tasks.engines.transformers_engine import TransformersEngine

        unknown = set(kwargs) - ENGINE_ARGS
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got unexpected keyword arguments {sorted(unknown)}")
        if kwargs.get("distributed_executor_backend") == "external_launcher":
            assert os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0", (
                "please set VLLM_ENABLE_V1_MULTIPROCESSING=0"
            )
            for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
                assert name in os.environ, name
        self.kwargs = {"tensor_parallel_size": tensor_parallel_size, "dtype": dtype, "seed": seed,
                       "gpu_memory_utilization": gpu_memory_utilization, **kwargs}  # fmt: skip
        self._engine = TransformersEngine(model, dtype="float32")
        self.model = _Model(self._engine.model)
        self.calls: list[str] = []
        self.level = 0  # 0 awake; 1 or 2 asleep
        self.kv_awake = self.weights_awake = True
        LLM.instances.append(self)

    def _check_awake(self) -> None:
        if not (self.kv_awake and self.weights_awake):
            raise RuntimeError("generate while asleep")

    def _run(self, prompts: list[Any], sampling_params: Any) -> list[RequestOutput]:
        from reasonloop.tasks.engines.base import SamplingParams as Ours

        self._check_awake()
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        out = []
        for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
            ours = Ours(temperature=p.temperature, top_p=p.top_p, top_k=max(0, p.top_k), max_new_tokens=p.max_tokens,
                        seeds=(p.seed if p.seed is not None else 0,), ignore_eos=p.ignore_eos)  # fmt: skip
            ids = self._prompt_ids(prompt)
            samples = self._engine.generate([ids], p.n, ours)
            outputs = [CompletionOutput(k, c.text, c.token_ids, sum(c.logprobs),
                                        [{t: Logprob(lp)} for t, lp in zip(c.token_ids, c.logprobs, strict=True)],
                                        c.finish_reason) for k, c in enumerate(samples)]  # fmt: skip
            out.append(RequestOutput(str(i), None, samples[0].prompt_ids, outputs))
        return out

    def _prompt_ids(self, prompt: Any) -> Any:
        """A request's ids: given, or its text tokenized; with `multi_modal_data`, the text and images
        through the model's processor (each placeholder expanded, as vLLM's processor does)."""
        if not isinstance(prompt, dict):
            return prompt
        if "prompt_token_ids" in prompt:
            return prompt["prompt_token_ids"]
        data = prompt.get("multi_modal_data")
        if data is None:
            return self._engine.tokenizer(prompt["prompt"], add_special_tokens=False)["input_ids"]
        from reasonloop.trainers.images import ImageIds

        assert set(data) == {"image"}, f"only images here, got {sorted(data)}"
        images = data["image"] if isinstance(data["image"], list) else [data["image"]]
        processor = self._engine.processor
        assert processor.image_token in prompt["prompt"], "a multimodal prompt without the image placeholder"
        encoded = processor(text=[prompt["prompt"]], images=images, return_tensors="pt")
        return ImageIds(encoded["input_ids"][0].tolist(), encoded["pixel_values"])

    def get_tokenizer(self) -> Any:
        return self._engine.tokenizer

    def generate(
        self, prompts: Any, sampling_params: SamplingParams | Sequence[SamplingParams] | None = None, *,
        use_tqdm: bool = True, lora_request: Any = None, priority: list[int] | None = None,
    ) -> list[RequestOutput]:  # fmt: skip
        self.calls.append("generate")
        return self._run(list(prompts), sampling_params or SamplingParams())

    def chat(
        self, messages: Any, sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True, lora_request: Any = None, chat_template: str | None = None,
    ) -> list[RequestOutput]:  # fmt: skip
        self.calls.append("chat")
        return self._run(list(messages), sampling_params or SamplingParams())

    def sleep(self, level: int = 1) -> None:
        assert self.kwargs.get("enable_sleep_mode"), "sleep mode is not enabled"
        self.calls.append(f"sleep{level}")
        self.level, self.kv_awake, self.weights_awake = level, False, False
        if level == 2:  # weights discarded
            with torch.no_grad():
                for p in self._engine.model.parameters():
                    p.zero_()

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.calls.append(f"wake:{','.join(tags or ['all'])}")
        tags = tags or ["weights", "kv_cache"]
        self.kv_awake |= "kv_cache" in tags
        self.weights_awake |= "weights" in tags

    def reset_prefix_cache(self, reset_running_requests: bool = False) -> bool:
        self.calls.append("reset_prefix_cache")
        return True

    def apply_model(self, func: Callable[[Any], Any]) -> list[Any]:
        if not self.weights_awake:
            raise RuntimeError("weights written while their memory is unmapped")
        self.calls.append("apply_model")
        return [func(self.model)]
