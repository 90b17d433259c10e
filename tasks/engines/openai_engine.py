"""OpenAI-compatible HTTP engine: teacher and judge models behind vLLM serve, or any such server,
and rollout servers for training.

One request per prompt (with `n` samples), at most `max_concurrency` in flight; connection
errors, timeouts, 429 and 5xx are retried with exponential backoff; other 4xx fail at once with
the server's message. Token ids come back only from servers that send them (vLLM with
`return_tokens_as_token_ids`); logprobs are the server's, so `logprobs_exact=False`.

With a `tokenizer` the engine takes token ids (the trainer renders and encodes prompts, chat
template included) and sends them as the completions `prompt` (vLLM accepts a list of ids), asking
for the sampled tokens' ids and logprobs: the rollouts are then trainable, on the same ids the
policy scores. `load_weights` is the weight-sync protocol (trainers/engines.py): POST
{"path", "version"} to `weight_sync_path` on the server. An `ImagePrompt` goes to chat completions
with each image as an `image_url` part holding a base64 PNG data URI (what vLLM serve and OpenAI
take); its `token_ids` (the trainer's encoding) become the completions' prompt ids.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reasonloop.tasks.engines.base import Completion, ImagePrompt, Prompt, SamplingParams, register_engine

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


def image_data_uri(image: Any) -> str:
    """A PIL image as a `data:image/png;base64,...` URI."""
    import base64
    import io

    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def openai_image_messages(prompt: ImagePrompt) -> list[dict[str, Any]]:
    """The prompt's turns with its image parts as OpenAI `image_url` parts, in order."""
    images = iter(prompt.images)
    turns = []
    for turn in prompt.messages():
        content = turn["content"]
        if not isinstance(content, str):
            content = [
                {"type": "image_url", "image_url": {"url": image_data_uri(next(images))}} if part["type"] == "image"
                else part
                for part in content
            ]  # fmt: skip
        turns.append({**turn, "content": content})
    return turns


class EngineError(RuntimeError):
    pass


def _token_id(token: str) -> int | None:
    return int(token.split(":", 1)[1]) if token.startswith("token_id:") else None


def parse_choice(
    choice: dict[str, Any], prompt_index: int, chat: bool, decode: Callable[[int], str] | None = None
) -> Completion:
    """A completions or chat-completions choice -> Completion (token ids where the server sent
    them). Alternatives the server sent (`top_logprobs`) go to extra["top_logprobs"] with the
    tokens' texts in extra["tokens"]; a `token_id:N` spelling is decoded with `decode` if given."""
    lp = choice.get("logprobs") or {}
    if chat:
        text = (choice.get("message") or {}).get("content") or ""
        entries = lp.get("content") or []
        tokens = [e.get("token", "") for e in entries]
        logprobs = [float(e.get("logprob", 0.0)) for e in entries]
        tops = [{a.get("token", ""): float(a.get("logprob", -math.inf)) for a in e.get("top_logprobs") or []}
                for e in entries]  # fmt: skip
    else:
        text = choice.get("text") or ""
        tokens = lp.get("tokens") or []
        logprobs = [float(x) if x is not None else 0.0 for x in lp.get("token_logprobs") or []]
        tops = [{k: float(v) for k, v in (top or {}).items()} for top in lp.get("top_logprobs") or []]
    alternatives = {
        "tokens": [_spelled(t, decode) for t in tokens],
        "top_logprobs": [{_spelled(k, decode): v for k, v in top.items()} for top in tops],
    } if any(tops) else {}  # fmt: skip
    ids = [_token_id(t) for t in tokens]
    token_ids = [i for i in ids if i is not None] if ids and all(i is not None for i in ids) else []
    return Completion(
        text=text,
        token_ids=token_ids,
        logprobs=logprobs if token_ids else [],
        entropies=None,
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        prompt_ids=[],
        prompt_index=prompt_index,
        logprobs_exact=False,
        extra={"server_logprobs": logprobs, **alternatives},
    )


