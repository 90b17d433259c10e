"""The policy's own attempts at stored problems, committed as rollouts: the raw material of the
recipes that build SFT data from what the policy gets wrong (Octopus cold start, iGRPO refinement
data). Also the recipe's gold chain of a problem, read from `sft_samples`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reasonloop.tasks import prompts as prompt_policy
from reasonloop.tasks.engines.base import Completion, SamplingParams
from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type
from reasonloop.tasks.rollout_rows import rollout_rows


@dataclass
class Attempts:
    """`completions[k].prompt_index` indexes `problems` and `rendered`; rows[k] is completion k's
    committed rollout, its `reward` the problem's verifier score (None: no verifier)."""

    problems: list[dict]
    rendered: list[Any]  # what the policy saw: text, or a conversation for chat models
    completions: list[Completion]
    rows: list[dict]

    def by_problem(self) -> dict[int, list[tuple[Completion, dict]]]:
        out: dict[int, list[tuple[Completion, dict]]] = {}
        for completion, row in zip(self.completions, self.rows, strict=True):
            out.setdefault(completion.prompt_index, []).append((completion, row))
        return out


def load_problems(store: Any, split: str, source: str, limit: int) -> list[dict]:
    """Problems of one split (and source unless ''), in id order, the first `limit` unless 0."""
    from reasonloop.storage.samplers import split_filter

    where, params = split_filter(split, source)
    tail = f" LIMIT {int(limit)}" if limit else ""
    return store.query(
        f"SELECT id, prompt, messages, answer, answer_type, source FROM problems WHERE {where} ORDER BY id{tail}",
        params,
    ).to_pylist()


def sample_attempts(
    store: Any, engine: Any, tokenizer: Any, problems: list[dict], *, n: int, sampling: SamplingParams, run_id: str,
    producer: str, stage: str = "single",
) -> Attempts:  # fmt: skip
    """n samples per problem through the training prompt policy, scored by answer type and
    committed to `rollouts` under `run_id` (the lineage of whatever is built from them)."""
    rendered = [prompt_policy.render(tokenizer, p["prompt"], p["messages"]) for p in problems]
    inputs = prompt_policy.engine_inputs(engine, tokenizer, rendered)
    completions = engine.generate(inputs, n, sampling) if problems else []
    rows = rollout_rows(
        completions, rendered, run_id=run_id, policy_version=0, rewards=None, source="train",
        problem_ids=[p["id"] for p in problems], stage=stage,
    )  # fmt: skip
    owners = [problems[c.prompt_index] for c in completions]
    scores = score_by_answer_type(
        [o["prompt"] for o in owners], [c.text for c in completions], [o["answer"] for o in owners],
        [o["answer_type"] for o in owners],
    )  # fmt: skip
    for row, score in zip(rows, scores, strict=True):
        row["reward"] = score  # which attempts were right, for whoever reads the lineage
    if rows:
        store.write("rollouts", rows, run_id=run_id, producer=producer)
    return Attempts(problems, rendered, completions, rows)


def gold_chains(store: Any, problems: list[dict]) -> dict[tuple[str, str], str]:
    """The recipe's gold chain of each problem: its first sft_samples target, by (source, prompt)."""
    sources = sorted({p["source"] for p in problems})
    if not sources:
        return {}
    rows = store.query(
        "SELECT source, prompt, target FROM sft_samples WHERE list_contains($sources, source) ORDER BY id",
        {"sources": sources},
    ).to_pylist()
    out: dict[tuple[str, str], str] = {}
    for row in rows:
        out.setdefault((row["source"], row["prompt"]), row["target"])
    return out
