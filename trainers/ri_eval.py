"""Reinforcement Inference (tasks/inference/reinforcement.py) over stored multiple-choice problems:
the threshold calibrated on a dev split, RI vs greedy (and vs re-ask-all), with per-question
results so two runs on the same problems compare pairwise."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonloop.tasks.inference.reinforcement import (
    RIConfig,
    deliberate_prompt,
    first_letter,
    option_letters,
    report,
    run,
)

if TYPE_CHECKING:
    from reasonloop.storage import ReplayStore


def choice_problems(store: ReplayStore, split: str, source: str, limit: int) -> list[dict]:
    """Multiple-choice problems (answer_type choice, with their options) of a split, in id order."""
    from reasonloop.trainers.eval_setup import eval_problems

    rows = eval_problems(store, split, source, limit)
    return [p for p in rows if p["answer_type"] == "choice" and p["choices"]]


def evaluate_ri(
    store: ReplayStore, model: str | Path, config: RIConfig | None = None, *, split: str = "heldout",
    source: str = "", limit: int = 512, dev_split: str = "test", dev_limit: int = 256, reask_all: bool = True,
    engine: str = "transformers", engine_url: str = "", chat_template: str = "auto", batch_size: int = 256,
    device: str = "auto", dtype: str = "auto",
) -> dict[str, Any]:  # fmt: skip
    """RI on the first `limit` multiple-choice problems of `split`; τ from the first `dev_limit`
    of `dev_split` (unless `config.threshold` fixes it): a split the model did not train on, since
    it is surer of its training questions (calibrated on arith_mc's train split, a 20% target rate
    re-asked 34% of held-out questions; benchmarks/RESULTS.md). `reask_all`: also the second pass on every
    question (costs the calls RI saves; gives the comparison). Other problems are left out."""
    from reasonloop.tasks import prompts as prompt_policy
    from reasonloop.tasks.models.loading import load_tokenizer
    from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type
    from reasonloop.trainers.eval_setup import eval_engine

    config = config or RIConfig()
    problems = choice_problems(store, split, source, limit)
    dev = [] if config.threshold is not None else choice_problems(store, dev_split, source, dev_limit)
    if not problems or (config.threshold is None and not dev):
        raise ValueError(
            f"Reinforcement Inference needs multiple-choice problems (answer_type 'choice' with choices) in "
            f"split {split!r}{' and in the dev split ' + repr(dev_split) if config.threshold is None else ''}"
            f"{' of source ' + repr(source) if source else ''} (or a fixed threshold instead of a dev split)"
        )
    tokenizer = load_tokenizer(model)
    sampler = eval_engine(model, tokenizer, engine=engine, engine_url=engine_url, batch_size=batch_size,
                          device=device, dtype=dtype)  # fmt: skip

    def render(p: dict, text: str | None = None) -> Any:
        if text is None:
            return prompt_policy.render(tokenizer, p["prompt"], p["messages"], chat_template)
        messages = [{"role": "user", "content": text}] if p["messages"] else None  # as the recipe's chat rows
        return prompt_policy.render(tokenizer, text, messages, chat_template)

    def generate(prompts: list[Any], sampling: Any) -> list[Any]:
        return sampler.generate(prompt_policy.engine_inputs(sampler, tokenizer, prompts), 1, sampling)

    letters = [option_letters(p["choices"]) for p in problems]

    def second_inputs(indices: list[int], firsts: list[str]) -> list[Any]:
        return [
            render(problems[i], deliberate_prompt(problems[i]["prompt"], config.instruction,
                   first_letter(firsts[i], config.marker, letters[i]) if config.include_first else None))
            for i in indices
        ]  # fmt: skip

    ri = run(generate, [render(p) for p in problems], letters, config, dev_inputs=[render(p) for p in dev],
             dev_letters=[option_letters(p["choices"]) for p in dev], second_inputs=second_inputs,
             reask_all=reask_all)  # fmt: skip

    def right(texts: list[str | None]) -> list[bool | None]:
        scores = score_by_answer_type([p["prompt"] for p in problems], [t or "" for t in texts],
                                      [p["answer"] for p in problems], ["choice"] * len(problems))  # fmt: skip
        return [None if t is None else s == 1.0 for s, t in zip(scores, texts, strict=True)]

    first, second = right(ri.first), right(ri.second)
    result = report([bool(f) for f in first], second, ri.triggered)
    final = [s if t else f for f, s, t in zip(first, second, ri.triggered, strict=True)]
    return {
        **result, "threshold": ri.threshold, "dev_trigger_rate": ri.dev_rate, "dev_n": len(dev),
        "signal": config.signal, "include_first": config.include_first,
        "ids": [p["id"] for p in problems], "correct": [int(bool(x)) for x in final],
        "greedy_correct": [int(bool(x)) for x in first], "second_correct": [None if x is None else int(x) for x in second],
        "p": ri.p, "dev_p": ri.dev_p,
    }  # fmt: skip
