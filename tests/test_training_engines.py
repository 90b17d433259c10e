"""Engines in the training path (`--engine vllm|openai`): the policy's weights reach the engine
after every update, so the engine samples from the weights being trained (the mismatch between
its logprobs and the trainer's forward stays at float noise; an engine left on old or lost weights
would show it at once). vLLM is a fake with vLLM's signatures (tests/procs/fake_vllm); the server
is a real model behind vLLM's completions shapes on 127.0.0.1 (tests/procs/model_server.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reasonloop.flows.processes import spawn_cli, stop_process
from reasonloop.storage import ReplayStore
from reasonloop.tasks import prompts as prompt_policy
from reasonloop.trainers.checkpoint import latest_checkpoint
from tests.procs.model_server import ModelServer
from tests.trainer_helpers import arith_store, make_trainer

REPO = Path(__file__).resolve().parent.parent


def mismatch(store: ReplayStore, run_id: str) -> list[float]:
    rows = store.query(
        "SELECT metrics['mismatch/logprob_abs_diff_max'] AS m FROM train_metrics WHERE run_id = $r ORDER BY step",
        {"r": run_id},
    ).to_pylist()  # fmt: skip
    return [r["m"] for r in rows]


@pytest.mark.parametrize("sleep", [False, True])
def test_vllm_colocated_gets_the_weights_after_every_update(
    fake_vllm, sleep: bool, sft_model: Path, model_kind: str, tmp_path: Path
) -> None:
    store = arith_store(tmp_path / "store", chat=model_kind == "bpe")
    trainer = make_trainer(sft_model, store, tmp_path, scripted=False, engine="vllm", enable_sleep_mode=sleep,
                           dtype="float32", lr=1e-4)  # fmt: skip
    final, _ = trainer.train(3)
    (llm,) = fake_vllm.LLM.instances
    assert llm.kwargs["logprobs_mode"] == "processed_logprobs" and llm.kwargs["gpu_memory_utilization"] == 0.3
    assert llm.kwargs["distributed_executor_backend"] == "external_launcher"
    assert llm.model.loads == 1 + 3, "once before the first step (the folder may differ), then after every update"
    engine_state, trained = llm.model.hf.state_dict(), load_file(str(final / "model.safetensors"))
    assert all(torch.equal(engine_state[k], trained[k]) for k in trained), "the engine holds the trained weights"
    initial = load_file(str(sft_model / "model.safetensors"))
    assert any(not torch.equal(initial[k], trained[k]) for k in trained), "training moved the weights"
    assert max(mismatch(store, "t")) < 1e-4, "the engine sampled from other weights than the policy's"
    if sleep:  # asleep (level 2: weights gone) for each update, weights back before the KV cache
        step = ["generate", "sleep2", "wake:weights", "apply_model", "reset_prefix_cache", "wake:kv_cache"]
        calls = [c for c in llm.calls if c != "chat"]
        assert calls[calls.index("generate") : calls.index("generate") + len(step)] == step
    else:
        assert not any(c.startswith(("sleep", "wake")) for c in llm.calls)


def test_openai_server_trains_on_client_tokenized_prompts(sft_model: Path, model_kind: str, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "store", chat=model_kind == "bpe")
    with ModelServer(sft_model) as server:
        trainer = make_trainer(sft_model, store, tmp_path, scripted=False, engine="openai", engine_url=server.url,
                               dtype="float32", lr=1e-4)  # fmt: skip
        trainer.train(3)
    assert [v for _, v in server.loads] == [0, 1, 2, 3], "synced before the first step and after every update"
    assert set(server.versions_served) == {0, 1, 2}, "each step sampled from the weights of its version"
    assert max(mismatch(store, "t")) < 1e-4
    rows = store.query("SELECT problem_id, prompt_ids FROM rollouts").to_pylist()
    problems = {p["id"]: p for p in store.query("SELECT id, prompt, messages FROM problems").to_pylist()}
    for row in rows[:8]:  # the ids the server sampled from are the chat-templated prompt, as trained on
        p = problems[row["problem_id"]]
        rendered = prompt_policy.render(trainer.tokenizer, p["prompt"], p["messages"], "auto")
        assert row["prompt_ids"] == prompt_policy.encode(trainer.tokenizer, rendered)


def test_rollout_worker_syncs_its_server_on_each_published_version(
    sft_model: Path, model_kind: str, tmp_path: Path
) -> None:
    store = arith_store(tmp_path / "store", chat=model_kind == "bpe")
    out = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    common = ["--run-id", "w", "--root", str(store.root)]
    config = ["--steps", "3", "--prompts-per-step", "4", "--group-size", "4", "--max-completion-length", "8",
              "--lr", "1e-4", "--max-staleness", "0", "--dtype", "float32", "--wait-timeout-s", "120"]  # fmt: skip
    procs = []
    with ModelServer(sft_model) as server:
        try:
            procs.append(spawn_cli(["train", "--async", "--model", str(sft_model), "--output-dir", str(out),
                                    *common, *config], tmp_path / "trainer.log", env=env, cwd=REPO))  # fmt: skip
            procs.append(spawn_cli(["rollout-worker", *common, "--engine", "openai", "--engine-url", server.url],
                                   tmp_path / "worker.log", env=env, cwd=REPO))  # fmt: skip
            assert procs[0].wait(timeout=300) == 0, (tmp_path / "trainer.log").read_text()[-3000:]
            assert procs[1].wait(timeout=60) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        finally:
            for p in procs:
                stop_process(p)
    assert [v for _, v in server.loads] == [0, 1, 2], "the worker loaded each published version into its server"
    versions = store.query("SELECT DISTINCT policy_version AS v FROM rollouts ORDER BY v").column("v").to_pylist()
    assert versions == [0, 1, 2]
    # Every request was served by the weights of the version its rows are tagged with (k = 0: on-policy).
    assert sorted(set(server.versions_served)) == versions
    assert max(mismatch(store, "w")) < 1e-4
    assert latest_checkpoint(out).name.endswith("3")


def test_evaluate_through_a_server_scores_what_the_local_engine_scores(sft_model: Path, model_kind: str,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    """Greedy evaluation sent to a server (prompts templated and tokenized here) gives the local
    engine's verdicts problem by problem."""
    from reasonloop.trainers.run import evaluate_model

    store = arith_store(tmp_path / "store", chat=model_kind == "bpe")
    options = {"split": "heldout", "limit": 24, "max_new_tokens": 16, "pass_k": 2, "pass_k_limit": 4, "device": "cpu",
               "dtype": "float32"}  # fmt: skip
    local = evaluate_model(store, sft_model, **options)
    with ModelServer(sft_model) as server:
        remote = evaluate_model(store, sft_model, engine="openai", engine_url=server.url, **options)
    assert sum(local["correct"]) > 0, "a model that solves nothing would agree trivially"
    assert remote["ids"] == local["ids"] and remote["correct"] == local["correct"]
    assert all(isinstance(r["prompt"], list) for r in server.requests), "token ids were sent"
