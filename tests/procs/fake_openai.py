"""A small OpenAI-compatible server on 127.0.0.1 for engine tests: scripted failures and delays,
and it counts requests and the most that were in flight at once."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    def __init__(
        self, *, fail_first: int = 0, fail_status: int = 500, delay_s: float = 0.0, fail_prompt: str = ""
    ) -> None:
        """`fail_prompt`: every request whose prompt contains it fails (a persistently bad input)."""
        self.fail_first, self.fail_status, self.delay_s = fail_first, fail_status, delay_s
        self.fail_prompt = fail_prompt
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def _reply(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        choices = []
        for i in range(body.get("n", 1)):
            text = f"{prompt}->{i}"
            tokens = [f"token_id:{ord(c)}" for c in text]
            logprobs = [-0.1 * (k + 1) for k in range(len(text))]
            if chat:
                entries = [{"token": t, "logprob": lp} for t, lp in zip(tokens, logprobs, strict=True)]
                choices.append({"index": i, "message": {"role": "assistant", "content": text},
                                "logprobs": {"content": entries}, "finish_reason": "stop"})  # fmt: skip
            else:
                choices.append({"index": i, "text": text, "logprobs": {"tokens": tokens, "token_logprobs": logprobs},
                                "finish_reason": "length"})  # fmt: skip
        return {"choices": choices}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append(body)
                    number = len(fake.requests)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay_s)
                    prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
                    if number <= fake.fail_first or (fake.fail_prompt and fake.fail_prompt in str(prompt)):
                        status, payload = fake.fail_status, {"error": "scripted failure"}
                    else:
                        status, payload = 200, fake._reply(body, chat=self.path.endswith("chat/completions"))
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        return Handler
