"""iGRPO's refinement format (2602.09000, SPECS §2) and SFT data that teaches it before RL.

Stage 2 of iGRPO shows the policy its own draft and asks for a better answer. A policy that never
saw that format treats the draft as noise: measured on the tiny char model (arith), a policy whose
greedy answers were 91% right answered the refinement prompt around them right 1.4% of the time;
after this data (mixed with the gold chains) 79% (RESULTS.md, "Learning"). This recipe writes
"question, draft, request → corrected chain" samples from the policy's own drafts, so the format
is learned first:

    sample `drafts` per training problem with the policy -> COMMIT them as rollouts (lineage),
    or (`from_run`) take a stored run's rollouts of those problems, rescored by answer type
    -> per draft: wrong → target a correct chain (a right sibling draft of the same problem when
       `target` is `policy_first` and one exists, else the recipe's gold chain);
       right → target the draft itself (refining a right answer keeps it), at most
       `max_right_share` of a problem's rows
    -> COMMIT to `sft_samples` (source `igrpo_refine`, `source_ids` = the draft and any sibling)

The refinement prompt is the one training and evaluation use (`refinement_prompt`): a template
for plain prompts, the draft as an assistant turn plus a request turn for chat prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from reasonloop.schemas.common import config_fingerprint
from reasonloop.tasks.engines.base import SamplingParams
from reasonloop.tasks.prompts import with_turns
from reasonloop.tasks.recipes.attempts import gold_chains, load_problems, sample_attempts
from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type

SOURCE = "igrpo_refine"
# Named refinement templates for plain prompts (the paper's ablation varies the template); a
# template that is not a name is used as written. {question}, {draft}.
REFINE_TEMPLATES = {
    "repeat": "{question}{draft}\n{question}",  # the draft, then the question again
    "review": "{question}{draft}\nreview the answer above and correct it:\n{question}",
}
DEFAULT_REQUEST = "Check the answer above and give a corrected final answer."


def template_text(template: str) -> str:
    """A named template's text, or `template` itself; it must name {question} and {draft}."""
    text = REFINE_TEMPLATES.get(template, template)
    if "{question}" not in text or "{draft}" not in text:
        known = ", ".join(REFINE_TEMPLATES)
        raise ValueError(f"refinement template must be one of {known} or contain {{question}} and {{draft}}")
    return text


def refinement_prompt(rendered: Any, question: str, draft: str, template: str, request: str) -> Any:
    """Stage 2's prompt: the draft as an assistant turn then `request` (chat), or the template."""
    if isinstance(rendered, str):
        return template_text(template).format(question=question, draft=draft)
    return with_turns(rendered, {"role": "assistant", "content": draft}, {"role": "user", "content": request})


@dataclass(frozen=True)
class RefineDataConfig:
    drafts: int = 4  # policy samples per problem
    temperature: float = 1.0
    max_new_tokens: int = 64
    target: str = "policy_first"  # policy_first: a right sibling draft, else gold | gold: always the gold chain
    max_right_share: float = 0.5  # of a problem's rows, at most this share refine a right draft into itself
    template: str = "repeat"  # a REFINE_TEMPLATES name or a template with {question} and {draft}
    request: str = DEFAULT_REQUEST  # chat prompts: the user turn after the draft
    split: str = "train"
    source: str = ""  # problems of this source only ('' = all)
    limit: int = 0  # problems (0 = all), in id order
    from_run: str = ""  # build from this run's stored rollouts instead of sampling (no engine needed)
    from_stage: str = ""  # with from_run: rollouts of this stage only (e.g. draft); '' = any
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target not in ("policy_first", "gold"):
            raise ValueError("target must be policy_first or gold")
        if not 0.0 <= self.max_right_share <= 1.0:
            raise ValueError("max_right_share must be in [0, 1]")
        if self.drafts < 1:
            raise ValueError("drafts must be >= 1")
        template_text(self.template)


def plan_rows(
    drafts: list[tuple[str, bool, str]], gold: str | None, config: RefineDataConfig, rng: random.Random
) -> list[tuple[str, str, list[str]]]:
    """(draft, target, source ids) per sample of one problem, from its drafts (text, right?, rollout
    id). Wrong drafts get a correct chain; right ones keep themselves, capped at `max_right_share`;
    a repeated (draft, target) is one sample."""
    right = [(text, rid) for text, ok, rid in drafts if ok]
    wrong_rows: list[tuple[str, str, list[str]]] = []
    for text, ok, rid in drafts:
        if ok:
            continue
        if config.target == "policy_first" and right:
            fix, fix_id = rng.choice(right)
            wrong_rows.append((text, fix, [rid, fix_id]))
        elif gold is not None:
            wrong_rows.append((text, gold, [rid]))
    right_rows = [(text, text, [rid]) for text, rid in right]
    rng.shuffle(right_rows)
    share = config.max_right_share
    # keep k right rows with k / (k + wrong) <= share: k <= share * wrong / (1 - share)
    cap = len(right_rows) if share >= 1.0 else int(share * len(wrong_rows) / (1.0 - share))
    if not wrong_rows and share > 0:
        cap = 1  # a problem the policy always solves still teaches "keep a right draft", once
    unique: dict[tuple[str, str], tuple[str, str, list[str]]] = {}
    for row in wrong_rows + right_rows[:cap]:  # the same draft twice is one sample (as the store would)
        unique.setdefault((row[0], row[1]), row)
    return list(unique.values())


