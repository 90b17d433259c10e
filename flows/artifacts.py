"""Prefect artifacts: a markdown summary on every training run, so the UI shows what happened."""

from __future__ import annotations

import math
import re

from prefect.artifacts import create_markdown_artifact

from reasonloop.storage import ReplayStore


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:120]


def training_summary(store: ReplayStore, run_id: str, checkpoint: str, lines: list[str] = ()) -> str:
    """Key metrics of a run's last step (from `train_metrics`), its checkpoint and report paths,
    as a markdown artifact keyed by the run (a rerun adds a version of the same artifact)."""
    rows = store.query(
        "SELECT step, loss, metrics FROM train_metrics WHERE run_id = $r ORDER BY step DESC LIMIT 1", {"r": run_id}
    ).to_pylist()
    last = dict(rows[0]["metrics"] or {}) if rows else {}

    def fmt(name: str) -> str:
        value = last.get(name, math.nan)
        return "—" if math.isnan(value) else f"{value:.3f}"

    markdown = "\n".join([
        f"# Training run `{run_id}`", "",
        f"- checkpoint: `{checkpoint}`", f"- steps: {rows[0]['step'] if rows else 0}",
        "", "| reward mean | entropy | completion length | grad norm |", "| ---: | ---: | ---: | ---: |",
        f"| {fmt('reward_mean')} | {fmt('entropy')} | {fmt('completion_length_mean')} | {fmt('grad_norm')} |", "",
        *lines, f"- store: `{store.root}`; this run's metrics: `SELECT * FROM train_metrics WHERE run_id = '{run_id}'`",
    ])  # fmt: skip
    create_markdown_artifact(markdown, key=artifact_key("train", run_id), description=f"training run {run_id}")
    return markdown
