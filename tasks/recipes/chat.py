"""A recipe's rows as conversations: each problem gets `messages` (its prompt as a user turn) and
each SFT sample a user and an assistant turn, so an instruct model trains and samples through its
chat template (tasks/prompts.py) on any recipe."""

from __future__ import annotations


def as_chat(problems: list[dict], samples: list[dict]) -> tuple[list[dict], list[dict]]:
    chat_problems = [{**p, "messages": [{"role": "user", "content": p["prompt"]}]} for p in problems]
    chat_samples = [
        {**s, "messages": [{"role": "user", "content": s["prompt"]}, {"role": "assistant", "content": s["target"]}]}
        for s in samples
    ]
    return chat_problems, chat_samples
