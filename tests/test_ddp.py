"""Data-parallel training under torchrun (gloo, CPU): 2 processes with a global batch of B take the
same steps as 1 process with the same B and seed — same weights to 1e-6 in float32, same rollouts,
same metrics — for grpo (two mini-batches a step) and dapo (dynamic sampling decided across ranks,
gradient accumulation), and through a resume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reasonloop.flows.local_server import free_port
from reasonloop.flows.processes import spawn_cli, stop_process, torchrun
from reasonloop.storage import ReplayStore
from reasonloop.tasks.recipes.arith import ArithConfig, generate
from reasonloop.tasks.recipes.chat import as_chat
from reasonloop.trainers.checkpoint import latest_checkpoint
from tests.trainer_helpers import cli_options

REPO = Path(__file__).resolve().parent.parent
# lr: Adam turns float32 noise in a near-zero gradient component (two processes add a step's
# gradients in another order than one) into a few % of an update (lr): the worst weight differed by
# 1.6e-6 at lr 4e-5 and by 4.0e-7 at 1e-5 (linear in lr), so the bound of 1e-6 on every weight needs
# lr 1e-5; the mean difference (~2e-11) and how far the weights moved (~2e-5) are checked too.
BASE = {"prompts_per_step": 4, "group_size": 4, "max_completion_length": 10, "temperature": 1.0, "lr": 1e-5,
        "dtype": "float32", "seed": 3}  # fmt: skip
ALGOS = {
    "grpo": {"algo": "grpo", "mini_batches": 2},
    "dapo": {"algo": "dapo", "grad_accum": 2, "max_refill_rounds": 2},
}


def train(store: Path, out: Path, model: Path, config: dict, *, procs: int, resume: bool = False) -> None:
    """`reasonloop train`, plain (procs=1) or under torchrun; waits, stops every process on failure."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    launcher = torchrun(procs, free_port()) if procs > 1 else ()
    args = ["train", "--run-id", "r", "--model", str(model), "--output-dir", str(out), "--root", str(store),
            *cli_options(config), *(["--resume"] if resume else [])]  # fmt: skip
    log = out.parent / f"{out.name}.log"
    proc = spawn_cli(args, log, env=env, cwd=REPO, launcher=launcher)
    try:
        assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]
    finally:
        stop_process(proc)


def problems_store(path: Path, model_kind: str) -> Path:
    problems = generate(ArithConfig(n=300, max_digits=1, seed=2))[0]
    ReplayStore(path).write("problems", as_chat(problems, [])[0] if model_kind == "bpe" else problems)
    return path


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(out) / "model.safetensors"))


def run_view(store: Path) -> tuple[list, list]:
    s = ReplayStore(store)
    rollouts = s.query(
        "SELECT policy_version, problem_id, group_id, sample_idx, completion, reward, advantage FROM rollouts "
        "ORDER BY policy_version, problem_id, group_id, sample_idx"
    ).to_pylist()  # fmt: skip
    metrics = s.query("SELECT step, loss, metrics FROM train_metrics ORDER BY step").to_pylist()
    return rollouts, metrics


