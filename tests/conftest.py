"""Test setup: torch must not spin-wait (set before anything imports it), stores in tmp dirs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

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
    from transformers.utils import logging as hf_logging

    from reasonloop.tasks.models.tiny import init_tiny_model

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    return init_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def sft_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after a short SFT on arith: it solves some problems, so rewards vary."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasonloop.tasks.recipes.arith import ArithConfig, generate
    from reasonloop.trainers.config import SFTConfig
    from reasonloop.trainers.sft import run_sft

    _, samples = generate(ArithConfig(n=1500, max_digits=2, seed=1))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    run_sft(SFTConfig(steps=200, batch_size=32, seed=0), model=model, tokenizer=tokenizer, samples=samples)
    out = tmp_path_factory.mktemp("models") / "sft"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory):
    """Prefect's test harness (a temporary server, ~11 s to start), once per test session."""
    from reasonloop.flows.prefect_env import configure_prefect

    configure_prefect(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
