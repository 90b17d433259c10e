"""Dr. SCI with real parts: the curation flow on the store (both model kinds as the pass-rate
policy), the dynamic curriculum swapping problems from stored rollouts, unified rule + rubric RL,
exploration-expanding SFT rows, and `store ingest --from-hf`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.dr_sci import DrSciConfig, generate
from reasonloop.tasks.rewards import CompositeReward
from reasonloop.trainers.config import TrainConfig


def drsci_store(root: Path, n: int = 120) -> ReplayStore:
    store = ReplayStore(root)
    problems, samples = generate(DrSciConfig(n=n, seed=2))
    store.write("problems", problems)
    store.write("sft_samples", samples)
    return store


def test_the_curation_flow_commits_curated_rows_quarantines_drops_and_reruns_idempotently(
    harness: None, tmp_path: Path, base_model: Path
) -> None:
    from reasonloop.flows.drsci import curate_drsci

    store = drsci_store(tmp_path / "store")
    train = store.query("SELECT * FROM problems WHERE split = 'train' ORDER BY id LIMIT 2").to_pylist()
    heldout = store.query("SELECT prompt FROM problems WHERE split = 'heldout' LIMIT 1").to_pylist()[0]["prompt"]
    bad = [
        {"prompt": train[0]["prompt"] + "  ", "answer": "1 kg", "answer_type": "quantity", "source": "user"},
        {"prompt": "Explain why the sky is blue.", "answer": "scattering", "answer_type": "rubric", "source": "user"},
        {"prompt": "Prove the polynomial x^2+1 has no real root.", "answer": "proof", "answer_type": "rubric",
         "rubric": ["Essential: uses the discriminant"], "source": "user"},
        {"prompt": heldout, "answer": "x", "answer_type": "exact", "source": "user"},
        {"prompt": "pick one", "answer": "F", "answer_type": "choice", "choices": ["a", "b"], "source": "user"},
    ]  # fmt: skip
    assert store.write("problems", bad).committed == len(bad)
    config = {"k": 2, "max_new_tokens": 16}
    summary = curate_drsci(str(store.root), config=config, model=str(base_model))
    stages = summary["stages"]
    assert list(stages) == ["clean", "classify", "split", "dedup", "decontaminate", "rubrics", "difficulty"]
    assert stages["clean"]["dropped"] == 1 and stages["split"]["dropped"] == 1
    assert stages["dedup"]["dropped"] == 2  # train[0] and its near copy: the answers disagree
    assert stages["decontaminate"]["dropped"] == 1 and stages["rubrics"]["dropped"] == 1
    curated = store.query("SELECT * FROM problems WHERE source = 'dr_sci_curated'").to_pylist()
    assert len(curated) == summary["committed"] == stages["difficulty"]["kept"]
    assert all(r["pass_rate"] is not None and r["difficulty"] == pytest.approx(1 - r["pass_rate"]) for r in curated)
    lineage = json.loads(curated[0]["metadata"])
    assert {"subject", "kind", "source_problem_id", "curation"} <= set(lineage)
    reasons = store.query("SELECT reason, validator FROM rejected WHERE table_name = 'problems'").to_pylist()
    assert len(reasons) == summary["rejected"] == sum(s["dropped"] for s in stages.values())
    assert {r["validator"] for r in reasons} >= {"curation:clean", "curation:dedup", "curation:decontaminate"}
    again = curate_drsci(str(store.root), config=config, model=str(base_model))
    assert again["committed"] == 0 and again["duplicates"] == summary["committed"]  # a rerun duplicates nothing
    assert store.query("SELECT count(*) AS n FROM rejected").to_pylist()[0]["n"] == len(reasons)


def curriculum_store(root: Path) -> tuple[ReplayStore, dict[str, str]]:
    """Seven arith problems with recorded pass rates: 3 in D_train, 3 pending, 1 solved; their ids
    by name."""
    from reasonloop.tasks.recipes.arith import ArithConfig
    from reasonloop.tasks.recipes.arith import generate as arith

    problems, _ = arith(ArithConfig(n=40, max_digits=2, seed=0))
    rates = {"t1": 0.75, "t2": 0.8, "t3": 0.875, "p_easy": 0.5, "p_mid": 0.25, "p_hard": 0.0, "solved": 1.0}
    store = ReplayStore(root)
    store.write(
        "problems", [{**p, "pass_rate": r, "source": "cur"} for p, r in zip(problems, rates.values(), strict=False)]
    )
    by_rate = {r["pass_rate"]: r["id"] for r in store.query("SELECT id, pass_rate FROM problems").to_pylist()}
    return store, {name: by_rate[rate] for name, rate in rates.items()}


def test_the_dynamic_curriculum_swaps_in_the_easiest_pending_problem_from_stored_rollouts(
    tmp_path: Path, sft_model: Path
) -> None:
    from reasonloop.trainers.policy import load_policy
    from reasonloop.trainers.rl import RLTrainer

    store, ids = curriculum_store(tmp_path / "store")
    t1_prompt = store.query("SELECT prompt FROM problems WHERE id = $i", {"i": ids["t1"]}).to_pylist()[0]["prompt"]

    def acc(prompts: list, completions: list, **_: object) -> list[float]:  # t1 is always right, the rest never
        return [1.0 if t1_prompt in str(p) else 0.0 for p in prompts]

    config = TrainConfig(steps=3, prompts_per_step=3, group_size=4, max_completion_length=8, lr=1e-4, source="cur",
                         rewards="acc", dynamic_curriculum=True, curriculum_min_samples=4)  # fmt: skip

    def trainer() -> RLTrainer:
        policy = load_policy(sft_model, config)
        return RLTrainer(config, model=policy.model, tokenizer=policy.tokenizer, store=store, run_id="cur",
                         output_dir=tmp_path / "out", reward=CompositeReward({"acc": 1.0}, {"acc": acc}))  # fmt: skip

    first = trainer()
    picked0 = {p["id"] for p in first.pick_problems(0, "pick/0", 3)}
    assert picked0 == {ids["t1"], ids["t2"], ids["t3"]}  # D_train; pending waits, solved never comes
    first.train_step()  # t1: 4 rollouts, accuracy 1 > 0.9 -> retired
    picked1 = {p["id"] for p in first.pick_problems(1, "pick/0", 3)}
    assert picked1 == {ids["t2"], ids["t3"], ids["p_easy"]}
    assert first.curriculum.stats["curriculum/retired"] == 1 and first.curriculum.stats["curriculum/from_pending"] == 1
    metrics = first.train_step()
    assert metrics["curriculum/retired"] == 1 and metrics["curriculum/pending_left"] == 2
    # the set is a function of the store: a fresh trainer (a resume) computes the same one
    assert (
        {p["id"] for p in trainer().pick_problems(2, "pick/0", 3)}
        == {p["id"] for p in first.pick_problems(2, "pick/0", 3)}
        == {ids["t2"], ids["t3"], ids["p_easy"]}
    )


def test_unified_rule_and_rubric_rl_records_judge_cost(tmp_path: Path, sft_model: Path) -> None:
    from reasonloop.trainers.run import run_rl

    store = drsci_store(tmp_path / "store", n=200)
    config = TrainConfig(steps=2, prompts_per_step=6, group_size=4, max_completion_length=24, lr=1e-4,
                         source="dr_sci", rewards="unified", seed=1)  # fmt: skip
    run_rl(store, config, run_id="uni", model=sft_model)
    metrics = store.query("SELECT metrics FROM train_metrics WHERE run_id = 'uni' ORDER BY step").to_pylist()
    questions = sum(dict(m["metrics"]).get("judge/questions", 0.0) for m in metrics)
    opened = store.query(
        "SELECT count(*) AS n FROM rollouts r JOIN problems p ON p.id = r.problem_id "
        "WHERE r.run_id = 'uni' AND p.answer_type = 'rubric'"
    ).to_pylist()[0]["n"]  # fmt: skip
    assert questions == opened * 6  # the final answer + 5 rubric items per open-ended rollout, nothing cached
    scored = store.query("SELECT count(rewards['unified']) AS n, count(*) AS total FROM rollouts").to_pylist()[0]
    assert scored["n"] == scored["total"] == 2 * 6 * 4  # every rollout scored: rule or rubric


def test_exploration_sft_picks_new_ngrams_and_beats_random_coverage(
    harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reasonloop.flows import drsci
    from reasonloop.tasks.engines.fake import ScriptedEngine

    store = drsci_store(tmp_path / "store", n=60)
    gold = {r["prompt"]: r["target"] for r in store.query("SELECT prompt, target FROM sft_samples").to_pylist()}

    def script(prompt: str, i: int) -> str:  # correct chains with different padding words; one wrong
        chain, answer = gold[prompt].rsplit("#", 1)
        return "#wrong" if i == 3 else f"{chain.replace(';', ' ; ')} {'so' if i else ''} {'thus' * i} #{answer}"

    import reasonloop.tasks.engines as engines

    monkeypatch.setattr(engines, "make_engine", lambda name, **kw: ScriptedEngine(script))
    out = drsci.eesft_task.fn(str(store.root), "dr_sci", ["m"], temperatures=(1.0,), samples=4, per_problem=2,
                              max_new_tokens=256)  # fmt: skip
    assert out["candidates"] == 3 * out["problems"] and out["picked"] == out["committed"] > 0
    assert out["coverage_greedy"] >= out["coverage_random"]
    rows = store.query("SELECT target, source_ids, problem_id FROM sft_samples WHERE source = 'dr_sci_eesft'")
    assert all(r["source_ids"] == [r["problem_id"]] and "#wrong" not in r["target"] for r in rows.to_pylist())


def test_ingest_from_a_datasets_folder_maps_columns(tmp_path: Path) -> None:
    import datasets
    from typer.testing import CliRunner

    from reasonloop.flows.cli import app

    folder = tmp_path / "hf"
    datasets.Dataset.from_dict(
        {"question": ["What is 2+2?", "", "Name a noble gas."], "answer": ["4", "x", "neon"], "extra": [1, 2, 3]}
    ).save_to_disk(str(folder))
    root = tmp_path / "store"
    args = ["store", "ingest", "problems", "--from-hf", str(folder), "--split", "train",
            "--map", "prompt=question,answer=answer", "--set", "answer_type=exact", "--root", str(root)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "committed 2" in result.output and "rejected 1" in result.output  # the empty prompt, with its reason
    rows = ReplayStore(root).query("SELECT prompt, answer, split FROM problems ORDER BY prompt").to_pylist()
    assert rows == [{"prompt": "Name a noble gas.", "answer": "neon", "split": "train"},
                    {"prompt": "What is 2+2?", "answer": "4", "split": "train"}]  # fmt: skip
    bad = CliRunner().invoke(app, ["store", "ingest", "problems", "--from-hf", str(folder), "--map", "prompt",
                                   "--root", str(root)])  # fmt: skip
    assert bad.exit_code == 2 and "--map" in bad.output


def test_chat_items_reach_the_pass_rate_policy_as_conversations(tmp_path: Path, base_model: Path) -> None:
    """`drsci synth --chat` rows keep `messages` through curation, and the pass-rate policy gets
    them as conversations (the chat-template policy of training, tasks/prompts.py)."""
    from reasonloop.flows.drsci import load_rows, row_score, synth_drsci
    from reasonloop.tasks.curation.pipeline import CurationConfig, curate, curated_row
    from reasonloop.tasks.engines.fake import ScriptedEngine
    from reasonloop.tasks.models.loading import load_tokenizer

    root = tmp_path / "store"
    synth_drsci(str(root), {"n": 40, "seed": 4}, chat=True)
    store = ReplayStore(root)
    seen: list[str] = []

    class Policy(ScriptedEngine):
        tokenizer = load_tokenizer(base_model)

        def generate(self, prompts: list, n: int, sampling: object) -> list:
            seen.extend(prompts)
            return super().generate(prompts, n, sampling)

    rows = load_rows(store, ["dr_sci"], ["train"])
    out = curate(rows, [], CurationConfig(k=2), policy=Policy(lambda p, i: "#no"), score=row_score(None))
    # conversations, which an engine renders with the model's chat template (as in training)
    assert len(seen) == len(rows) and all(isinstance(p, list) and p[-1]["role"] == "user" for p in seen)
    assert rows[0]["messages"] in seen
    from reasonloop.tasks.engines import make_engine
    from reasonloop.tasks.scheduling.difficulty import pass_rates

    real = make_engine("transformers", model=str(base_model), batch_size=8)  # renders the template itself
    rates = pass_rates(real, rows[:4], row_score(None), k=2, max_new_tokens=8)
    assert len(rates) == 4 and all(r in (0.0, 0.5, 1.0) for r in rates)
    assert all(curated_row(r, "x", "c")["messages"] == r["messages"] for r in out.rows)
