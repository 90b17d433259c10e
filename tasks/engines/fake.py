"""A deterministic scripted engine for tests of the real pipeline (store, rewards, trainers, flows).

The script maps (prompt text, sample index) to a completion text; token ids are the characters'
code points. Logprobs are placeholders, so completions say `logprobs_exact=False` and trainers
recompute them with the real model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from reasonloop.tasks.engines.base import Completion, Prompt, SamplingParams, register_engine

Script = Callable[[str, int], str]


def prompt_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


@register_engine("fake")
class ScriptedEngine:
    name = "fake"

    def __init__(self, script: Script | None = None, eos_id: int = 0) -> None:
        self.script = script or (lambda prompt, i: f"{prompt} #{i}")
        self.eos_id = eos_id
        self.calls = 0  # generate() calls, for tests that count work done

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingParams) -> list[Completion]:
        self.calls += 1
        out = []
        for index, prompt in enumerate(prompts):
            text_prompt = prompt_text(prompt)
            prompt_ids = [ord(c) for c in text_prompt]
            for i in range(n):
                text = self.script(text_prompt, i)
                ids = [ord(c) for c in text][: sampling.max_new_tokens]
                finish = "length" if len(text) >= sampling.max_new_tokens else "stop"
                if finish == "stop":
                    ids.append(self.eos_id)
                out.append(Completion(
                    text=text[: sampling.max_new_tokens], token_ids=ids, logprobs=[-1.0] * len(ids),
                    entropies=None, finish_reason=finish, prompt_ids=prompt_ids, prompt_index=index,
                    logprobs_exact=False,
                ))  # fmt: skip
        return out
