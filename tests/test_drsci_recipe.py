"""Dr. SCI's pure parts: the science generator and its checkers, units, rubric aggregation and the
scorer's cache/batching/retries, cleaning, dedup, decontamination, rubric generation and the
greedy 4-gram selection."""

from __future__ import annotations

import itertools
import math

import pytest

from reasonloop.tasks.curation.clean import clean, rule_subject, split_kind
from reasonloop.tasks.curation.dedup import decontaminate, deduplicate
from reasonloop.tasks.curation.explore import coverage, greedy_select, ngrams, random_select
from reasonloop.tasks.curation.pipeline import CurationConfig, curate
from reasonloop.tasks.curation.rubrics import generate_rubrics
from reasonloop.tasks.engines.fake import ScriptedEngine
from reasonloop.tasks.recipes.dr_sci import DrSciConfig, generate
from reasonloop.tasks.rewards import get_reward
from reasonloop.tasks.rewards.rubric import EngineJudge, KeywordJudge, Question, RubricScorer, aggregate, parse_item
from reasonloop.tasks.rewards.science import row_scorer
from reasonloop.tasks.rewards.units import parse_quantity, same_quantity


def columns(rows: list[dict]) -> dict:
    return {"answer": [r["answer"] for r in rows], "answer_type": [r["answer_type"] for r in rows],
            "rubric": [r.get("rubric") for r in rows]}  # fmt: skip


def test_every_generated_item_passes_its_checker_and_a_wrong_answer_fails() -> None:
    problems, samples = generate(DrSciConfig(n=60_000, seed=3))
    assert len(problems) >= 10_000
    kinds = {p["answer_type"] for p in problems}
    assert kinds == {"quantity", "choice", "math", "rubric"}
    unified = get_reward("unified")
    prompts, targets = [p["prompt"] for p in problems], [s["target"] for s in samples]
    scores = unified(prompts, targets, **columns(problems))
    assert sum(s != 1.0 for s in scores) == 0  # 10k+ items, 0 errors
    # the same chains with the final answer changed fail (verifiable) or are capped (open-ended)
    wrong = [t.rsplit("#", 1)[0] + "#" + ("999 m/s" if p["answer_type"] == "quantity" else "Z+1") for p, t in
             zip(problems, targets, strict=True)]  # fmt: skip
    for p, s in zip(problems, unified(prompts, wrong, **columns(problems)), strict=True):
        assert s <= (0.3 if p["answer_type"] == "rubric" else 0.0)
    rubric_sizes = {len(p["rubric"]) for p in problems if p["answer_type"] == "rubric"}
    assert min(rubric_sizes) >= 5
    assert {p["split"] for p in problems} == {"train", "heldout"}


@pytest.mark.parametrize(
    ("said", "gold", "ok"),
    [("11 m/s", "11 m/s", True), ("39.6 km/h", "11 m/s", True), ("500 mA", "0.5 A", True), ("2000 Pa", "2 kPa", True),
     ("0.044 kg/mol", "44 g/mol", True), ("1 atm", "101.325 kPa", True), ("11", "11 m/s", True),
     ("11.1 m/s", "11 m/s", True), ("11.2 m/s", "11 m/s", False), ("11 m", "11 m/s", False),
     ("3 furlongs", "3 furlongs", True), ("3 furlongs", "3 m", False), ("0.5 A", "500 mA", True)],
)  # fmt: skip
def test_quantities_convert_units_within_a_dimension(said: str, gold: str, ok: bool) -> None:
    assert same_quantity(parse_quantity(said), parse_quantity(gold)) is ok
    assert get_reward("quantity")([""], [f"work;#{said}"], answer=[gold]) == [float(ok)]


RUBRIC = ["Essential: law [kw: I=V/R]", "Essential: change [kw: R up]", "Important: effect [kw: I down]",
          "Optional: fixed [kw: V fixed]", "Pitfall: wrong way [kw: I up]"]  # fmt: skip


