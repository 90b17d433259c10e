"""Octopus cold-start SFT data (SPECS §3, "Cold-start SFT"): o1 sampled from the current policy,
o2 from a stronger source that knows the ground truth, written o1 ⊕ separator ⊕ o2 into
`sft_samples` with the rollouts they came from in `source_ids`.

    sample `attempts` per problem with the policy -> COMMIT them as rollouts (the lineage)
    -> per problem, pick (o1, o2):
         mixed (the paper's choice): o1 a random attempt; o2 the teacher's answer given the
           question, the ground truth and o1 ("Question / Ground Truth / Reference Answer"), or,
           with teacher "gold", the recipe's gold chain;
         in_distribution: all attempts right: o2 the first right one (best-of-N), o1 another;
           some right: o1 a wrong one, o2 a right one; none right: no sample
    -> COMMIT the samples (source `octopus_cold_start`), trained whole by default as in the paper
       (LLaMA-Factory SFT on the response); `mask_o1` leaves the policy's own attempt out of the
       loss. Measured on the tiny char model: with o1 masked, 40 SFT steps taught it to start with a
       garbled separator instead of an attempt (it never learns where o1 ends); trained whole, it
       writes attempt ⊕ separator ⊕ correction.

The store, engines and tokenizer are passed in; Prefect wraps this in flows/octopus.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from reasonloop.schemas.common import config_fingerprint
from reasonloop.tasks.engines.base import SamplingParams
from reasonloop.tasks.recipes.attempts import gold_chains, load_problems, sample_attempts
from reasonloop.tasks.recipes.octopus import FORMATS, SEPARATOR
from reasonloop.tasks.rewards.self_correction import part_verifier

SOURCE = "octopus_cold_start"
TEACHER_PROMPT = (
    "Question: {question}\nGround Truth: {answer}\nReference Answer: {reference}\n"
    "Generate a new complete answer to the question, step by step, ending with the final answer. "
    "If the Reference Answer is wrong, correct it implicitly: do not mention the Reference Answer "
    "or the Ground Truth."
)


@dataclass(frozen=True)
class ColdStartConfig:
    mode: str = "mixed"  # mixed | in_distribution
    teacher: str = "gold"  # gold: the recipe's gold chain (sft_samples) | engine: a teacher engine
    attempts: int = 4  # policy samples per problem (the paper: 4)
    max_new_tokens: int = 64
    temperature: float = 1.0
    answer: str = "hash"  # hash (#<answer>) | boxed
    mask_o1: bool = False  # True: o1 carries no SFT loss (the separator and o2 do)
    split: str = "train"
    source: str = ""  # problems of this source only ('' = all)
    limit: int = 0  # problems (0 = all), in id order
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("mixed", "in_distribution"):
            raise ValueError("mode must be mixed or in_distribution")
        if self.teacher not in ("gold", "engine"):
            raise ValueError("teacher must be gold or engine")
        if self.mode == "in_distribution" and self.teacher != "gold":
            raise ValueError("in_distribution takes o2 from the policy's own right attempts: no teacher")
        if self.answer not in FORMATS:
            raise ValueError(f"answer must be one of {', '.join(FORMATS)}")


def pick_in_distribution(correct: list[bool], rng: random.Random) -> tuple[int, int] | None:
    """(o1, o2) attempt indices: all right → o2 the first (best-of-N), o1 a random other; some
    right → o1 a random wrong one, o2 a random right one; none right → None."""
    right = [k for k, ok in enumerate(correct) if ok]
    wrong = [k for k, ok in enumerate(correct) if not ok]
    if not right or len(correct) < 2:
        return None
    if not wrong:
        return rng.choice(right[1:]), right[0]
    return rng.choice(wrong), rng.choice(right)


def sample_row(problem: dict, o1: str, o2: str, source_ids: list[str], mask_o1: bool, fingerprint: str) -> dict:
    """An sft_samples row: target o1 ⊕ separator ⊕ o2 (its spans are characters of the target)."""
    spans = [{"start": 0, "end": len(o1)}] if mask_o1 else None
    return {
        "prompt": problem["prompt"], "messages": problem.get("messages"), "target": o1 + SEPARATOR + o2,
        "loss_mask_spans": spans, "problem_id": problem["id"], "source_ids": source_ids, "split": "train",
        "source": SOURCE, "config_hash": fingerprint,
    }  # fmt: skip


def cold_start(store: Any, engine: Any, tokenizer: Any, config: ColdStartConfig, teacher: Any = None) -> dict[str, int]:
    """Sample, commit the attempts, build and commit the samples; counts of what was written."""
    fingerprint = config_fingerprint(config)
    answer_format = FORMATS[config.answer]
    problems = load_problems(store, config.split, config.source, config.limit)
    sampling = SamplingParams(temperature=config.temperature, max_new_tokens=config.max_new_tokens, seed=config.seed)
    tried = sample_attempts(
        store, engine, tokenizer, problems, n=config.attempts, sampling=sampling,
        run_id=f"{SOURCE}-{fingerprint[:12]}", producer=f"recipe:{SOURCE}",
    )  # fmt: skip
    attempts = {
        index: [(answer_format.truncate(c.text), row["id"]) for c, row in pairs]
        for index, pairs in tried.by_problem().items()
    }
    rows = tried.rows
    chains = gold_chains(store, problems) if config.teacher == "gold" else {}
    picks: list[tuple[dict, str, list[str]]] = []  # (problem, o1, source ids) waiting for an o2
    samples: list[dict] = []
    for index, problem in enumerate(problems):
        rng = random.Random(f"{config.seed}/{problem['id']}")
        usable = [(o1, rid) for o1, rid in attempts.get(index, []) if o1 is not None]
        if not usable:
            continue
        verify, gold = part_verifier(problem["answer_type"]), str(problem["answer"])
        if config.mode == "in_distribution":
            pick = pick_in_distribution([verify(o1, gold) for o1, _ in usable], rng)
            if pick is not None:
                (o1, id1), (o2, id2) = usable[pick[0]], usable[pick[1]]
                samples.append(sample_row(problem, o1, o2, [id1, id2], config.mask_o1, fingerprint))
            continue
        o1, rid = rng.choice(usable)
        if config.teacher == "gold":
            chain = chains.get((problem["source"], problem["prompt"]))
            if chain is not None:
                samples.append(sample_row(problem, o1, chain, [rid], config.mask_o1, fingerprint))
        else:
            picks.append((problem, o1, [rid]))
    if picks:  # one batched call to the teacher, greedy
        asks = [TEACHER_PROMPT.format(question=p["prompt"], answer=p["answer"], reference=o1) for p, o1, _ in picks]
        answers = teacher.generate(asks, 1, SamplingParams(temperature=0.0, max_new_tokens=config.max_new_tokens))
        for completion in answers:
            problem, o1, ids = picks[completion.prompt_index]
            o2 = answer_format.truncate(completion.text)
            if o2 is not None:
                samples.append(sample_row(problem, o1, o2, ids, config.mask_o1, fingerprint))
    result = store.write("sft_samples", samples, producer=f"recipe:{SOURCE}") if samples else None
    return {
        "problems": len(problems), "attempts": len(rows), "samples": len(samples),
        "committed": result.committed if result else 0,
    }  # fmt: skip
