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
