"""Prefect flows under Prefect's test harness (one temporary server for the module)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_demo_quick_runs_end_to_end_through_the_store(harness, tmp_path: Path, tokenizer: str) -> None:
    from reasonloop.flows.demo import demo
    from reasonloop.flows.prefect_env import no_heartbeat
    from reasonloop.storage import ReplayStore

    with no_heartbeat():
        result = demo(str(tmp_path / "store"), quick=True, tokenizer=tokenizer)
    report = Path(result["report"])
    assert report.exists() and (report.parent / "reward.png").exists() and (report.parent / "accuracy.png").exists()
    text = report.read_text()
    assert "base → SFT" in text and "SFT → RL" in text and "reasonloop store query" in text
    store = ReplayStore(tmp_path / "store")
    steps = store.query("SELECT count(*) AS n FROM train_metrics WHERE run_id LIKE 'demo-rl-%'").to_pylist()[0]["n"]
    assert steps >= 2, "at least two real RL steps"
    rollouts = store.query("SELECT count(DISTINCT policy_version) AS v, count(*) AS n FROM rollouts").to_pylist()[0]
    assert rollouts["v"] >= 2 and rollouts["n"] > 0
    assert set(result["evals"]) == {"base", "sft", "rl"}
    assert all(e["n"] == 32 for e in result["evals"].values())
    if tokenizer == "bpe":  # the chat template is in what the model saw
        prompts = store.query("SELECT prompt FROM rollouts LIMIT 5").column("prompt").to_pylist()
        assert all(p.startswith("<|im_start|>user\n") for p in prompts)


def test_synthesis_is_cached_while_the_store_holds_its_rows(harness, tmp_path: Path) -> None:
    import shutil

    from prefect import flow

    from reasonloop.flows.pipelines import synthesize
    from reasonloop.storage import ReplayStore

    @flow
    def synth_state(root: str, config: dict) -> str:
        return synthesize(root, config, return_state=True).name

    root, config = str(tmp_path / "store"), {"n": 50, "seed": 3}
    assert synth_state(root, config) == "Completed"
    assert synth_state(root, config) == "Cached", "same inputs, rows still in the store"
    assert synth_state(root, {"n": 50, "seed": 4}) == "Completed", "other inputs"
    shutil.rmtree(root)
    assert synth_state(root, config) == "Completed", "the store was wiped: synthesize again"
    assert ReplayStore(root).query("SELECT count(*) AS n FROM problems").to_pylist()[0]["n"] > 0


def test_no_problem_is_both_training_and_held_out() -> None:
    from reasonloop.tasks.recipes.veritime import VeriTimeConfig, generate

    problems, samples = generate(VeriTimeConfig(n=6000, seed=0))
    heldout = {p["prompt"] for p in problems if p["split"] == "heldout"}
    train = {s["prompt"] for s in samples if s["split"] == "train"} | {
        p["prompt"] for p in problems if p["split"] == "train"
    }
    assert len(heldout) >= 512 and not heldout & train
    assert os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"


def test_evaluate_and_promote_both_branches(harness, tmp_path: Path, tiny_model_dir: Path, sft_model_dir: Path) -> None:
    """An arith-trained candidate beats the base model (promoted); the base model as the next
    candidate does not beat it (rejected). Both decisions are rows and reports."""
    from reasonloop.flows.prefect_env import no_heartbeat
    from reasonloop.flows.retrain import evaluate_and_promote
    from reasonloop.storage import ReplayStore
    from reasonloop.tasks.recipes.arith import ArithConfig, generate

    store = ReplayStore(tmp_path / "store")
    store.write("problems", generate(ArithConfig(n=1500, max_digits=2, seed=1))[0])
    common = {"root": str(store.root), "step": 1, "base_model": str(tiny_model_dir), "source": "arith",
              "limit": 64, "max_new_tokens": 12, "threshold": 10**9}  # fmt: skip
    with no_heartbeat():
        first = evaluate_and_promote(run_id="cand-sft", checkpoint=str(sft_model_dir), **common)
        second = evaluate_and_promote(run_id="cand-base", checkpoint=str(tiny_model_dir), **common)
    assert first["decision"] == "promoted" and first["generation"] == 1 and first["delta"] > first["stderr"]
    assert second["decision"] == "rejected" and second["generation"] == 1 and second["delta"] < 0
    rows = store.query(
        "SELECT run_id, decision, incumbent_path, generation FROM promotions ORDER BY generation, run_id"
    ).to_pylist()
    assert [(r["run_id"], r["decision"], r["incumbent_path"]) for r in rows] == [
        ("cand-base", "rejected", str(sft_model_dir)), ("cand-sft", "promoted", str(tiny_model_dir)),
    ]  # fmt: skip
    assert "Decision: promoted" in Path(first["report"]).read_text()
    assert "Decision: rejected" in Path(second["report"]).read_text()
    assert first["retrain_due_again"] is False


def test_retrain_twice_for_one_run_trains_once(harness, tmp_path: Path, tiny_model_dir: Path) -> None:
    """A duplicate RETRAIN_DUE event that starts a second run after the first finished trains nothing
    and emits nothing (the run is keyed by its run_id)."""
    from reasonloop.flows.prefect_env import no_heartbeat
    from reasonloop.flows.retrain import retrain
    from reasonloop.storage import ReplayStore
    from reasonloop.tasks.recipes.veritime import VeriTimeConfig, generate

    store = ReplayStore(tmp_path / "store")
    store.write("problems", generate(VeriTimeConfig(n=200, seed=1))[0])
    config = {"algo": "dapo", "steps": 1, "prompts_per_step": 2, "group_size": 2, "max_completion_length": 8,
              "rewards": "veritime", "source": "veritime"}  # fmt: skip
    args = {"root": str(store.root), "run_id": "retrain-x", "base_model": str(tiny_model_dir), "config": config}
    with no_heartbeat():
        first = retrain(**args)
        rollouts = store.query("SELECT count(*) AS n FROM rollouts").column("n")[0].as_py()
        second = retrain(**args)
    assert "skipped" not in first and second == {
        "run_id": "retrain-x",
        "checkpoint": first["checkpoint"],
        "skipped": "already trained",
    }
    assert store.query("SELECT count(*) AS n FROM rollouts").column("n")[0].as_py() == rollouts > 0
    assert store.query("SELECT path FROM checkpoints").column("path").to_pylist() == [first["checkpoint"]]


def _engine(url: str) -> dict:
    return {"name": "openai", "base_url": url, "model": "m", "max_concurrency": 2, "max_retries": 0, "backoff_s": 0.01}


def test_engine_synthesis_respects_the_endpoint_tag_limit_and_reruns_add_nothing(harness, tmp_path: Path) -> None:
    from reasonloop.flows.engine_synthesis import synthesize_with_engine
    from reasonloop.flows.prefect_env import no_heartbeat
    from reasonloop.storage import ReplayStore
    from reasonloop.tasks.recipes.arith import ArithConfig, generate
    from tests.procs.fake_openai import FakeOpenAI

    store = ReplayStore(tmp_path / "store")
    store.write("problems", generate(ArithConfig(n=300, seed=3))[0])
    with FakeOpenAI(delay_s=0.05) as fake, no_heartbeat():
        args = {"root": str(store.root), "engine": _engine(fake.url), "limit": 48, "chunk_size": 6, "k": 2,
                "max_in_flight": 4, "engine_concurrency": 1}  # fmt: skip
        first = synthesize_with_engine(**args)
        assert first == {"chunks": 8, "failed": 0, "committed": 96, "calls": 8}
        # 4 chunks were in flight, but the tag's limit of 1 let one chunk (2 requests) talk to the endpoint.
        assert fake.max_in_flight <= 2
        assert synthesize_with_engine(**args)["committed"] == 0  # a rerun duplicates nothing
    assert store.query("SELECT count(*) AS n FROM rollouts WHERE run_id = 'synth-engine'").column("n")[0].as_py() == 96


def test_engine_synthesis_breaker_stops_a_failing_run_and_keeps_what_succeeded(harness, tmp_path: Path) -> None:
    from reasonloop.flows.breaker import BreakerOpen
    from reasonloop.flows.engine_synthesis import synthesize_with_engine
    from reasonloop.flows.prefect_env import no_heartbeat
    from reasonloop.storage import ReplayStore
    from tests.procs.fake_openai import FakeOpenAI

    store = ReplayStore(tmp_path / "store")
    assert (
        store.write(
            "problems",
            [{"prompt": f"{'BAD' if i % 2 else 'ok'}-{i}", "answer": "x", "answer_type": "exact"} for i in range(40)],
        ).committed
        == 40
    )
    with FakeOpenAI(fail_prompt="BAD") as fake, no_heartbeat():
        with pytest.raises(BreakerOpen, match="stopping this run"):
            synthesize_with_engine(
                root=str(store.root), engine=_engine(fake.url), limit=40, chunk_size=1, k=1, max_in_flight=2,
                max_failure_rate=0.2, min_calls=5, chunk_retries=0,
            )  # fmt: skip
        asked = {r["prompt"] for r in fake.requests}
    assert len(asked) < 20, "the breaker stopped the run well before the end"
    kept = store.query("SELECT prompt FROM rollouts").column("prompt").to_pylist()
    assert kept and all(p.startswith("ok") for p in kept)
    assert set(kept) == {p for p in asked if p.startswith("ok")}, "every chunk that succeeded kept its rows"
