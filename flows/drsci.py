"""Dr. SCI (SPECS §6) as Prefect flows over the store:

    curate_drsci:  any problems table (a source, or all) -> clean, classify, split, dedup,
                   decontaminate (vs its held-out/test rows and `eval_sources`), rubrics (a judge
                   engine), pass rate over k samples of a policy -> curated `problems` rows (source
                   `out_source`, pass_rate/difficulty set) + every drop in `rejected` with its reason
    eesft:         exploration-expanding SFT data: candidate responses of one or more models at
                   several temperatures, the correct ones, greedily picked for new 4-grams ->
                   `sft_samples`, with the coverage of a random pick of the same size

Each curation stage is a task run (tasks/curation/pipeline.py's `run` hook); its counts are the
flow's return value and a markdown artifact. A rerun commits nothing new (problem and rejection ids
are content hashes). Import after `configure_prefect`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from reasonloop.flows.artifacts import artifact_key
from reasonloop.schemas.common import config_fingerprint
from reasonloop.schemas.validate import Rejection
from reasonloop.storage import ReplayStore
from reasonloop.tasks.curation.pipeline import CurationConfig, curate, curated_row

COLUMNS = (
    "id, prompt, messages, answer, answer_type, choices, rubric, process_labels, media_ref, split, source, metadata"
)


def judge_engine(judge_url: str = "", judge_model: str = "") -> Any:
    """An OpenAI-compatible judge at `judge_url`, a local model folder `judge_model`, or None."""
    from reasonloop.tasks.engines import make_engine

    if judge_url:
        return make_engine("openai", base_url=judge_url, model=judge_model or "judge")
    if judge_model:
        return make_engine("transformers", model=judge_model, batch_size=64)
    return None


def row_score(judge: Any) -> Any:
    from reasonloop.tasks.rewards.rubric import EngineJudge, KeywordJudge, RubricScorer
    from reasonloop.tasks.rewards.science import row_scorer

    return row_scorer(RubricScorer(EngineJudge(judge) if judge is not None else KeywordJudge()))


def load_rows(store: ReplayStore, sources: Sequence[str], splits: Sequence[str]) -> list[dict]:
    where = "split IN (SELECT unnest($splits))" + (" AND source IN (SELECT unnest($sources))" if sources else "")
    params: dict[str, Any] = {"splits": list(splits)} | ({"sources": list(sources)} if sources else {})
    return store.query(f"SELECT {COLUMNS} FROM problems WHERE {where} ORDER BY id", params).to_pylist()


def as_task(name: str, fn: Any, *args: Any) -> Any:
    return task(name=f"curate-{name}", cache_policy=NO_CACHE)(fn)(*args)


@flow(name="curate-drsci")
def curate_drsci(
    root: str, source: str = "", config: dict | None = None, *, model: str = "", judge_url: str = "",
    judge_model: str = "", eval_sources: Sequence[str] = (),
) -> dict[str, Any]:  # fmt: skip
    """Curate the train split of `source` (every source when empty) into `config.out_source`.
    `model`: the policy whose pass rate is the difficulty (none: not annotated)."""
    cfg = CurationConfig(**(config or {}))
    store = ReplayStore(root)
    sources = [source] if source else []
    rows = [r for r in load_rows(store, sources, ["train"]) if r["source"] != cfg.out_source]
    eval_rows = load_rows(store, sources, ["heldout", "test"])
    if eval_sources:  # every row of an evaluation source counts as evaluation data
        eval_rows += load_rows(store, list(eval_sources), ["heldout", "test", "train"])
    judge = judge_engine(judge_url, judge_model)
    policy = None
    if model:
        from reasonloop.tasks.engines import make_engine

        policy = make_engine("transformers", model=model, batch_size=64)
    out = curate(rows, eval_rows, cfg, judge=judge, policy=policy, score=row_score(judge), run=as_task)
    fingerprint = config_fingerprint(cfg)
    result = store.write(
        "problems", [curated_row(r, fingerprint, cfg.out_source) for r in out.rows],
        rejections=[Rejection(row, reason, f"curation:{reason.split(':', 1)[0]}") for row, reason in out.dropped],
        producer="flow:curate_drsci", config_hash=fingerprint,
    )  # fmt: skip
    summary = {"stages": out.counts, "committed": result.committed, "duplicates": result.duplicates,
               "rejected": result.rejected}  # fmt: skip
    lines = ["| stage | in | kept | dropped | detail |", "| --- | ---: | ---: | ---: | --- |"] + [
        f"| {name} | {c['in']} | {c['kept']} | {c['dropped']} | "
        + ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("in", "kept", "dropped")) + " |"
        for name, c in out.counts.items()
    ]  # fmt: skip
    create_markdown_artifact("\n".join([f"# Dr. SCI curation -> `{cfg.out_source}`", "", *lines]),
                             key=artifact_key("curate", cfg.out_source), description="curation counts")  # fmt: skip
    return summary


@task(name="eesft", cache_policy=NO_CACHE)
def eesft_task(
    root: str, source: str, models: Sequence[str], *, temperatures: Sequence[float] = (0.7, 1.0, 1.3),
    samples: int = 4, per_problem: int = 2, unit: str = "word", out_source: str = "dr_sci_eesft",
    max_new_tokens: int = 48, judge_url: str = "", judge_model: str = "", seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Exploration-expanding SFT rows for the train problems of `source`: every model samples
    `samples` responses per temperature; correct ones (unified score >= 0.7) are the candidates; up
    to `per_problem` per problem are picked greedily for unseen n-grams (shared across problems)."""
    from reasonloop.tasks.curation.explore import coverage, greedy_select, random_select
    from reasonloop.tasks.engines import SamplingParams, make_engine
    from reasonloop.tasks.scheduling.difficulty import rendered_prompts

    store = ReplayStore(root)
    problems = load_rows(store, [source], ["train"])
    score = row_score(judge_engine(judge_url, judge_model))
    candidates: list[list[str]] = [[] for _ in problems]
    for model in models:
        engine = make_engine("transformers", model=model, batch_size=64)
        for t in temperatures:
            sampling = SamplingParams(temperature=t, max_new_tokens=max_new_tokens, seed=seed)
            out = engine.generate(rendered_prompts(engine, problems), samples, sampling)
            ok = score([problems[c.prompt_index]["prompt"] for c in out], [c.final_text for c in out],
                       [problems[c.prompt_index] for c in out])  # fmt: skip
            for c, s in zip(out, ok, strict=True):
                if s is not None and s >= 0.7 and c.final_text not in candidates[c.prompt_index]:
                    candidates[c.prompt_index].append(c.final_text)
    covered: set = set()
    rows, random_texts = [], []
    for k, (problem, texts) in enumerate(zip(problems, candidates, strict=True)):
        picked = greedy_select(texts, per_problem, unit=unit, covered=covered)
        rows += [{"prompt": problem["prompt"], "messages": problem["messages"], "target": texts[i],
                  "problem_id": problem["id"], "source_ids": [problem["id"]], "split": "train", "source": out_source}
                 for i in picked]  # fmt: skip
        random_texts += [texts[i] for i in random_select(texts, len(picked), seed + k)]
    result = store.write("sft_samples", rows, producer=f"flow:eesft:{','.join(models)}")
    return {"problems": len(problems), "candidates": sum(map(len, candidates)), "picked": len(rows),
            "committed": result.committed, "coverage_greedy": len(covered),
            "coverage_random": coverage(random_texts, range(len(random_texts)), unit=unit)}  # fmt: skip


def synth_drsci(root: str, config: dict, chat: bool = False) -> dict[str, int]:
    """The recipe into the store; `chat`: also as conversations (instruct models' chat templates)."""
    from reasonloop.tasks.recipes.chat import as_chat
    from reasonloop.tasks.recipes.dr_sci import DrSciConfig, generate

    problems, samples = generate(DrSciConfig(**config))
    if chat:
        problems, samples = as_chat(problems, samples)
    store = ReplayStore(root)
    return {t: store.write(t, rows).committed for t, rows in (("problems", problems), ("sft_samples", samples))}
