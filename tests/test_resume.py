"""Exact resume with a really killed trainer process (SIGKILL, by PID).

10 steps straight vs 5 steps, a kill after later rollouts were committed but before the next
checkpoint, then `--resume` to 10 with a different --seed: identical deterministic metrics and
identical final weights; the resumed process generates only for the 5 remaining steps; the rows
the killed process left behind are reused, not duplicated or trained on twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.arith import ArithConfig, generate
from tests.procs.spawn import REPO

DETERMINISTIC = [
    "reward_mean", "reward_std", "frac_zero_std_groups", "grad_norm", "clip_ratio_low", "clip_ratio_high",
    "completion_length_mean", "completion_length_max", "entropy", "train_entropy", "lr", "batch_rows",
]  # fmt: skip


def train_cmd(root: Path, model: Path, run_id: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "reasonloop.flows.cli", "train", "--run-id", run_id, "--model", str(model), "--root", str(root),
        "--steps", "10", "--prompts-per-step", "4", "--group-size", "4", "--max-completion-length", "12",
        "--lr", "1e-3", "--num-iterations", "2", "--torch-threads", "1", *extra,
    ]  # fmt: skip


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait()


def start(procs: list, cmd: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    return proc


def test_killed_run_resumes_exactly(tmp_path: Path, sft_model_dir: Path, procs: list) -> None:
    root = tmp_path / "store"
    problems, _ = generate(ArithConfig(n=300, max_digits=2, seed=3))
    ReplayStore(root).write("problems", problems)

    straight = start(procs, train_cmd(root, sft_model_dir, "straight"))
    out, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-2000:]

    killed = start(procs, train_cmd(root, sft_model_dir, "killed", "--save-every", "5"))
    rollouts = root / "rollouts" / "run_id=killed"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(rollouts.glob("part-*.parquet"))) < 7:
        time.sleep(0.005)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    checkpoints = root / "checkpoints" / "killed"
    assert (checkpoints / "checkpoint-000005").exists()
    assert not (checkpoints / "checkpoint-000010").exists(), "killed too late to test anything"
    left_behind = len(list(rollouts.glob("part-*.parquet")))
    assert left_behind >= 7

    resumed = start(procs, train_cmd(root, sft_model_dir, "killed", "--resume", "--seed", "999"))
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    assert re.search(r"to step 10 \(5 generation calls\)", out), out

    store = ReplayStore(root)
    metrics = {
        run: store.query(
            "SELECT step, loss, metrics FROM train_metrics WHERE run_id = $r ORDER BY step", {"r": run}
        ).to_pylist()
        for run in ("straight", "killed")
    }
    assert [m["step"] for m in metrics["killed"]] == list(range(1, 11)), "one metrics row per step"
    for a, b in zip(metrics["straight"], metrics["killed"], strict=True):
        ma, mb = dict(a["metrics"]), dict(b["metrics"])
        assert a["loss"] == b["loss"], a["step"]
        assert {k: ma.get(k) for k in DETERMINISTIC} == {k: mb.get(k) for k in DETERMINISTIC}, a["step"]
    assert any(dict(m["metrics"])["grad_norm"] > 0 for m in metrics["straight"]), "the run learned something"

    wa = load_file(root / "checkpoints" / "straight" / "checkpoint-000010" / "model.safetensors")
    wb = load_file(checkpoints / "checkpoint-000010" / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa), "identical final weights"

    counts = store.query(
        "SELECT count(*) AS n, count(DISTINCT id) AS d, count(DISTINCT policy_version) AS v FROM rollouts "
        "WHERE run_id = 'killed'"
    ).to_pylist()[0]
    assert counts == {"n": 10 * 4 * 4, "d": 10 * 4 * 4, "v": 10}, "no rollout twice; the left-behind rows were reused"
