"""Prefect flows under Prefect's test harness (one temporary server for the module)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.prefect_env import configure_prefect


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory):
    configure_prefect(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def test_demo_quick_runs_end_to_end_through_the_store(harness, tmp_path: Path) -> None:
    from flows.demo import demo
    from flows.prefect_env import no_heartbeat
    from storage import ReplayStore

    with no_heartbeat():
        result = demo(str(tmp_path / "store"), quick=True)
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


def test_synthesis_is_cached_while_the_store_holds_its_rows(harness, tmp_path: Path) -> None:
    import shutil

    from prefect import flow

    from flows.pipelines import synthesize
    from storage import ReplayStore

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
    from tasks.recipes.veritime import VeriTimeConfig, generate

    problems, samples = generate(VeriTimeConfig(n=6000, seed=0))
    heldout = {p["prompt"] for p in problems if p["split"] == "heldout"}
    train = {s["prompt"] for s in samples if s["split"] == "train"} | {
        p["prompt"] for p in problems if p["split"] == "train"
    }
    assert len(heldout) >= 512 and not heldout & train
    assert os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"