def assert_same_run(a: Path, b: Path, store_a: Path, store_b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    init = load_file(str(a.parent / "init.safetensors"))
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    mean_diff = sum((wa[k] - wb[k]).abs().sum().item() for k in wa) / sum(t.numel() for t in wa.values())
    moved = min((wa[k] - init[k]).abs().mean().item() for k in wa)
    assert moved > 1e-5, "some weight did not train, so equal weights would prove little"
    assert diff < 1e-6 and mean_diff < 1e-9, f"weights differ by {diff:.2e} (mean {mean_diff:.2e})"
    (ra, ma), (rb, mb) = run_view(store_a), run_view(store_b)
    assert [r["completion"] for r in ra] == [r["completion"] for r in rb], "the ranks sampled other completions"
    assert [r["group_id"] for r in ra] == [r["group_id"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x["advantage"] == pytest.approx(y["advantage"], abs=1e-9)
    assert [m["step"] for m in ma] == [m["step"] for m in mb]
    for x, y in zip(ma, mb, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6), x["step"]
        dx, dy = dict(x["metrics"]), dict(y["metrics"])
        for key in ("reward_mean", "batch_rows", "completion_tokens", "frac_zero_std_groups", "grad_norm"):
            assert dx[key] == pytest.approx(dy[key], rel=1e-5, abs=1e-6), (x["step"], key)


@pytest.fixture
def init_copy(sft_model: Path, tmp_path: Path) -> Path:
    """The initial weights, to check that the runs moved away from them."""
    (tmp_path / "init.safetensors").write_bytes((sft_model / "model.safetensors").read_bytes())
    return sft_model


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_two_processes_train_as_one(algo: str, init_copy: Path, model_kind: str, tmp_path: Path) -> None:
    config = {**BASE, **ALGOS[algo], "steps": 3}
    one, two = problems_store(tmp_path / "s1", model_kind), problems_store(tmp_path / "s2", model_kind)
    train(one, tmp_path / "one", init_copy, config, procs=1)
    train(two, tmp_path / "two", init_copy, config, procs=2)
    assert_same_run(tmp_path / "one", tmp_path / "two", one, two)
    producers = ReplayStore(two).query("SELECT DISTINCT producer FROM rollouts ORDER BY 1").column(0).to_pylist()
    assert producers == [f"trainer:{algo}:rank0", f"trainer:{algo}:rank1"], "each rank commits its own rollouts"
    registered = ReplayStore(two).query("SELECT count(*) AS n FROM checkpoints").to_pylist()[0]["n"]
    assert registered == 1, "rank 0 alone registers checkpoints"
    consumed = ReplayStore(two).query("SELECT count(*) AS n FROM consumed WHERE status = 'trained'").to_pylist()[0]
    trained = sum(dict(m["metrics"])["batch_rows"] for m in run_view(two)[1])
    assert consumed["n"] == trained > 0, "every rank records the lineage of the rows it trained on"


# FSDP2 (trainers/sharding.py): the ranks' rows of a mini-batch are uneven (two shuffled
# mini-batches; dapo's dynamic sampling can keep unequal groups per rank), so with many micro-batches a
# rank runs zero-weight stand-ins; grpo with μ = 2 and a KL term also gathers the sharded policy
# for π_old and the sharded reference for its forwards. Both resume under FSDP from a checkpoint
# written under FSDP (the whole state, gathered to rank 0).
FSDP = {
    "dapo": {**ALGOS["dapo"], "grad_accum": 4, "mini_batches": 2},
    "grpo": {**ALGOS["grpo"], "grad_accum": 4, "num_iterations": 2, "beta": 0.05},
}


@pytest.mark.parametrize("algo", sorted(FSDP))
def test_fsdp_trains_and_resumes_as_one_process(algo: str, init_copy: Path, model_kind: str, tmp_path: Path) -> None:
    config = {**BASE, **FSDP[algo], "steps": 4}
    one, two = problems_store(tmp_path / "s1", model_kind), problems_store(tmp_path / "s2", model_kind)
    train(one, tmp_path / "one", init_copy, config, procs=1)
    train(two, tmp_path / "two", init_copy, {**config, "steps": 2, "fsdp": True}, procs=2)
    train(two, tmp_path / "two", init_copy, {**config, "fsdp": True}, procs=2, resume=True)
    assert_same_run(tmp_path / "one", tmp_path / "two", one, two)
    stand_ins = sum(dict(m["metrics"])["fsdp/stand_in_micro_batches"] for m in run_view(two)[1])
    assert stand_ins > 0, "no rank ever had fewer micro-batches than the other: the case is not tested"


def test_fsdp_refuses_what_it_does_not_run() -> None:
    from reasonloop.trainers.config import TrainConfig
    from reasonloop.trainers.sharding import Sharding

    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="under torchrun"):
        Sharding(True, 1).check(TrainConfig(fsdp=True), model)
    with pytest.raises(ValueError, match="engine transformers"):
        Sharding(True, 2).check(TrainConfig(fsdp=True, engine="vllm"), model)
    with pytest.raises(ValueError, match="decoder-only"):
        Sharding(True, 2).shard(model)
    Sharding(False).check(TrainConfig(engine="vllm"), model)  # off: nothing to refuse


def test_a_resumed_run_keeps_its_kl_reference(init_copy: Path, model_kind: str, tmp_path: Path) -> None:
    """β > 0: the reference is the run's initial weights after a resume too, not the checkpoint's
    (which made the KL after a resume start again from 0: 7e-4 instead of 7.6e-3 at step 3)."""
    config = {**BASE, **ALGOS["grpo"], "beta": 0.05, "steps": 4}
    one, two = problems_store(tmp_path / "s1", model_kind), problems_store(tmp_path / "s2", model_kind)
    train(one, tmp_path / "one", init_copy, config, procs=1)
    train(two, tmp_path / "two", init_copy, {**config, "steps": 2}, procs=1)
    train(two, tmp_path / "two", init_copy, config, procs=1, resume=True)
    assert_same_run(tmp_path / "one", tmp_path / "two", one, two)
    kls = [[dict(m["metrics"])["kl"] for m in run_view(store)[1]] for store in (one, two)]
    assert kls[0] == pytest.approx(kls[1], rel=1e-4)


def test_two_processes_resume_as_one(init_copy: Path, model_kind: str, tmp_path: Path) -> None:
    config = {**BASE, **ALGOS["dapo"], "steps": 4}
    one, two = problems_store(tmp_path / "s1", model_kind), problems_store(tmp_path / "s2", model_kind)
    train(one, tmp_path / "one", init_copy, config, procs=1)
    train(two, tmp_path / "two", init_copy, {**config, "steps": 2}, procs=2)
    train(two, tmp_path / "two", init_copy, config, procs=2, resume=True)
    assert_same_run(tmp_path / "one", tmp_path / "two", one, two)
