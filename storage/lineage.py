"""Lineage queries: which rollouts trained a checkpoint, from the `consumed` table.

A checkpoint of step N written by trainer attempt a was trained, at each step s <= N, on the rows
of the highest attempt <= a that consumed at step s. Attempts of a run start from its newest full
checkpoint, so a killed attempt's rows at steps after that checkpoint are superseded by the attempt
that redid those steps, and rows of later attempts (which continued after checkpoint N) are not
part of it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from reasonloop.storage.reader import StoreReader

LINEAGE_SQL = """
WITH c AS (
    SELECT * FROM consumed
    WHERE run_id = $run AND step <= $step AND attempt <= $attempt AND status = 'trained'
), chain AS (SELECT step, max(attempt) AS attempt FROM c GROUP BY step)
SELECT c.* FROM c JOIN chain USING (step, attempt) ORDER BY c.step, c.group_id, c.rollout_id
"""


def checkpoint_attempt(reader: StoreReader, run_id: str, step: int) -> int:
    """The trainer attempt that wrote checkpoint (run, step) (its watermark records it)."""
    rows = reader.query(
        "SELECT watermark FROM checkpoints WHERE run_id = $run AND step = $step AND kind <> 'deleted' "
        "ORDER BY kind LIMIT 1", {"run": run_id, "step": step},
    ).to_pylist()  # fmt: skip
    if not rows:
        raise LookupError(f"no checkpoint of run {run_id!r} at step {step}")
    return int(json.loads(rows[0]["watermark"] or "{}").get("attempt", 0))


def checkpoint_lineage(reader: StoreReader, run_id: str, step: int) -> pa.Table:
    """The `consumed` rows (one per rollout and use) that trained checkpoint (run, step); join on
    `rollout_id = rollouts.id` for the rollouts themselves."""
    attempt = checkpoint_attempt(reader, run_id, step)
    return reader.query(LINEAGE_SQL, {"run": run_id, "step": step, "attempt": attempt})
