"""An OpenAI-compatible rollout server on 127.0.0.1 backed by a real model (transformers, CPU), with
vLLM's response shapes for /v1/completions (token-id prompts, `return_tokens_as_token_ids`,
`logprobs`) and reasonloop's weight-sync endpoint (POST /reasonloop/load_weights {path, version}).
It records every request and every load, so tests can check the protocol's order."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from safetensors.torch import load_file


class ModelServer:
    def __init__(self, model_dir: Path) -> None:
        from reasonloop.tasks.engines.transformers_engine import TransformersEngine

        self.engine = TransformersEngine(model_dir, dtype="float32")
        self.lock = threading.Lock()  # one generation or load at a time, as a server's engine loop
        self.requests: list[dict[str, Any]] = []
        self.loads: list[tuple[str, int]] = []  # (path, version) per weight sync
        self.versions_served: list[int] = []  # the loaded version at each completions request
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ModelServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

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

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, **body})
                try:
                    if self.path == "/reasonloop/load_weights":
                        status, payload = 200, server.load(body)
                    elif self.path == "/v1/completions":
                        status, payload = 200, server.complete(body)
                    else:
                        status, payload = 404, {"error": f"no route {self.path}"}
                except Exception as exc:
                    status, payload = 500, {"error": repr(exc)}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
