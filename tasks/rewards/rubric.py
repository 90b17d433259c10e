"""Rubric rewards (Dr. SCI, SPECS §6): a judge's binary verdict per rubric item and on the final
answer, aggregated with importance weights; pitfalls subtract; a wrong final answer caps the score.

    base = (w_ans·j_ans + Σ_{i∉pitfall} w_i·j_i) / (w_ans + Σ_{i∉pitfall} w_i)
    R    = base − Σ_{p∈pitfall} w_p·j_p            (j_p = 1: the response commits the pitfall)
    R    = min(R, 0.3) when j_ans = 0
    weights: Essential 3, Important 2, Optional 1, Pitfall 2; w_ans = Σ Essential weights (3 if none)

A rubric item is one string, `"<Tag>: <criterion> [kw: a|b; c]"`: the keyword list is optional and
is what the offline keyword judge checks (every `;` group must appear, any `|` alternative of it);
an LLM judge reads the criterion. Judges are pluggable (`keyword`, `engine`); the scorer batches
every uncached (item, response) question of a scoring into one judge call, caches verdicts by
hash(judge, question, criterion, response), retries unanswered ones, and counts all of it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from reasonloop.tasks.rewards.answers import extract_answer, normalize_answer

TAGS = ("Essential", "Important", "Optional", "Pitfall")
WEIGHTS = {"Essential": 3.0, "Important": 2.0, "Optional": 1.0, "Pitfall": 2.0}
WRONG_ANSWER_CAP = 0.3
_ITEM = re.compile(r"^\s*(\w+)\s*:\s*(.*?)\s*(?:\[kw:\s*(.*?)\s*\])?\s*$", re.DOTALL)


@dataclass(frozen=True)
class RubricItem:
    tag: str
    criterion: str
    keywords: tuple[tuple[str, ...], ...] = ()  # groups of alternatives, for the keyword judge

    def __str__(self) -> str:
        kw = "; ".join("|".join(group) for group in self.keywords)
        return f"{self.tag}: {self.criterion}" + (f" [kw: {kw}]" if kw else "")


@lru_cache(maxsize=65_536)  # the same rubrics are parsed at every scoring of their problem
def parse_item(text: str) -> RubricItem:
    """A rubric item from its string form; ValueError names what is wrong."""
    found = _ITEM.match(text or "")
    if not found or found.group(1).capitalize() not in TAGS or not found.group(2):
        raise ValueError(f"rubric item {text!r} is not '<{'|'.join(TAGS)}>: criterion [kw: ...]'")
    groups = tuple(
        tuple(a.strip() for a in g.split("|") if a.strip()) for g in (found.group(3) or "").split(";") if g.strip()
    )
    return RubricItem(found.group(1).capitalize(), found.group(2), groups)


def aggregate(verdicts: Sequence[tuple[str, bool]], answer_ok: bool, cap: float = WRONG_ANSWER_CAP) -> float:
    """The reward from (tag, verdict) per item and the final answer's verdict."""
    w_ans = sum(WEIGHTS["Essential"] for tag, _ in verdicts if tag == "Essential") or WEIGHTS["Essential"]
    num, den, penalty = w_ans * answer_ok, w_ans, 0.0
    for tag, ok in verdicts:
        if tag == "Pitfall":
            penalty += WEIGHTS[tag] * ok
        else:
            num, den = num + WEIGHTS[tag] * ok, den + WEIGHTS[tag]
    reward = num / den - penalty
    return reward if answer_ok else min(reward, cap)


@dataclass(frozen=True)
class Question:
    """One binary question to a judge: does `response` satisfy `item` (None: is its final answer
    `reference`)?"""

    prompt: str
    response: str
    item: RubricItem | None
    reference: str

    def key(self, judge: str) -> str:
        text = "\x1f".join((judge, self.prompt, str(self.item or f"answer={self.reference}"), self.response))
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class Judge(Protocol):
    name: str

    def __call__(self, questions: Sequence[Question]) -> list[bool | None]: ...


def _squash(text: str) -> str:
    return "".join(text.split()).lower()


class KeywordJudge:
    """Offline judge: an item holds when each keyword group appears in the response (case and
    whitespace ignored); the final answer holds when the extracted answer equals the reference."""

    name = "keyword"

    def __call__(self, questions: Sequence[Question]) -> list[bool | None]:
        out: list[bool | None] = []
        for q in questions:
            if q.item is None:
                out.append(normalize_answer(extract_answer(q.response)) == normalize_answer(q.reference))
            elif not q.item.keywords:
                out.append(None)  # nothing to check: this judge has no verdict
            else:
                text = _squash(q.response)
                out.append(all(any(_squash(a) in text for a in group) for group in q.item.keywords))
        return out