def _spelled(token: str, decode: Callable[[int], str] | None) -> str:
    """A token's text: servers asked for token ids spell tokens `token_id:N`."""
    token_id = _token_id(token)
    return decode(token_id) if token_id is not None and decode is not None else token


@register_engine("openai")
class OpenAIEngine:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        seed: int = 0,
        tokenizer: Any = None,
        weight_sync_path: str = "",
    ) -> None:
        import httpx  # here, not at module import: the GPU check imports engines without it

        self.accepts_token_ids = tokenizer is not None  # the sampler then sends ids, template applied
        self.syncs_weights = bool(weight_sync_path)
        self.weight_sync_path = weight_sync_path

        self._httpx = httpx
        self.base_url, self.model = base_url.rstrip("/"), model
        self.max_concurrency, self.max_retries, self.backoff_s = max_concurrency, max_retries, backoff_s
        self.client = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"})
        self._jitter = random.Random(seed)
        self._decode = (lambda i: tokenizer.decode([i], skip_special_tokens=False)) if tokenizer is not None else None

    def _body(self, prompt: Prompt, n: int, sampling: SamplingParams, seed: int | None) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model, "n": n, "temperature": sampling.temperature, "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens, "return_tokens_as_token_ids": True,
        }  # fmt: skip
        if seed is not None:
            body["seed"] = seed
        if sampling.top_k:
            body["top_k"] = sampling.top_k
        if isinstance(prompt, ImagePrompt):  # chat with image parts as base64 data URIs (OpenAI's image_url)
            return "/v1/chat/completions", {**body, "messages": openai_image_messages(prompt), "logprobs": True,
                                            "top_logprobs": sampling.top_logprobs}  # fmt: skip
        if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
            return "/v1/completions", {**body, "prompt": prompt, "logprobs": sampling.top_logprobs}
        return "/v1/chat/completions", {**body, "messages": prompt, "logprobs": True,
                                        "top_logprobs": sampling.top_logprobs}  # fmt: skip

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.post(self.base_url + path, json=body)
            except (self._httpx.TimeoutException, self._httpx.TransportError) as exc:
                error: str = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return response.json()
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRYABLE_STATUS:
                    raise EngineError(f"{self.base_url}{path} refused the request ({error})")
            if attempt == self.max_retries:
                raise EngineError(f"{self.base_url}{path} failed after {attempt + 1} attempts ({error})")
            time.sleep(self.backoff_s * 2**attempt * (0.5 + self._jitter.random()))
        raise AssertionError("unreachable")

    def _one(self, index: int, prompt: Prompt, n: int, sampling: SamplingParams) -> list[Completion]:
        seed = sampling.seeds[index] if sampling.seeds else sampling.seed
        path, body = self._body(prompt, n, sampling, seed)
        data = self._post(path, body)
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != n:
            raise EngineError(f"asked for {n} samples, server returned {len(choices)}")
        chat = path.endswith("chat/completions")
        out = [parse_choice(c, index, chat=chat, decode=self._decode) for c in choices]
        if self.accepts_token_ids and isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            for c in out:
                if not c.token_ids and c.text:
                    raise EngineError(
                        f"{self.base_url} returned no token ids: training on its rollouts needs them "
                        "(vLLM: return_tokens_as_token_ids)"
                    )
                c.prompt_ids = list(prompt)
        if isinstance(prompt, ImagePrompt) and prompt.token_ids:
            for c in out:
                c.prompt_ids = list(prompt.token_ids)
        return out

    def load_weights(self, path: Any, version: int) -> None:
        """The weight-sync protocol: the server loads the weights folder at `path` (safetensors +
        config, as reasonloop publishes them) and samples from it until the next call."""
        if not self.syncs_weights:
            raise EngineError("no weight_sync_path: this server's weights are fixed")
        self._post(self.weight_sync_path, {"path": str(path), "version": version})

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingParams) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            futures = [pool.submit(self._one, i, p, n, sampling) for i, p in enumerate(prompts)]
            return [c for f in futures for c in f.result()]

    def close(self) -> None:
        self.client.close()
