"""An OpenAI-compatible rollout server on 127.0.0.1 backed by a real model (transformers, CPU), with
vLLM's response shapes for /v1/completions (token-id prompts, `return_tokens_as_token_ids`,
`logprobs`) and reasonloop's weight-sync endpoint (POST /reasonloop/load_weights {path, version}).
It records every request and every load, so tests can check the protocol's order."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from tests.procs.http_server import LocalJSONServer


class ModelServer(LocalJSONServer):
    def __init__(self, model_dir: Path) -> None:
        from reasonloop.tasks.engines.transformers_engine import TransformersEngine

        self.engine = TransformersEngine(model_dir, dtype="float32")
        self.lock = threading.Lock()  # one generation or load at a time, as a server's engine loop
        self.requests: list[dict[str, Any]] = []
        self.loads: list[tuple[str, int]] = []  # (path, version) per weight sync
        self.versions_served: list[int] = []  # the loaded version at each completions request
        super().__init__()

    def load(self, body: dict[str, Any]) -> dict[str, Any]:
        state = load_file(str(Path(body["path"]) / "model.safetensors"))
        with self.lock:
            self.engine.model.load_state_dict(state, strict=False)
            self.loads.append((body["path"], int(body["version"])))
        return {"loaded": body["path"], "version": body["version"]}

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        from reasonloop.tasks.engines.base import SamplingParams

        prompt = body["prompt"]
        assert isinstance(prompt, list) and all(isinstance(t, int) for t in prompt), "expected token ids"
        assert body.get("return_tokens_as_token_ids") and body.get("logprobs") == 0
        sampling = SamplingParams(temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
                                  max_new_tokens=body.get("max_tokens", 16), seeds=(body.get("seed", 0),))  # fmt: skip
        with self.lock:
            self.versions_served.append(self.loads[-1][1] if self.loads else -1)
            samples = self.engine.generate([prompt], body.get("n", 1), sampling)
        choices = [{
            "index": k, "text": c.text,
            "logprobs": {"text_offset": [0] * len(c.token_ids), "token_logprobs": c.logprobs,
                         "tokens": [f"token_id:{t}" for t in c.token_ids], "top_logprobs": None},
            "finish_reason": c.finish_reason, "stop_reason": None, "prompt_logprobs": None,
        } for k, c in enumerate(samples)]  # fmt: skip
        tokens = sum(len(c.token_ids) for c in samples)
        return {"id": f"cmpl-{len(self.requests)}", "object": "text_completion", "created": int(time.time()),
                "model": body.get("model", ""), "choices": choices,
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": tokens, "total_tokens": len(prompt) + tokens}}  # fmt: skip

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append({"path": path, **body})
        try:
            if path == "/reasonloop/load_weights":
                return 200, self.load(body)
            if path == "/v1/completions":
                return 200, self.complete(body)
            return 404, {"error": f"no route {path}"}
        except Exception as exc:  # a server answers 500, it does not die
            return 500, {"error": repr(exc)}
