"""Import boundaries the GPU check relies on: engines and trainers import no storage, Prefect or polars."""

from __future__ import annotations

import subprocess
import sys

from tests.procs.spawn import REPO

CHECK = """
import sys
import reasonloop.tasks.engines, reasonloop.tasks.engines.transformers_engine, reasonloop.trainers, reasonloop.trainers.logprobs
heavy = sorted(m for m in ("reasonloop.storage", "prefect", "polars", "duckdb", "reasonloop.flows") if m in sys.modules)
print(",".join(heavy))
"""


def test_engines_and_trainers_import_no_pipeline_machinery() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_gpu_check_script_runs_on_cpu() -> None:
    """The GPU check itself, on the CPU: same code path, the device is the only difference."""
    out = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--size", "tiny"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "gpu check: OK" in out.stdout