ITEM_TEMPLATE = (
    "You grade a response against one rubric criterion.\nQuestion: {prompt}\nResponse: {response}\n"
    "Criterion: {criterion}\nDoes the response satisfy the criterion? Answer YES or NO.\nAnswer:"
)
ANSWER_TEMPLATE = (
    "You check a final answer.\nQuestion: {prompt}\nResponse: {response}\nReference answer: {reference}\n"
    "Is the response's final answer equivalent to the reference? Answer YES or NO.\nAnswer:"
)


def first_word(text: str) -> str:
    """A judge's answer: its first word without trailing punctuation ('' for an empty answer)."""
    return (text.strip().split() or [""])[0].strip(".,:;!")


def parse_yes_no(text: str) -> bool | None:
    return {"YES": True, "NO": False}.get(first_word(text).upper())


class EngineJudge:
    """A generative verifier through any engine (greedy), one generate call per batch of questions;
    an answer that is not YES/NO is no verdict (the scorer asks again)."""

    def __init__(self, engine: Any, name: str = "engine", max_new_tokens: int = 4) -> None:
        self.engine, self.name, self.max_new_tokens = engine, name, max_new_tokens

    def __call__(self, questions: Sequence[Question]) -> list[bool | None]:
        from reasonloop.tasks.engines import SamplingParams

        asks = [
            ANSWER_TEMPLATE.format(prompt=q.prompt, response=q.response, reference=q.reference) if q.item is None
            else ITEM_TEMPLATE.format(prompt=q.prompt, response=q.response, criterion=q.item.criterion)
            for q in questions
        ]  # fmt: skip
        out = self.engine.generate(asks, 1, SamplingParams(temperature=0, max_new_tokens=self.max_new_tokens))
        return [parse_yes_no(c.text) for c in sorted(out, key=lambda c: c.prompt_index)]


class RubricScorer:
    """Rubric rewards for a batch: cached, batched, retried judge verdicts, counted in `counts`."""

    def __init__(self, judge: Judge, *, retries: int = 2, backoff_s: float = 0.5, cache_size: int = 200_000) -> None:
        self.judge, self.retries, self.backoff_s, self.cache_size = judge, retries, backoff_s, cache_size
        self.cache: dict[str, bool] = {}
        self.counts: Counter[str] = Counter()

    def verdicts(self, questions: Sequence[Question]) -> list[bool | None]:
        keys = [q.key(self.judge.name) for q in questions]
        known = {k: self.cache[k] for k in keys if k in self.cache}
        self.counts["judge/cache_hits"] += sum(k in known for k in keys)
        question_of = dict(zip(keys, questions, strict=True))
        todo = [k for k in question_of if k not in known]  # each distinct question once
        for attempt in range(self.retries + 1):
            if not todo:
                break
            if attempt:
                self.counts["judge/retries"] += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self.counts["judge/calls"] += 1
            self.counts["judge/questions"] += len(todo)
            try:
                answers = self.judge([question_of[k] for k in todo])
            except Exception:  # a judge server error: ask again after the backoff
                self.counts["judge/errors"] += 1
                continue
            for k, a in zip(todo, answers, strict=True):
                if a is not None:
                    known[k] = a
                    if len(self.cache) < self.cache_size:
                        self.cache[k] = a
            todo = [k for k in todo if k not in known]
        self.counts["judge/unanswered"] += len(todo)
        return [known.get(k) for k in keys]

    def __call__(
        self, prompts: Sequence[str], responses: Sequence[str], answers: Sequence[str], rubrics: Sequence[Any]
    ) -> list[float | None]:
        """One reward per response; None when its rubric is missing or malformed, or the judge
        left a question of it unanswered (never a silent 0)."""
        items: list[list[RubricItem] | None] = []
        for rubric in rubrics:
            try:
                items.append([parse_item(t) for t in rubric] if rubric else None)
            except ValueError:
                items.append(None)
        questions, owner = [], []
        for i, parsed in enumerate(items):
            if parsed is None:
                continue
            for item in (None, *parsed):
                questions.append(Question(str(prompts[i]), responses[i], item, str(answers[i])))
                owner.append(i)
        verdicts = self.verdicts(questions)
        per: dict[int, list[tuple[RubricItem | None, bool | None]]] = {}
        for i, q, v in zip(owner, questions, verdicts, strict=True):
            per.setdefault(i, []).append((q.item, v))
        out: list[float | None] = [None] * len(responses)
        for i, pairs in per.items():
            if any(v is None for _, v in pairs):
                continue
            answer_ok = bool(next(v for item, v in pairs if item is None))
            out[i] = aggregate([(item.tag, bool(v)) for item, v in pairs if item is not None], answer_ok)
        return out

    def drain_metrics(self) -> dict[str, float]:
        """The counts since the last drain (a training step's judge cost)."""
        metrics = {k: float(v) for k, v in self.counts.items()}
        self.counts.clear()
        return metrics
