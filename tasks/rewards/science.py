"""Dr. SCI's rewards over mixed problems (SPECS §6), as registered components:

    rule     verifiable items by their rule checker (answer_type); open-ended (`rubric`) items by
             their final answer alone (exact) — the "rule rewards only" baseline
    rubric   open-ended items by the rubric scorer (judge verdicts per item + final answer); None
             for every other item
    unified  rule for verifiable items, rubric for open-ended ones: the paper's unified RL

The registered `rubric` / `unified` use the offline keyword judge; a run with `--judge engine
--judge-url U` swaps in an LLM judge (trainers/engines.py `reward_functions`). The scorer's counts
(judge calls, questions, cache hits, retries) reach the step's metrics through `drain_metrics`.
"""

from __future__ import annotations

from typing import Any

from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type
from reasonloop.tasks.rewards.registry import completion_text, get_reward, register_reward
from reasonloop.tasks.rewards.rubric import KeywordJudge, RubricScorer


def _open_rows(types: list) -> list[int]:
    return [i for i, t in enumerate(types) if t == "rubric"]


def _scored(out: list, rows: list[int], scores: list) -> list[float | None]:
    """`out` with `scores` written at `rows`."""
    for i, s in zip(rows, scores, strict=True):
        out[i] = s
    return out


def rule_scores(prompts: list, completions: list, answer: list, answer_type: list | None = None, **_: Any) -> list:
    texts, types = [completion_text(c) for c in completions], list(answer_type or [None] * len(completions))
    opened = _open_rows(types)
    exact = get_reward("exact")([prompts[i] for i in opened], [texts[i] for i in opened],
                                answer=[answer[i] for i in opened]) if opened else []  # fmt: skip
    return _scored(score_by_answer_type(prompts, texts, answer, types), opened, exact)


class RubricReward:
    """A reward function over a scorer: `unified=True` scores verifiable rows by rule too."""

    def __init__(self, scorer: RubricScorer, unified: bool) -> None:
        self.scorer, self.unified = scorer, unified

    def __call__(
        self, prompts: list, completions: list, answer: list, answer_type: list | None = None,
        rubric: list | None = None, **_: Any,
    ) -> list[float | None]:  # fmt: skip
        n = len(completions)
        texts, types = [completion_text(c) for c in completions], list(answer_type or [None] * n)
        rubrics = list(rubric or [None] * n)  # a rubric row with no rubric column scores None
        # verifiable rows by their checker (unified); open-ended rows by the rubric alone
        out = score_by_answer_type(prompts, texts, answer, types) if self.unified else [None] * n
        opened = _open_rows(types)
        scores = self.scorer([str(prompts[i]) for i in opened], [texts[i] for i in opened],
                             [answer[i] for i in opened], [rubrics[i] for i in opened])  # fmt: skip
        return _scored(out, opened, scores)

    def drain_metrics(self) -> dict[str, float]:
        return self.scorer.drain_metrics()


def row_scorer(scorer: RubricScorer) -> Any:
    """`score(prompts, texts, rows)` for the unified reward over problem rows (the pass-rate
    annotation's and exploration SFT's correctness check)."""
    reward = RubricReward(scorer, unified=True)

    def score(prompts: list, texts: list, rows: list) -> list[float | None]:
        return reward(prompts, texts, answer=[r["answer"] for r in rows],
                      answer_type=[r.get("answer_type") for r in rows], rubric=[r.get("rubric") for r in rows])  # fmt: skip

    return score


register_reward("rule")(rule_scores)
register_reward("rubric")(RubricReward(RubricScorer(KeywordJudge()), unified=False))
register_reward("unified")(RubricReward(RubricScorer(KeywordJudge()), unified=True))
