"""The OpenAI-compatible engine against a fake server on 127.0.0.1 (stopped after each test)."""

from __future__ import annotations

import pytest

from reasonloop.tasks.engines import SamplingParams, make_engine
from reasonloop.tasks.engines.openai_engine import EngineError
from tests.procs.fake_openai import FakeOpenAI

FAST = {"backoff_s": 0.01, "timeout_s": 5.0}


def test_text_and_chat_prompts_parse() -> None:
    with FakeOpenAI() as server:
        engine = make_engine("openai", base_url=server.url, model="m", **FAST)
        out = engine.generate(["ab", [{"role": "user", "content": "cd"}]], 2, SamplingParams(max_new_tokens=8, seed=1))
        assert [c.text for c in out] == ["ab->0", "ab->1", "cd->0", "cd->1"]
        assert out[0].token_ids == [ord(c) for c in "ab->0"] and len(out[0].logprobs) == 5
        assert [c.finish_reason for c in out] == ["length", "length", "stop", "stop"]
        assert not out[0].logprobs_exact and out[0].entropies is None
        text_request = next(r for r in server.requests if "prompt" in r)  # requests run concurrently
        chat_request = next(r for r in server.requests if "messages" in r)
        assert text_request["n"] == 2 and text_request["max_tokens"] == 8 and text_request["seed"] == 1
        assert text_request["logprobs"] == 0 and chat_request["logprobs"] is True


def test_retries_server_errors_then_succeeds() -> None:
    with FakeOpenAI(fail_first=2, fail_status=503) as server:
        engine = make_engine("openai", base_url=server.url, model="m", max_retries=3, **FAST)
        assert engine.generate(["x"], 1, SamplingParams())[0].text == "x->0"
        assert len(server.requests) == 3


def test_gives_up_after_max_retries_and_fails_fast_on_4xx() -> None:
    with FakeOpenAI(fail_first=100, fail_status=500) as server:
        engine = make_engine("openai", base_url=server.url, model="m", max_retries=2, **FAST)
        with pytest.raises(EngineError, match="after 3 attempts"):
            engine.generate(["x"], 1, SamplingParams())
    with FakeOpenAI(fail_first=100, fail_status=400) as server:
        engine = make_engine("openai", base_url=server.url, model="m", max_retries=5, **FAST)
        with pytest.raises(EngineError, match="HTTP 400"):
            engine.generate(["x"], 1, SamplingParams())
        assert len(server.requests) == 1


def test_timeouts_are_retried() -> None:
    with FakeOpenAI(delay_s=0.5) as server:
        engine = make_engine("openai", base_url=server.url, model="m", max_retries=1, backoff_s=0.01, timeout_s=0.1)
        with pytest.raises(EngineError, match="Timeout"):
            engine.generate(["x"], 1, SamplingParams())
        assert len(server.requests) == 2


def test_concurrency_limit_is_respected() -> None:
    with FakeOpenAI(delay_s=0.05) as server:
        engine = make_engine("openai", base_url=server.url, model="m", max_concurrency=3, **FAST)
        out = engine.generate([f"p{i}" for i in range(12)], 1, SamplingParams())
        assert [c.prompt_index for c in out] == list(range(12))
        assert server.max_in_flight == 3


class CharDecoder:
    """Stands in for a tokenizer whose token ids are character codes (as the fake server's)."""

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids)


def test_top_logprobs_are_asked_for_and_decoded() -> None:
    with FakeOpenAI() as server:
        sampling = SamplingParams(max_new_tokens=8, top_logprobs=3)
        plain = make_engine("openai", base_url=server.url, model="m", **FAST)
        chat = plain.generate([[{"role": "user", "content": "A"}]], 1, sampling)[0]
        decoded = make_engine("openai", base_url=server.url, model="m", tokenizer=CharDecoder(), **FAST)
        text = decoded.generate(["A"], 1, sampling)[0]
        assert server.requests[0]["top_logprobs"] == 3 and server.requests[1]["logprobs"] == 3
        # Without a tokenizer the server's `token_id:N` spelling stays; with one, token texts.
        assert chat.extra["tokens"][0] == "token_id:65" and len(chat.extra["top_logprobs"]) == len("A->0")
        assert text.extra["tokens"] == list("A->0")
        assert text.extra["top_logprobs"][0] == {"A": -0.1, "B": -1.1, "C": -2.1}
        untouched = plain.generate(["A"], 1, SamplingParams(max_new_tokens=8))[0]
        assert server.requests[-1]["logprobs"] == 0 and "top_logprobs" not in untouched.extra
