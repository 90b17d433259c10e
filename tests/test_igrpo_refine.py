"""iGRPO's refinement format: the SFT data that teaches it, judge-graded selection, entropy per
stage, and the two-pass evaluation (tasks/recipes/igrpo_refine.py, trainers/igrpo.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from reasonloop.tasks.engines import make_engine
from reasonloop.tasks.recipes.igrpo_refine import (
    REFINE_TEMPLATES,
    RefineDataConfig,
    plan_rows,
    refine_data,
    refinement_prompt,
    template_text,
)
from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type
from reasonloop.tasks.rewards.rubric import RubricScorer
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.evaluate import two_pass_stats
from tests.test_trainer import igrpo_script
from tests.trainer_helpers import arith_store, make_trainer


def test_plan_rows_targets_and_right_share() -> None:
    rng = random.Random(0)
    drafts = [("#5", False, "w1"), ("#7", True, "r1"), ("#6", False, "w2"), ("7#7", True, "r2"), ("=#7", True, "r3")]
    policy_first = plan_rows(drafts, "2+5=#7", RefineDataConfig(max_right_share=0.5), rng)
    fixes = [r for r in policy_first if r[0] != r[1]]
    assert [d for d, _, _ in fixes] == ["#5", "#6"] and {t for _, t, _ in fixes} <= {"#7", "7#7", "=#7"}
    assert all(ids[0] in ("w1", "w2") and ids[1] in ("r1", "r2", "r3") for _, _, ids in fixes)
    kept = [r for r in policy_first if r[0] == r[1]]
    assert len(kept) == 2, "right rows capped at half of the problem's rows"
    gold = plan_rows(drafts, "2+5=#7", RefineDataConfig(target="gold", max_right_share=0.0), rng)
    assert [(d, t, ids) for d, t, ids in gold] == [("#5", "2+5=#7", ["w1"]), ("#6", "2+5=#7", ["w2"])]
    # All wrong and no gold chain: nothing to teach; all right: one "keep it" row.
    assert plan_rows([("#1", False, "a")], None, RefineDataConfig(), rng) == []
    assert plan_rows([("#7", True, "a"), ("=#7", True, "b")], None, RefineDataConfig(), rng) in (
        [("#7", "#7", ["a"])], [("=#7", "=#7", ["b"])],
    )  # fmt: skip
    assert len(plan_rows([("#1", False, "a"), ("#1", False, "b")], "#7", RefineDataConfig(), rng)) == 1


def test_templates_and_config_validation() -> None:
    assert template_text("repeat") == REFINE_TEMPLATES["repeat"]
    assert (
        refinement_prompt("1+2=", "1+2=", "#4", "review", "") == "1+2=#4\nreview the answer above and correct it:\n1+2="
    )
    assert refinement_prompt("q", "q", "d", "{question}|{draft}", "") == "q|d"
    chat = refinement_prompt([{"role": "user", "content": "q"}], "q", "d", "repeat", "fix it")
    assert chat == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "d"},
                    {"role": "user", "content": "fix it"}]  # fmt: skip
    with pytest.raises(ValueError, match="refinement template"):
        TrainConfig(algo="igrpo", igrpo_template="no placeholders")
    with pytest.raises(ValueError, match="igrpo_select"):
        TrainConfig(algo="igrpo", igrpo_select="oracle")
    with pytest.raises(ValueError, match="target"):
        RefineDataConfig(target="teacher")
    assert TrainConfig(algo="igrpo", igrpo_select="judge").igrpo_select == "judge"


def test_two_pass_stats_by_hand() -> None:
    stats = two_pass_stats([True, True, False, False, False], [True, False, True, False, True])
    assert stats["draft_accuracy"] == 0.4 and stats["refine_accuracy"] == 0.6
    assert stats["w_to_c"] == pytest.approx(2 / 3) and stats["c_to_w"] == 0.5
    assert stats["refine_minus_draft"] == pytest.approx(0.2)


class WrongDraftJudge:
    """A judge that says YES only to the answer `#2` (a wrong draft in igrpo_script)."""

    name = "wrong-draft"

    def __call__(self, questions):
        return [q.response.strip() == "#2" for q in questions]


def test_judge_selection_picks_what_the_judge_grades_best(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "s")
    trainer = make_trainer(tiny_model_dir, store, tmp_path, scripted=False, algo="igrpo", group_size=8,
                           igrpo_drafts=3, igrpo_select="judge")  # fmt: skip
    assert trainer.draft_judge is not None and trainer.draft_judge.judge.name == "keyword"
    trainer.draft_judge = RubricScorer(WrongDraftJudge())
    trainer.engine = make_engine("fake", script=igrpo_script)
    metrics = trainer.train_step()
    drafts = {
        d["id"]: d for d in store.query("SELECT id, sample_idx, reward FROM rollouts WHERE stage = 'draft'").to_pylist()
    }
    parents = [drafts[r["parent_rollout_id"]] for r in store.query("SELECT parent_rollout_id FROM rollouts WHERE stage = 'refine'").to_pylist()]  # fmt: skip
    assert parents and all(p["sample_idx"] == 2 and p["reward"] == 0.0 for p in parents), (
        "the judge's pick, not the reward's"
    )
    assert metrics["igrpo/selected_draft_reward_mean"] == 0.0
    assert metrics["igrpo/judge/questions"] == 4 * 3 and metrics["igrpo/judge/calls"] == 1


def test_entropy_is_logged_per_stage(sft_model: Path, model_kind: str, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "s", chat=model_kind == "bpe")
    trainer = make_trainer(sft_model, store, tmp_path, scripted=False, algo="igrpo", group_size=4, igrpo_drafts=2,
                           max_completion_length=16, rewards="exact")  # fmt: skip
    metrics = trainer.train_step()
    assert metrics["igrpo/entropy_draft"] > 0 and metrics["igrpo/entropy_refine"] > 0
    stored = store.query("SELECT stage, avg(entropy) AS e FROM rollouts GROUP BY stage").to_pylist()
    by_stage = {r["stage"]: r["e"] for r in stored}
    assert by_stage["draft"] == pytest.approx(metrics["igrpo/entropy_draft"])
    assert by_stage["refine"] == pytest.approx(metrics["igrpo/entropy_refine"])


def test_refine_data_from_the_policys_drafts(sft_model: Path, model_kind: str, tmp_path: Path) -> None:
    from reasonloop.tasks.engines.transformers_engine import TransformersEngine
    from reasonloop.trainers.sft import encode_sample

    chat = model_kind == "bpe"
    store = arith_store(tmp_path / "s", n=300, chat=chat)
    engine = TransformersEngine(sft_model, batch_size=64)
    config = RefineDataConfig(drafts=4, max_new_tokens=24, limit=40, seed=1)
    counts = refine_data(store, engine, engine.tokenizer, config)
    assert counts["drafts"] == 40 * 4 and 0 < counts["drafts_right"] < counts["drafts"]
    assert counts["samples"] == counts["committed"] > 0 and counts["samples_fixing"] > 0
    rows = store.query("SELECT * FROM sft_samples WHERE source = 'igrpo_refine'").to_pylist()
    drafts = {d["id"]: d for d in store.query("SELECT * FROM rollouts WHERE stage = 'draft'").to_pylist()}
    problems = {p["id"]: p for p in store.query("SELECT id, prompt, answer FROM problems").to_pylist()}
    for row in rows:
        draft = drafts[row["source_ids"][0]]
        gold = problems[row["problem_id"]]["answer"]
        assert draft["problem_id"] == row["problem_id"]
        assert score_by_answer_type([""], [row["target"]], [gold], ["exact"])[0] == 1.0, "every target is right"
        if chat:
            assert row["messages"][-2] == {"role": "assistant", "content": draft["completion"]}
            assert row["messages"][-1]["role"] == "user"
            prompt_ids, target_ids, _ = encode_sample(engine.tokenizer, row)
            assert draft["completion"] in engine.tokenizer.decode(prompt_ids), "the draft is context"
            trained = engine.tokenizer.decode(target_ids, skip_special_tokens=True)
            assert trained.strip() == row["target"], "only the answer turn is trained"
        else:
            assert (
                row["prompt"]
                == f"{problems[row['problem_id']]['prompt']}{draft['completion']}\n"
                + problems[row["problem_id"]]["prompt"]
            )
    again = refine_data(store, engine, engine.tokenizer, config)
    assert again["committed"] == 0, "a rerun adds nothing"


def test_two_pass_evaluation_uses_the_training_refinement_prompt(
    sft_model: Path, model_kind: str, tmp_path: Path
) -> None:
    from reasonloop.trainers.run import evaluate_model

    store = arith_store(tmp_path / "s", n=400, chat=model_kind == "bpe")
    result = evaluate_model(store, sft_model, limit=32, max_new_tokens=24, refine=True, pass_k=0)
    two = result["two_pass"]
    assert two["n"] == result["n"] == 32 and two["draft_accuracy"] == pytest.approx(result["accuracy"])
    assert 0.0 <= two["refine_accuracy"] <= 1.0 and "pass@4" not in result


def test_the_refine_sft_flow_runs_end_to_end(harness, sft_model: Path, model_kind: str, tmp_path: Path) -> None:
    """drafts -> refinement rows -> SFT on the mix -> two-pass evaluation of start and result."""
    from reasonloop.flows.igrpo import refine_sft

    store = arith_store(tmp_path / "store", n=300, chat=model_kind == "bpe")
    result = refine_sft(
        str(store.root), str(sft_model), str(tmp_path / "out"), data={"limit": 48, "drafts": 4},
        sft={"steps": 20, "batch_size": 16, "lr": 1e-4}, eval_limit=32, max_new_tokens=24,
    )  # fmt: skip
    assert result["data"]["samples"] == result["data"]["committed"] > 0
    assert Path(result["checkpoint"], "config.json").exists()
    for name in ("start", "refine_sft"):
        two = result["evals"][name]["two_pass"]
        assert two["n"] == result["evals"][name]["n"] > 0 and two["draft_accuracy"] == pytest.approx(
            result["evals"][name]["accuracy"]
        )
    sources = store.query("SELECT source, count(*) AS n FROM sft_samples GROUP BY source ORDER BY source").to_pylist()
    assert [s["source"] for s in sources] == ["arith", "igrpo_refine"]


def test_the_igrpo_and_evaluate_commands(harness, sft_model_dir: Path, tmp_path: Path) -> None:
    """`reasonloop igrpo refine-data` and `reasonloop evaluate --refine` through the CLI."""
    import json

    from typer.testing import CliRunner

    from reasonloop.flows.cli import app

    store = arith_store(tmp_path / "store", n=300)
    runner, root = CliRunner(), ["--root", str(store.root)]

    def run(*args: str) -> dict:
        result = runner.invoke(app, [*args, *root])
        assert result.exit_code == 0, result.output
        return json.loads(result.output.strip().splitlines()[-1])

    data = run("igrpo", "refine-data", "--model", str(sft_model_dir), "--limit", "16", "--max-new-tokens", "24")
    assert data["problems"] == 16 and data["drafts"] == 64 and data["committed"] > 0
    evaluated = run("evaluate", "--model", str(sft_model_dir), "--limit", "16", "--max-new-tokens", "24", "--refine",
                    "--template", "review")  # fmt: skip
    assert evaluated["two_pass"]["n"] == evaluated["n"] > 0 and "pass@4" in evaluated
    bad = runner.invoke(app, ["evaluate", "--model", str(sft_model_dir), "--refine", "--template", "x", *root])
    assert bad.exit_code == 2 and "refinement template" in bad.output


def test_refine_data_from_a_stored_runs_drafts(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`from_run`: the rows come from rollouts already in the store (an iGRPO run's drafts here);
    nothing is sampled, and each row names the drafts it pairs."""
    store = arith_store(tmp_path / "s")
    trainer = make_trainer(tiny_model_dir, store, tmp_path, scripted=False, algo="igrpo", group_size=8, igrpo_drafts=3)
    trainer.engine = make_engine("fake", script=igrpo_script)
    trainer.train_step()
    before = store.query("SELECT count(*) AS n FROM rollouts").column("n")[0].as_py()
    config = RefineDataConfig(from_run="t", from_stage="draft", max_right_share=0.0)
    counts = refine_data(store, None, trainer.tokenizer, config)
    assert counts["drafts"] == 4 * 3 and counts["drafts_right"] == 4 and counts["samples"] == 4 * 2
    assert store.query("SELECT count(*) AS n FROM rollouts").column("n")[0].as_py() == before
    drafts = {r["id"]: r for r in store.query("SELECT id, completion, sample_idx FROM rollouts").to_pylist()}
    for row in store.query("SELECT target, source_ids FROM sft_samples WHERE source = 'igrpo_refine'").to_pylist():
        wrong, right = (drafts[i] for i in row["source_ids"])
        assert wrong["sample_idx"] != 1 and right["sample_idx"] == 1 and row["target"] == right["completion"]
    with pytest.raises(ValueError, match="no rollouts of run 'nope'"):
        refine_data(store, None, trainer.tokenizer, RefineDataConfig(from_run="nope"))
