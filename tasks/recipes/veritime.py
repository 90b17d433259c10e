"""VeriTime (arXiv 2602.07830): time-series reasoning problems with process-verifiable chains of thought.

Procedural, no LLM needed: a series is built from parts with known ground truth (trend,
seasonality, level shift, spike, noise), so the answer *and* every intermediate step label are
known. Task taxonomy after the paper's TSRBench:

    deductive     anomaly detection: where is the anomaly (index), or is there one (yes/no)
    causal        scenario attribution, multiple choice (A-D): which event explains the series
    quantitative  inferential calculation: count of points above a threshold, the maximum
    inductive     pattern classification: trend | seasonal | shift | noise

The CoT target is compact enough for a character-level model, one labelled step each:

    I:<task intent>;P:<key pattern>;S:<segment analysis>;A:<preliminary answer>;#<final answer>

Rows carry the step labels (`process_labels`), so a completion's process can be scored step by
step (tasks/rewards/veritime.py). Values are small integers so a series costs few characters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from reasonloop.schemas.common import config_fingerprint
from reasonloop.tasks.recipes.arith import is_heldout
from reasonloop.tasks.recipes.chat import as_chat

SOURCE = "veritime"
TASKS = ("deductive", "causal", "quantitative", "inductive")
LEVEL = {"deductive": 1, "quantitative": 1, "causal": 2, "inductive": 3}  # taxonomy order for scheduling
PATTERNS = ("trend", "seasonal", "shift", "noise")
CAUSES = {"A": "spike", "B": "shift", "C": "seasonal", "D": "trend"}


@dataclass(frozen=True)
class VeriTimeConfig:
    n: int = 1000  # problems to draw (duplicates dropped)
    min_length: int = 10  # series length range
    max_length: int = 16
    noise: int = 1  # max absolute integer noise added to every point
    tasks: tuple[str, ...] = TASKS
    heldout_percent: int = 10
    seed: int = 0
    chat: bool = False  # also as conversations (`messages`), for instruct models and their chat templates

    def __post_init__(self) -> None:
        if not 6 <= self.min_length <= self.max_length:
            raise ValueError("need 6 <= min_length <= max_length")
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown task(s) {sorted(unknown)}; valid: {', '.join(TASKS)}")


@dataclass(frozen=True)
class Series:
    values: list[int]
    pattern: str  # trend | seasonal | shift | noise | spike
    where: int | None  # index of the spike or of the shift's first new-level point


def make_series(rng: random.Random, kind: str, length: int, noise: int) -> Series:
    """A series of one pattern with known ground truth. Values stay in [0, 99]."""
    base = rng.randint(20, 40)
    jitter = [rng.randint(-noise, noise) for _ in range(length)]
    if kind == "trend":
        slope = rng.choice([-3, -2, 2, 3])
        values = [base + 20 + slope * i for i in range(length)]
        where = None
    elif kind == "seasonal":
        period, amp = rng.choice([3, 4]), rng.randint(8, 10)  # clear of the noise band
        values = [base + (amp if i % period == 0 else 0) for i in range(length)]
        where = None
    elif kind == "shift":
        where = rng.randint(3, length - 3)
        jump = rng.choice([-15, 15, 20])
        values = [base + 20 + (jump if i >= where else 0) for i in range(length)]
    elif kind == "spike":
        where = rng.randint(1, length - 2)
        values = [base + (40 if i == where else 0) for i in range(length)]
    else:  # noise
        values, where = [base] * length, None
    values = [max(0, min(99, v + j)) for v, j in zip(values, jitter, strict=True)]
    if kind == "noise":
        values = [max(0, min(99, base + rng.randint(-2, 2))) for _ in range(length)]
    return Series(values, "spike" if kind == "spike" else kind, where)


def _series_text(s: Series) -> str:
    return ",".join(map(str, s.values))


def _problem(task: str, s: Series, rng: random.Random) -> tuple[str, str, dict[str, str], str]:
    """(question, answer, step labels, answer_type) for one task on one series."""
    text = _series_text(s)
    mean = round(sum(s.values) / len(s.values))
    if task == "deductive":
        if s.pattern == "spike":
            return (
                f"{text}|spike at?",
                str(s.where),
                {"I": "anom", "P": f"spike@{s.where}", "S": f"{s.values[s.where]}>{mean}", "A": str(s.where)},
                "exact",
            )
        answer = "no"
        return f"{text}|anomaly?", answer, {"I": "anom", "P": s.pattern, "S": "no outlier", "A": answer}, "exact"
    if task == "causal":
        cause = next(k for k, v in CAUSES.items() if v == s.pattern)
        pattern = f"{s.pattern}@{s.where}" if s.where is not None else s.pattern
        options = "A)spike B)shift C)seasonal D)trend"
        return f"{text}|cause? {options}", cause, {"I": "cause", "P": pattern, "S": s.pattern, "A": cause}, "choice"
    if task == "quantitative":
        if rng.random() < 0.5:
            peak = max(s.values)
            return (
                f"{text}|max?",
                str(peak),
                {"I": "calc", "P": f"max@{s.values.index(peak)}", "S": f"max={peak}", "A": str(peak)},
                "exact",
            )
        threshold = mean
        count = sum(v > threshold for v in s.values)
        return (
            f"{text}|count>{threshold}?",
            str(count),
            {"I": "calc", "P": f">{threshold}", "S": f"n={count}", "A": str(count)},
            "exact",
        )
    return f"{text}|pattern?", s.pattern, {"I": "cls", "P": s.pattern, "S": _segments(s), "A": s.pattern}, "exact"


def _segments(s: Series) -> str:
    half = len(s.values) // 2
    first, second = s.values[:half], s.values[half:]
    return f"{round(sum(first) / len(first))}-{round(sum(second) / len(second))}"


def cot_target(labels: dict[str, str], answer: str) -> str:
    """The compact chain of thought: the five labelled steps, final answer after '#'."""
    return ";".join(f"{k}:{labels[k]}" for k in ("I", "P", "S", "A")) + f";#{answer}"


def _kind_for(task: str, rng: random.Random) -> str:
    if task == "deductive":
        return rng.choice(["spike", "spike", "trend", "seasonal", "noise"])
    if task == "causal":
        return rng.choice(["spike", "shift", "seasonal", "trend"])
    if task == "quantitative":
        return rng.choice(["spike", "shift", "trend", "seasonal"])
    return rng.choice(list(PATTERNS))


def _draw(config: VeriTimeConfig, rng: random.Random, fingerprint: str) -> tuple[dict, dict]:
    """One problem row and its SFT sample, drawn with `rng`."""
    task = rng.choice(config.tasks)
    series = make_series(rng, _kind_for(task, rng), rng.randint(config.min_length, config.max_length), config.noise)
    prompt, answer, labels, answer_type = _problem(task, series, rng)
    split = "heldout" if is_heldout(prompt, config.heldout_percent) else "train"
    common = {"source": SOURCE, "split": split, "producer": "recipe:veritime", "config_hash": fingerprint}
    labels = {**labels, "F": answer}
    problem = {
        **common, "prompt": prompt, "answer": answer, "answer_type": answer_type, "taxonomy": task,
        "difficulty": float(LEVEL[task]), "process_labels": labels,
        "choices": list(CAUSES) if answer_type == "choice" else None,
    }  # fmt: skip
    return problem, {**common, "prompt": prompt, "target": cot_target(labels, answer)}


def _dedup(pairs: list[tuple[dict, dict]], config: VeriTimeConfig) -> tuple[list[dict], list[dict]]:
    seen: set[str] = set()
    problems, samples = [], []
    for problem, sample in pairs:
        if problem["prompt"] not in seen:
            seen.add(problem["prompt"])
            problems.append(problem)
            samples.append(sample)
    return as_chat(problems, samples) if config.chat else (problems, samples)


def generate(config: VeriTimeConfig) -> tuple[list[dict], list[dict]]:
    """(problems rows, sft_samples rows) with the config's fingerprint and step labels: `n` draws
    from one RNG, duplicates dropped."""
    rng = random.Random(config.seed)
    fingerprint = config_fingerprint(config)
    return _dedup([_draw(config, rng, fingerprint) for _ in range(config.n)], config)


def generate_range(config: VeriTimeConfig, start: int, stop: int) -> tuple[list[dict], list[dict]]:
    """Draws start..stop-1 of the config, each from its own RNG seeded by (seed, index), so any
    split of 0..n into chunks — on threads, processes or a Ray cluster — gives the same rows
    (duplicates within a chunk are dropped here; across chunks the store drops them by id). A
    different sequence from `generate`'s, which the demo keeps."""
    fingerprint = config_fingerprint(config)
    pairs = [_draw(config, random.Random(f"{config.seed}/{i}"), fingerprint) for i in range(start, stop)]
    return _dedup(pairs, config)
