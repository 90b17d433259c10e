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

from storage import ReplayStore  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> ReplayStore:
    return ReplayStore(tmp_path / "store")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with the character tokenizer, built once per test session."""
    from transformers.utils import logging as hf_logging

    from tasks.models.tiny import init_tiny_model

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    return init_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)