@pytest.mark.parametrize(
    ("verdicts", "answer_ok", "expected"),
    [((1, 1, 1, 1, 0), True, 1.0),  # w_ans = 6 (two Essentials); den = 6 + 3 + 3 + 2 + 1 = 15
     ((1, 1, 1, 0, 0), True, 14 / 15),
     ((1, 1, 1, 1, 0), False, 0.3),  # 9/15 = 0.6, capped: a wrong answer cannot be compensated
     ((1, 0, 0, 0, 0), False, 3 / 15),  # below the cap stays
     ((1, 0, 0, 0, 1), True, 9 / 15 - 2),  # the pitfall subtracts its weight
     ((0, 0, 0, 0, 1), False, -2.0)],
)  # fmt: skip
def test_rubric_aggregation_matches_hand_computed_values(verdicts: tuple, answer_ok: bool, expected: float) -> None:
    tags = [parse_item(t).tag for t in RUBRIC]
    assert aggregate(list(zip(tags, map(bool, verdicts), strict=True)), answer_ok) == pytest.approx(expected)


def test_the_keyword_judge_scores_responses_by_their_rubric() -> None:
    scorer = RubricScorer(KeywordJudge())
    responses = ["I=V/R;V fixed;R up so I down;#halves", "I=V/R;R up so I up;#doubles", "#halves"]
    scores = scorer(["q"] * 3, responses, ["halves"] * 3, [RUBRIC] * 3)
    assert scores == pytest.approx([1.0, 6 / 15 - 2, 6 / 15])  # law + change, pitfall, wrong answer
    assert scorer(["q"], ["x"], ["a"], [["Essential no colon here"]]) == [None]  # malformed rubric: no score
    with pytest.raises(ValueError, match="rubric item"):
        parse_item("Mandatory: something")


