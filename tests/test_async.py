"""Async rollout workers and the async trainer, as real processes through the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from reasonloop.flows.processes import spawn_cli, stop_process, wait_for
from reasonloop.storage import ReplayStore
from reasonloop.storage.lineage import checkpoint_lineage
from reasonloop.tasks.recipes.arith import ArithConfig, generate
from reasonloop.tasks.recipes.chat import as_chat
from reasonloop.trainers.checkpoint import latest_checkpoint, load_meta
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.rollout_worker import newest_published
from tests.trainer_helpers import cli_options

REPO = Path(__file__).resolve().parent.parent
STEPS, K = 8, 1
CONFIG = {"algo": "dapo", "steps": STEPS, "prompts_per_step": 4, "group_size": 4, "max_completion_length": 12,
          "temperature": 1.0, "lr": 1e-4, "max_staleness": K, "publish_every": 1, "save_every": 2,
          "save_total_limit": 2, "wait_timeout_s": 120.0}  # fmt: skip


def spawn(*args: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    return spawn_cli(list(args), log, env=env, cwd=REPO)


@pytest.fixture
def arith_store(tmp_path: Path) -> ReplayStore:
    store = ReplayStore(tmp_path / "store")
    store.write("problems", generate(ArithConfig(n=400, max_digits=1, seed=2))[0])
    return store


def steps_done(store: ReplayStore, run_id: str) -> int:
    rows = store.query("SELECT max(step) AS s FROM train_metrics WHERE run_id = $r", {"r": run_id}).to_pylist()
    return rows[0]["s"] or 0


def assert_accounting(store: ReplayStore, run_id: str, out: Path) -> dict[str, int]:
    """Every consumed row obeyed the staleness bound; nothing was trained twice; every committed
    group is accounted for: consumed once, counted stale, left for zero variance, or still fresh."""
    metrics = store.query(
        "SELECT step, metrics['async/min_version'] AS lo, metrics['async/staleness_max'] AS smax "
        "FROM train_metrics WHERE run_id = $r ORDER BY step", {"r": run_id},
    ).to_pylist()  # fmt: skip
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    for m in metrics:  # the row trained at step s came from policy_version >= (s - 1) - k
        assert m["lo"] >= m["step"] - 1 - K and m["smax"] <= K, m
    state = load_meta(latest_checkpoint(out)).state
    usage, stale = state["usage"], set(state["stale_seen"]) | set(state["withdrawn"])
    assert usage and all(u == 1 for u in usage.values()), "a group trained twice"
    with store.reader() as reader:  # the lineage table says the same as the trainer's own state
        lineage = checkpoint_lineage(reader, run_id, STEPS).to_pylist()
    assert {r["group_id"] for r in lineage} == set(usage)
    assert sorted({r["step"] for r in lineage}) == list(range(1, STEPS + 1))
    assert all(r["use"] == 1 and r["status"] == "trained" and r["policy_version"] >= r["step"] - 1 - K for r in lineage)
    groups = store.query(
        "SELECT group_id, min(policy_version) AS v, count(*) AS n, coalesce(stddev_pop(reward), 0) AS sd "
        "FROM rollouts WHERE run_id = $r GROUP BY group_id", {"r": run_id},
    ).to_pylist()  # fmt: skip
    by_id = {g["group_id"]: g for g in groups}
    assert set(usage) <= set(by_id), "trained on a group the store does not hold"
    unaccounted = [
        g for g in groups if g["group_id"] not in usage and g["group_id"] not in stale and g["sd"] > 0
        and g["v"] < STEPS - 1 - K and g["n"] == CONFIG["group_size"]
    ]  # fmt: skip
    assert not unaccounted, f"committed groups lost: {unaccounted[:3]}"
    rows = store.query("SELECT id FROM rollouts WHERE run_id = $r", {"r": run_id}).column("id").to_pylist()
    assert len(rows) == len(set(rows))
    return {"consumed": len(usage), "stale": len(stale), "groups": len(groups)}


def test_async_training_with_two_workers_respects_staleness(
    arith_store: ReplayStore, sft_model: Path, model_kind: str, tmp_path: Path
) -> None:
    if model_kind == "bpe":  # the chat-SFT'd BPE model samples through its chat template: chat problems only
        # (a second copy of the same problems with `messages` would be a duplicate id; readers keep the first)
        arith_store = ReplayStore(tmp_path / "chat-store")
        arith_store.write("problems", as_chat(generate(ArithConfig(n=400, max_digits=1, seed=2))[0], [])[0])
    out = tmp_path / "ckpt"
    root = str(arith_store.root)
    procs = []
    try:
        procs.append(spawn("train", "--async", "--run-id", "a", "--model", str(sft_model), "--output-dir",
                           str(out), "--root", root, *cli_options(CONFIG), log=tmp_path / "trainer.log"))  # fmt: skip
        procs += [spawn("rollout-worker", "--run-id", "a", "--worker-id", str(i), "--root", root,
                        log=tmp_path / f"worker{i}.log") for i in range(2)]  # fmt: skip
        assert procs[0].wait(timeout=300) == 0, (tmp_path / "trainer.log").read_text()[-3000:]
        for w in procs[1:]:
            assert w.wait(timeout=60) == 0, "a worker did not stop when the run ended"
    finally:
        for p in procs:
            stop_process(p)
    counts = assert_accounting(arith_store, "a", out)
    producers = arith_store.query("SELECT DISTINCT producer FROM rollouts WHERE run_id = 'a'").column("producer")
    assert sorted(producers.to_pylist()) == ["rollout-worker:0", "rollout-worker:1"]
    assert counts["consumed"] == STEPS * CONFIG["prompts_per_step"]


def test_trainer_killed_and_resumed_loses_and_repeats_nothing(
    arith_store: ReplayStore, sft_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ckpt"
    root = str(arith_store.root)
    args = ["train", "--async", "--run-id", "r", "--model", str(sft_model_dir), "--output-dir", str(out),
            "--root", root, *cli_options(CONFIG)]  # fmt: skip
    procs = []
    try:
        procs.append(spawn(*args, log=tmp_path / "trainer.log"))
        procs.append(spawn("rollout-worker", "--run-id", "r", "--root", root, log=tmp_path / "worker.log"))
        wait_for("3 trainer steps", lambda: steps_done(arith_store, "r") >= 3)
        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
        killed_at = steps_done(arith_store, "r")
        assert killed_at < STEPS
        procs.append(spawn(*args, "--resume", log=tmp_path / "trainer.log"))
        assert procs[2].wait(timeout=300) == 0, (tmp_path / "trainer.log").read_text()[-3000:]
        assert procs[1].wait(timeout=60) == 0
    finally:
        for p in procs:
            stop_process(p)
    assert load_meta(latest_checkpoint(out)).step == STEPS
    assert_accounting(arith_store, "r", out)
    attempts = arith_store.query("SELECT DISTINCT attempt FROM consumed WHERE run_id = 'r' ORDER BY 1")
    assert attempts.column("attempt").to_pylist() == [0, 1], "the killed attempt's rows stay, told apart"
    full = sorted(p.name for p in out.glob("checkpoint-*"))
    assert full == ["checkpoint-000006", "checkpoint-000008"], "save_total_limit keeps the newest 2"
    deleted = arith_store.query("SELECT path FROM checkpoints WHERE run_id = 'r' AND kind = 'deleted'")
    assert any(p.endswith("checkpoint-000002") for p in deleted.column("path").to_pylist())
    weights = arith_store.query("SELECT count(*) AS n FROM checkpoints WHERE run_id = 'r' AND kind = 'weights'")
    assert weights.to_pylist()[0]["n"] >= STEPS // 2, "weights-only publishes between full checkpoints"


def test_train_async_flow_restarts_a_killed_worker(
    arith_store: ReplayStore, sft_model_dir: Path, tmp_path: Path, harness
) -> None:
    from reasonloop.flows.prefect_env import no_heartbeat
    from reasonloop.flows.train_async import train_async

    out = tmp_path / "ckpt"
    result: dict = {}

    def run() -> None:
        with no_heartbeat():
            result.update(train_async(str(arith_store.root), str(sft_model_dir), "f", {**CONFIG, "steps": 10},
                                      workers=2, output_dir=str(out), poll_s=0.2))  # fmt: skip

    thread = threading.Thread(target=run)
    thread.start()
    try:
        pids = wait_for("the flow's processes", lambda: (out / "processes.json").exists() and
                          json.loads((out / "processes.json").read_text()))  # fmt: skip
        wait_for("2 steps", lambda: steps_done(arith_store, "f") >= 2)
        os.killpg(pids["workers"]["0"], signal.SIGKILL)  # mid-run
    finally:
        thread.join(timeout=300)
    assert not thread.is_alive()
    assert result["restarts"]["workers"] >= 1 and result["checkpoint"].endswith("checkpoint-000010")
    for pid in json.loads((out / "processes.json").read_text())["workers"].values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # every process stopped


def test_a_worker_never_loads_half_written_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    store = ReplayStore(tmp_path / "store")
    # The publisher races the reader until the reader has loaded WANTED distinct versions (how many
    # it catches depends on the machine's load, so the reader says when, not a fixed count).
    wanted, stop = 4, tmp_path / "stop"
    publisher = subprocess.Popen(
        [sys.executable, "-m", "tests.procs.publisher", str(store.root), str(tiny_model_dir), "200", str(stop)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    seen: set[int] = set()
    try:
        while publisher.poll() is None or not seen:
            newest = newest_published(store, "pub")
            if newest is None:
                continue
            version, path = newest
            model = AutoModelForCausalLM.from_pretrained(path)
            values = torch.cat([p.detach().flatten() for p in model.parameters()]).unique()
            assert values.tolist() == [float(version)], f"version {version} loaded mixed weights"
            seen.add(version)
            if len(seen) >= wanted:
                stop.touch()
    finally:
        stop.touch()
        publisher.wait(timeout=60)
        stop_process(publisher)
    assert publisher.returncode == 0, publisher.stderr.read()[-2000:]
    assert len(seen) >= wanted, seen


def test_async_config_refuses_a_deadlock() -> None:
    with pytest.raises(ValueError, match="never get"):
        TrainConfig(async_rollouts=True, publish_every=4, max_staleness=1)


def test_group_index_keeps_runs_apart(tmp_path: Path) -> None:
    """Run 'a' must not see run 'ab' (a prefix of its name), neither on rebuild nor while following the log."""
    from reasonloop.trainers.group_index import GroupIndex
    from tests.procs.common import rollout_batch

    store = ReplayStore(tmp_path / "store")
    store.write("rollouts", rollout_batch("w", 0, 4, "a"))
    store.write("rollouts", rollout_batch("w", 1, 4, "ab"))
    index = GroupIndex(store, "a")
    assert len(index.groups) == 1
    store.write("rollouts", rollout_batch("w", 2, 4, "ab"))
    store.write("rollouts", rollout_batch("w", 3, 4, "a"))
    assert index.refresh() == 1 and len(index.groups) == 2