def refine_data(store: Any, engine: Any, tokenizer: Any, config: RefineDataConfig) -> dict[str, int]:
    """Drafts (sampled and committed, or a stored run's rollouts with `from_run`), then the
    refinement samples built from them, committed; counts written."""
    fingerprint = config_fingerprint(config)
    problems = load_problems(store, config.split, config.source, config.limit)
    sets = stored_drafts(store, tokenizer, problems, config) if config.from_run else sampled_drafts(
        store, engine, tokenizer, problems, config, fingerprint
    )  # fmt: skip
    chains = gold_chains(store, problems) if problems else {}
    samples: list[dict] = []
    right = fixing = 0
    for problem, rendered, drafts in sets:
        right += sum(ok for _, ok, _ in drafts)
        rng = random.Random(f"{config.seed}/{problem['id']}")
        for draft, target, ids in plan_rows(drafts, chains.get((problem["source"], problem["prompt"])), config, rng):
            # `prompt` is the plain form (what a model without a chat template is shown, and the
            # row's identity); `messages` the conversation for chat models.
            plain = refinement_prompt(problem["prompt"], problem["prompt"], draft, config.template, "")
            chat = None if isinstance(rendered, str) else refinement_prompt(rendered, "", draft, "", config.request)
            fixing += target != draft
            samples.append({
                "prompt": plain, "messages": chat, "target": target, "problem_id": problem["id"], "source_ids": ids,
                "split": "train", "source": SOURCE, "config_hash": fingerprint,
            })  # fmt: skip
    result = store.write("sft_samples", samples, producer=f"recipe:{SOURCE}") if samples else None
    return {
        "problems": len(problems), "drafts": sum(len(d) for _, _, d in sets), "drafts_right": right,
        "samples": len(samples), "samples_fixing": fixing, "committed": result.committed if result else 0,
    }  # fmt: skip


DraftSet = tuple[dict, Any, list[tuple[str, bool, str]]]  # (problem, rendered prompt, [(draft, right?, rollout id)])


def sampled_drafts(
    store: Any, engine: Any, tokenizer: Any, problems: list[dict], config: RefineDataConfig, fingerprint: str
) -> list[DraftSet]:
    sampling = SamplingParams(temperature=config.temperature, max_new_tokens=config.max_new_tokens, seed=config.seed)
    tried = sample_attempts(
        store, engine, tokenizer, problems, n=config.drafts, sampling=sampling,
        run_id=f"{SOURCE}-{fingerprint[:12]}", producer=f"recipe:{SOURCE}", stage="draft",
    )  # fmt: skip
    return [
        (problems[i], tried.rendered[i], [(c.final_text, row["reward"] == 1.0, row["id"]) for c, row in pairs])
        for i, pairs in sorted(tried.by_problem().items())
    ]


def stored_drafts(store: Any, tokenizer: Any, problems: list[dict], config: RefineDataConfig) -> list[DraftSet]:
    """A stored run's rollouts of these problems (of stage `from_stage` unless ''), rescored by
    each problem's answer type (a run's reward may be a weighted mix)."""
    from reasonloop.tasks import prompts as prompt_policy

    where = "run_id = $run" + (" AND stage = $stage" if config.from_stage else "")
    params = {"run": config.from_run, **({"stage": config.from_stage} if config.from_stage else {})}
    rows = store.query(f"SELECT id, problem_id, completion FROM rollouts WHERE {where} ORDER BY id", params).to_pylist()
    if not rows:
        stage = f", stage {config.from_stage!r}" if config.from_stage else ""
        raise ValueError(f"no rollouts of run {config.from_run!r}{stage}")
    problem_of = {p["id"]: p for p in problems}
    rows = [r for r in rows if r["problem_id"] in problem_of]
    owners = [problem_of[r["problem_id"]] for r in rows]
    scores = score_by_answer_type([o["prompt"] for o in owners], [r["completion"] for r in rows],
                                  [o["answer"] for o in owners], [o["answer_type"] for o in owners])  # fmt: skip
    by_problem: dict[str, list[tuple[str, bool, str]]] = {}
    for row, score in zip(rows, scores, strict=True):  # one scoring call for the whole run
        by_problem.setdefault(row["problem_id"], []).append((row["completion"], score == 1.0, row["id"]))
    return [
        (p, prompt_policy.render(tokenizer, p["prompt"], p["messages"]), by_problem[p["id"]])
        for p in problems
        if p["id"] in by_problem
    ]
