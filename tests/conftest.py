"""Test setup: torch must not spin-wait (set before anything imports it), stores in tmp dirs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _offline in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # no hub is reachable; never wait for one
    os.environ.setdefault(_offline, "1")

import pytest  # noqa: E402 - after the environment is set

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from reasonloop.storage import ReplayStore  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> ReplayStore:
    return ReplayStore(tmp_path / "store")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with the character tokenizer, built once per test session."""
    from reasonloop.tasks.models.tiny import init_tiny_model

    _quiet()
    return init_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@pytest.fixture(scope="session")
def bpe_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 shaped like a real checkpoint: byte-level BPE, ChatML template, two EOS
    ids, no pad token, bf16 weights (tasks/models/bpe.py)."""
    from reasonloop.tasks.models.bpe import init_bpe_model

    _quiet()
    return init_bpe_model(tmp_path_factory.mktemp("models") / "bpe", seed=0)


@pytest.fixture(scope="session")
def vlm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA (CLIP vision tower + the BPE Qwen2) with its processor (tasks/models/vision.py)."""
    from reasonloop.tasks.models.vision import init_vision_model

    _quiet()
    return init_vision_model(tmp_path_factory.mktemp("models") / "vlm", seed=0)


def _sft(base: Path, out: Path, *, chat: bool, steps: int = 200) -> Path:
    from reasonloop.tasks.recipes.arith import ArithConfig, generate
    from reasonloop.tasks.recipes.chat import as_chat
    from reasonloop.trainers.config import SFTConfig
    from reasonloop.trainers.policy import load_policy, save_weights
    from reasonloop.trainers.sft import run_sft

    problems, samples = generate(ArithConfig(n=1500, max_digits=2, seed=1))
    if chat:
        _, samples = as_chat(problems, samples)
    config = SFTConfig(steps=steps, batch_size=32, lr=1e-3, seed=0)
    policy = load_policy(base, config)
    run_sft(config, model=policy.model, tokenizer=policy.tokenizer, samples=samples, compute_dtype=policy.compute_dtype)
    save_weights(policy.model, out, merged=False)
    policy.tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def sft_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny char model after a short SFT on arith: it solves some problems, so rewards vary."""
    return _sft(tiny_model_dir, tmp_path_factory.mktemp("models") / "sft", chat=False)


@pytest.fixture(scope="session")
def bpe_sft_model_dir(bpe_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The BPE model after a short chat SFT on arith (bf16 compute, fp32 masters): it answers in
    ChatML and ends its turn with <|im_end|>, the second of its EOS ids."""
    return _sft(bpe_model_dir, tmp_path_factory.mktemp("models") / "bpe-sft", chat=True, steps=300)


MODEL_KINDS = ["char", "bpe"]


@pytest.fixture(params=MODEL_KINDS)
def model_kind(request: pytest.FixtureRequest) -> str:
    """Every model-facing test runs on both kinds of model: the char Llama and the BPE Qwen2."""
    return request.param


@pytest.fixture
def base_model(model_kind: str, request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue("tiny_model_dir" if model_kind == "char" else "bpe_model_dir")


@pytest.fixture
def sft_model(model_kind: str, request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue("sft_model_dir" if model_kind == "char" else "bpe_sft_model_dir")


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch):
    """The `vllm` package replaced by tests/procs/fake_vllm (vLLM's signatures, a real model inside)."""
    from unittest import mock

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "procs" / "fake_vllm"))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    import vllm

    vllm.LLM.instances.clear()
    with mock.patch.dict(os.environ):  # the colocated executor's variables do not leak into other tests
        yield vllm
    sys.modules.pop("vllm", None)


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory):
    """Prefect's test harness (a temporary server, ~11 s to start), once per test session."""
    from reasonloop.flows.prefect_env import configure_prefect

    configure_prefect(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
