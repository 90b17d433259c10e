"""A small OpenAI-compatible server on 127.0.0.1 for engine tests: scripted failures and delays,
and it counts requests and the most that were in flight at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.procs.http_server import LocalJSONServer


class FakeOpenAI(LocalJSONServer):
    def __init__(
        self, *, fail_first: int = 0, fail_status: int = 500, delay_s: float = 0.0, fail_prompt: str = ""
    ) -> None:
        """`fail_prompt`: every request whose prompt contains it fails (a persistently bad input)."""
        self.fail_first, self.fail_status, self.delay_s = fail_first, fail_status, delay_s
        self.fail_prompt = fail_prompt
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        super().__init__()

    @staticmethod
    def _content_text(content: Any) -> str:
        """A message's text; content parts are checked as OpenAI checks them (an image part is an
        `image_url` whose url is a base64 data URI of a decodable image) and counted into the text."""
        if isinstance(content, str):
            return content
        import base64
        import io

        from PIL import Image

        texts, images = [], 0
        for part in content:
            if part["type"] == "text":
                texts.append(part["text"])
                continue
            assert part["type"] == "image_url", part["type"]
            header, _, data = part["image_url"]["url"].partition(",")
            assert header.startswith("data:image/") and header.endswith(";base64"), header
            Image.open(io.BytesIO(base64.b64decode(data))).load()
            images += 1
        return "".join(texts) + f"+{images}img"

    def _reply(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        prompt = self._content_text(body["messages"][-1]["content"]) if chat else body["prompt"]
        k = int(body.get("top_logprobs") if chat else body.get("logprobs") or 0)
        choices = []
        for i in range(body.get("n", 1)):
            text = f"{prompt}->{i}"
            tokens = [f"token_id:{ord(c)}" for c in text]
            logprobs = [-0.1 * (k + 1) for k in range(len(text))]
            # k alternatives per token: the token itself, then the next character codes, 1 nat apart each
            tops = [{f"token_id:{ord(c) + j}": lp - j for j in range(k)} for c, lp in zip(text, logprobs, strict=True)]
            if chat:
                entries = [{"token": t, "logprob": lp, "top_logprobs": [{"token": a, "logprob": v} for a, v in top.items()]}
                           for t, lp, top in zip(tokens, logprobs, tops, strict=True)]  # fmt: skip
                choices.append({"index": i, "message": {"role": "assistant", "content": text},
                                "logprobs": {"content": entries}, "finish_reason": "stop"})  # fmt: skip
            else:
                choices.append({"index": i, "text": text, "logprobs": {"tokens": tokens, "token_logprobs": logprobs,
                                                                  "top_logprobs": tops if k else None},
                                "finish_reason": "length"})  # fmt: skip
        return {"choices": choices}

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(body)
            number = len(self.requests)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
            if number <= self.fail_first or (self.fail_prompt and self.fail_prompt in str(prompt)):
                return self.fail_status, {"error": "scripted failure"}
            return 200, self._reply(body, chat=path.endswith("chat/completions"))
        finally:
            with self.lock:
                self.in_flight -= 1