class FlakyJudge:
    """Raises on its first call, answers None to one question once, then keyword verdicts."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls, self.asked = 0, []
        self.inner = KeywordJudge()

    def __call__(self, questions: list[Question]) -> list[bool | None]:
        self.calls += 1
        self.asked.append(len(questions))
        if self.calls == 1:
            raise ConnectionError("judge server down")
        out = self.inner(questions)
        return [None, *out[1:]] if self.calls == 2 else out


def test_the_scorer_batches_retries_and_caches_judge_calls() -> None:
    judge = FlakyJudge()
    scorer = RubricScorer(judge, backoff_s=0.0)
    responses = ["I=V/R;V fixed;R up so I down;#halves", "#doubles"]
    first = scorer(["q", "q"], responses, ["halves"] * 2, [RUBRIC] * 2)
    assert first == pytest.approx([1.0, 0.0])
    # call 1 raised, call 2 answered all but one question (one batch of 12), call 3 asked that one
    assert judge.asked == [12, 12, 1]
    metrics = scorer.drain_metrics()
    assert (metrics["judge/calls"], metrics["judge/retries"], metrics["judge/errors"]) == (3, 2, 1)
    again = scorer(["q", "q"], responses, ["halves"] * 2, [RUBRIC] * 2)
    assert again == first and judge.calls == 3  # every verdict from the cache
    assert scorer.drain_metrics()["judge/cache_hits"] == 12

    class Silent:
        name = "silent"

        def __call__(self, questions: list[Question]) -> list[bool | None]:
            return [None] * len(questions)

    silent = RubricScorer(Silent(), retries=1, backoff_s=0.0)
    assert silent(["q"], responses[:1], ["halves"], [RUBRIC]) == [None]  # never a silent 0
    assert silent.drain_metrics()["judge/unanswered"] == 6


def test_an_engine_judge_grades_through_an_engine_in_one_call() -> None:
    def script(prompt: str, i: int) -> str:
        if "Reference answer: halves" in prompt:
            return "YES"
        return "YES." if "Criterion: law" in prompt or "Criterion: change" in prompt else "NO"

    engine = ScriptedEngine(script)
    scorer = RubricScorer(EngineJudge(engine))
    assert scorer(["q"], ["anything"], ["halves"], [RUBRIC]) == pytest.approx([12 / 15])
    assert engine.calls == 1


def test_cleaning_classification_and_the_split_say_why_rows_go() -> None:
    rows = [
        {"prompt": "phys: v=3m/s t=2s. d=?", "answer": "6 m", "answer_type": "quantity"},
        {"prompt": "q", "answer": " ", "answer_type": "exact"},
        {"prompt": "pick", "answer": "E", "answer_type": "choice", "choices": ["a", "b"]},
        {"prompt": "n", "answer": "nan", "answer_type": "numeric"},
        {"prompt": "n", "answer": "fast", "answer_type": "quantity"},
        {"prompt": "Prove the polynomial has no integer root.", "answer": "see proof", "answer_type": "rubric"},
        {"prompt": "Why do alleles segregate?", "answer": "meiosis", "answer_type": "rubric"},
        {"prompt": "Why?", "answer": "because", "answer_type": "rubric", "rubric": ["Essential: ok", "Vital: x"]},
    ]
    kept, dropped = clean(rows)
    reasons = [why for _, why in dropped]
    assert len(kept) == 3 and len(dropped) == 5 and reasons[-1].startswith("clean: rubric item 1: rubric item")
    assert any("empty answer" in r for r in reasons) and any("names none of 2 options" in r for r in reasons)
    assert any("not finite" in r for r in reasons) and any("has no number" in r for r in reasons)
    subjects = [rule_subject(r) for r in kept]
    assert subjects == ["physics", "math", "biology"]
    split, dropped = split_kind(kept, subjects)
    assert [r["kind"] for r in split] == ["verifiable", "open"] and split[0]["answer"] == "6 m"
    assert dropped[0][1] == "split: open-ended math is dropped"


LONG = "A ball is thrown upward with an initial speed of 12 m/s. How long until it reaches the top of its path?"


def test_dedup_removes_exact_and_near_duplicates_and_drops_conflicting_ones() -> None:
    rows = [
        {"id": "a", "prompt": LONG, "answer": "1.2 s", "answer_type": "quantity"},
        {"id": "b", "prompt": "  " + LONG.replace(" ", "   "), "answer": "1200 ms", "answer_type": "quantity"},
        {"id": "c", "prompt": LONG.replace("path", "flight"), "answer": "1.21 s", "answer_type": "quantity"},
        {"id": "d", "prompt": LONG.replace("12 m/s", "24 m/s"), "answer": "2.4 s", "answer_type": "quantity"},
        {"id": "e", "prompt": "Which is heavier, CO2 or H2O?", "answer": "CO2", "answer_type": "exact"},
        {"id": "f", "prompt": "Which is heavier, CO2 or H2O? ", "answer": "H2O", "answer_type": "exact"},
        {"id": "g", "prompt": "bio: Aa x aa. share aa?", "answer": "1/2", "answer_type": "exact"},
        {"id": "h", "prompt": "bio: AA x aa. share aa?", "answer": "0", "answer_type": "exact"},  # case matters
    ]
    kept, dropped = deduplicate(rows)
    assert [r["id"] for r in kept] == ["a", "d", "g", "h"]  # b, c: equivalent answers (units converted)
    why = {r["id"]: reason for r, reason in dropped}
    assert why["b"].startswith("dedup: duplicate of 'a'") and why["c"].startswith("dedup: duplicate of 'a'")
    assert "conflicting" in why["e"] and "conflicting" in why["f"]


def test_decontamination_drops_training_rows_that_overlap_evaluation_items() -> None:
    train = [{"id": "t1", "prompt": LONG.replace("path", "arc")}, {"id": "t2", "prompt": "chem: molar mass of CO2?"},
             {"id": "t3", "prompt": LONG.upper()}]  # fmt: skip
    kept, dropped = decontaminate(train, [{"id": "e1", "prompt": LONG}])
    assert [r["id"] for r in kept] == ["t2", "t3"]  # t3: case is kept, so it is a different text
    assert dropped[0][1] == "decontaminate: overlaps evaluation item 'e1'"
    assert decontaminate(train, []) == (train, [])


def test_greedy_selection_against_brute_force() -> None:
    candidates = ["a b c d e f", "a b c d", "e f g h i", "x y z w", "a b c d e f g h i", "g h i j k"]
    best = {k: max(coverage(candidates, s) for s in itertools.combinations(range(len(candidates)), k))
            for k in (1, 2, 3)}  # fmt: skip
    for k in (1, 2, 3):
        picked = greedy_select(candidates, k)
        assert coverage(candidates, picked) >= (1 - 1 / math.e) * best[k]
    assert coverage(candidates, greedy_select(candidates, 1)) == best[1]
    assert greedy_select(candidates, 2) == [4, 5]  # 6 new 4-grams, then 2 (g h i j, h i j k)
    assert coverage(candidates, [4, 5]) == best[2] == 8
    # every greedy pick has the largest marginal gain at its turn
    covered: set = set()
    for i in greedy_select(candidates, 3):
        gains = [len(ngrams(c) - covered) for c in candidates]
        assert gains[i] == max(gains)
        covered |= ngrams(candidates[i])
    assert greedy_select(["a b c d", "a b c d"], 2) == [0]  # a duplicate adds nothing
    assert coverage(candidates, greedy_select(candidates, 3)) >= coverage(candidates, random_select(candidates, 3))


def test_a_judge_writes_rubrics_for_open_items_that_lack_one() -> None:
    good = "\n".join(["- Essential: states the law", "Important: gives direction", "Optional: units",
                      "Pitfall: reverses", "Essential: names the change", "nonsense line"])  # fmt: skip
    engine = ScriptedEngine(lambda prompt, i: good if "alleles" in prompt else "I cannot help")
    rubrics = generate_rubrics(engine, [{"prompt": "Why do alleles segregate?", "answer": "meiosis"},
                                        {"prompt": "Why is the sky blue?", "answer": "scattering"}])  # fmt: skip
    assert rubrics[0] is not None and len(rubrics[0]) == 5 and rubrics[1] is None
    assert engine.calls == 1


def test_curate_runs_every_stage_and_drops_what_the_policy_solves_every_time() -> None:
    problems, samples = generate(DrSciConfig(n=200, seed=1))
    target = {p["prompt"]: s["target"] for p, s in zip(problems, samples, strict=True)}
    train = [p for p in problems if p["split"] == "train"]
    heldout = [p for p in problems if p["split"] == "heldout"]
    solved = {p["prompt"] for p in train[::3]}

    def policy_script(prompt: str, i: int) -> str:  # solved prompts always right; others right 1 in 4
        return target[prompt] if prompt in solved or i == 0 else "#wrong"

    rows = [*train, {**train[1], "answer": ""}, {**train[2], "prompt": train[2]["prompt"] + " "}]
    out = curate(rows, heldout, CurationConfig(k=4), policy=ScriptedEngine(policy_script), score=row_scorer(
        RubricScorer(KeywordJudge())))  # fmt: skip
    assert out.counts["clean"]["dropped"] == 1 and out.counts["dedup"]["dropped"] == 1
    assert out.counts["difficulty"]["dropped"] == len(solved)
    assert {r["pass_rate"] for r in out.rows} == {0.25}
    assert sum(c["dropped"] for c in out.counts.values()) == len(out.dropped) == len(rows) - len(out.rows)


def test_judge_engine_in_a_training_config_grades_rubric_items_through_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import reasonloop.tasks.engines as engines
    from reasonloop.tasks.rewards import CompositeReward
    from reasonloop.trainers.config import TrainConfig
    from reasonloop.trainers.engines import reward_functions

    made = []

    def fake_make_engine(name: str, **kwargs: object) -> ScriptedEngine:
        made.append((name, kwargs["base_url"]))
        return ScriptedEngine(lambda prompt, i: "YES" if "I=V/R" in prompt.split("Response:")[1] else "NO")

    monkeypatch.setattr(engines, "make_engine", fake_make_engine)
    config = TrainConfig(rewards="unified", judge="engine", judge_url="http://judge:8000")
    reward = CompositeReward(config.reward_weights(), reward_functions(config))
    rows = [
        {"answer": "halves", "answer_type": "rubric", "rubric": RUBRIC},
        {"answer": "6 m", "answer_type": "quantity"},
    ]
    result = reward(["q", "q"], ["I=V/R;#halves", "#6 m"], **columns(rows))
    # the judge said YES to every question about the first response: all items, pitfall included
    assert made == [("openai", "http://judge:8000")] and result.components["unified"] == pytest.approx([1 - 2, 1.0])
    assert reward.drain_metrics()["judge/questions"] == 6
    with pytest.raises(ValueError, match="judge-url"):
        TrainConfig(judge="engine")


def test_a_judge_engine_classifies_subjects_in_one_call() -> None:
    from reasonloop.tasks.curation.clean import judge_subjects

    engine = ScriptedEngine(lambda prompt, i: "chemistry." if "mol" in prompt.split("Question:")[1] else "poetry")
    rows = [{"prompt": "How many mol of O2?"}, {"prompt": "Why is the sky blue?"}]
    assert judge_subjects(engine, rows) == ["chemistry", "general_science"]  # an unknown answer is general
    assert engine.calls == 1
