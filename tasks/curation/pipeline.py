"""Dr. SCI curation as one pass over problem rows (SPECS §6), stage by stage:

    clean -> classify -> split (verifiable / open, canonical answers; open math dropped)
    -> dedup (exact + near, conflicts by answer equivalence) -> decontaminate (vs evaluation rows)
    -> rubrics (judge engine, open items without one) -> difficulty (pass rate over k samples of a
    policy; k/k dropped) -> curated rows

Each stage is a function of the rows the previous one kept; every drop carries its stage and
reason, and `counts` has each stage's in/kept/dropped. flows/drsci.py runs the stages as Prefect
tasks and commits the result; `curate` runs them in one call (tests, notebooks).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reasonloop.tasks.curation.clean import Dropped, clean, judge_subjects, meta, rule_subject, split_kind
from reasonloop.tasks.curation.dedup import decontaminate, deduplicate
from reasonloop.tasks.curation.rubrics import generate_rubrics

CHUNK = 1024  # problems per pass-rate generation call
PROBLEM_FIELDS = ("prompt", "messages", "answer", "answer_type", "choices", "rubric", "process_labels", "media_ref")


@dataclass(frozen=True)
class CurationConfig:
    out_source: str = "dr_sci_curated"  # source of the curated rows
    near_dup_threshold: float = 0.85  # Jaccard of character 5-gram sets (same numbers required)
    decontam_threshold: float = 0.85
    k: int = 8  # samples per problem for the pass rate (the paper: 8)
    pass_at: float = 0.7  # a sample passes with a score >= this (rule 0/1; rubric a fraction)
    max_new_tokens: int = 48
    drop_solved: bool = True  # drop items the policy solves k/k (no learning signal)
    seed: int = 0


@dataclass
class Curated:
    rows: list[dict]
    dropped: list[Dropped] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def stage(self, name: str, kept: list[dict], dropped: list[Dropped], **extra: int) -> None:
        self.counts[name] = {"in": len(self.rows), "kept": len(kept), "dropped": len(dropped), **extra}
        self.rows = kept
        self.dropped += dropped


def classify(rows: Sequence[dict], judge: Any = None) -> list[str]:
    return judge_subjects(judge, rows) if judge is not None else [rule_subject(r) for r in rows]


def add_rubrics(rows: Sequence[dict], judge: Any = None) -> tuple[list[dict], list[Dropped], int]:
    """Open items without a rubric get one from the judge engine; without a judge, or when its
    rubric does not parse, they are dropped. Returns (kept, dropped, rubrics generated)."""
    missing = [i for i, r in enumerate(rows) if r["kind"] == "open" and not r.get("rubric")]
    written = generate_rubrics(judge, [rows[i] for i in missing]) if judge is not None else [None] * len(missing)
    made = dict(zip(missing, written, strict=True))
    kept, dropped = [], []
    for i, row in enumerate(rows):
        if i not in made:
            kept.append(row)
        elif made[i]:
            kept.append({**row, "rubric": made[i], "rubric_by": "judge"})
        else:
            why = "no rubric and no judge engine to write one" if judge is None else "the judge's rubric did not parse"
            dropped.append((row, f"rubrics: {why}"))
    return kept, dropped, sum(bool(m) for m in written)


def annotate_difficulty(
    rows: Sequence[dict], policy: Any, score: Callable, config: CurationConfig
) -> tuple[list[dict], list[Dropped]]:
    from reasonloop.tasks.scheduling.difficulty import pass_rates

    rates = [rate for start in range(0, len(rows), CHUNK)  # bounded memory: CHUNK problems x k samples at a time
             for rate in pass_rates(policy, rows[start : start + CHUNK], score, k=config.k, pass_at=config.pass_at,
                                    max_new_tokens=config.max_new_tokens, seed=config.seed)]  # fmt: skip
    kept, dropped = [], []
    for row, rate in zip(rows, rates, strict=True):
        if config.drop_solved and rate >= 1.0:
            dropped.append((row, f"difficulty: solved {config.k}/{config.k} by the policy"))
        else:
            kept.append({**row, "pass_rate": rate, "difficulty": 1.0 - rate})
    return kept, dropped


def curated_row(row: dict, config_hash: str, out_source: str) -> dict:
    """A curated problem row: the problem's fields, subject as taxonomy, lineage in metadata."""
    info = {**meta(row), "subject": row["subject"], "kind": row["kind"], "source_problem_id": row.get("id"),
            "source": row.get("source"), "curation": config_hash}  # fmt: skip
    if row.get("rubric_by"):
        info["rubric_by"] = row["rubric_by"]
    return {**{k: row.get(k) for k in PROBLEM_FIELDS}, "taxonomy": row["subject"], "pass_rate": row.get("pass_rate"),
            "difficulty": row.get("difficulty"), "split": "train", "source": out_source,
            "metadata": json.dumps(info, sort_keys=True)}  # fmt: skip


Runner = Callable[..., Any]  # run(stage name, fn, *args) -> fn(*args); the flow's makes each a task


def call(name: str, fn: Callable, *args: Any) -> Any:
    return fn(*args)


def curate(
    rows: Sequence[dict], eval_rows: Sequence[dict], config: CurationConfig, *, judge: Any = None,
    policy: Any = None, score: Callable | None = None, run: Runner = call,
) -> Curated:  # fmt: skip
    """All stages in order. `judge`: an engine for subjects and rubrics (None: rules, and open
    items need a rubric of their own); `policy` + `score`: the pass-rate annotation (None: skipped);
    `run`: how a stage is called (flows/drsci.py: as a Prefect task)."""
    out = Curated(list(rows))
    out.stage("clean", *run("clean", clean, out.rows))
    subjects = run("classify", classify, out.rows, judge)
    out.stage("classify", out.rows, [], **Counter(subjects))
    kept, dropped = run("split", split_kind, out.rows, subjects)
    out.stage("split", kept, dropped, **Counter(r["kind"] for r in kept))
    out.stage("dedup", *run("dedup", deduplicate, out.rows, config.near_dup_threshold))
    out.stage("decontaminate", *run("decontaminate", decontaminate, out.rows, eval_rows, config.decontam_threshold))
    kept, dropped, made = run("rubrics", add_rubrics, out.rows, judge)
    out.stage("rubrics", kept, dropped, generated=made)
    if policy is not None and score is not None:
        out.stage("difficulty", *run("difficulty", annotate_difficulty, out.rows, policy, score, config))
    return out
