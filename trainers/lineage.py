"""Which rollouts each step used, as rows of the `consumed` table (schemas/consumed.py): the
trainer's record of what trained its weights, in the store next to the rollouts, so that "which
rollouts trained checkpoint N" is one SQL query (storage/lineage.py) for sync, async and replay
runs alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from reasonloop.storage import ReplayStore


def next_attempt(store: ReplayStore, run_id: str) -> int:
    """The number of this trainer process among the run's: one more than any that consumed rows."""
    rows = store.query("SELECT max(attempt) AS a FROM consumed WHERE run_id = $r", {"r": run_id}).to_pylist()
    last = rows[0]["a"] if rows else None
    return 0 if last is None else int(last) + 1


def consumed_table(
    batch: pa.Table, *, step: int, attempt: int, status: str, uses: list[int] | None = None,
    weights: list[float] | None = None,
) -> pa.Table:  # fmt: skip
    """One `consumed` row per rollout of `batch` (rows of `rollouts`); `uses` and `weights` per row
    (default 1 and 1.0 for trained rows, 0 and 0.0 for rows left untrained)."""
    n = batch.num_rows
    trained = status == "trained"
    return pa.table({
        "step": pa.array([step] * n, pa.int64()),
        "attempt": pa.array([attempt] * n, pa.int32()),
        "rollout_id": batch.column("id"),
        "group_id": batch.column("group_id"),
        "policy_version": batch.column("policy_version"),
        "status": pa.array([status] * n, pa.string()),
        "use": pa.array(uses if uses is not None else [int(trained)] * n, pa.int32()),
        "weight": pa.array(weights if weights is not None else [float(trained)] * n, pa.float64()),
    })  # fmt: skip
