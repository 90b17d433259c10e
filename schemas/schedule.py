"""`schedule`: a rollout scheduler's decisions (Contextual Rollout Bandits, trainers/cbs.py). One
row per (step, candidate rollout): its context features, the scheduler's score (predicted gain +
exploration bonus), and whether the step trained on it; `fresh` = sampled this step (else a stale
rollout from the store). So `SELECT * FROM schedule WHERE run_id = ... AND selected` is what the
bandit chose and why. Partitioned by `run_id`; id key hash(run_id, step, rollout_id)."""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import TableSpec

SCHEDULE = TableSpec(
    name="schedule",
    version=1,
    fields=(
        pa.field("step", pa.int64(), nullable=False),
        pa.field("rollout_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("policy_version", pa.int64(), nullable=False),
        pa.field("fresh", pa.bool_(), nullable=False),
        pa.field("features", pa.list_(pa.float64()), nullable=False),
        pa.field("predicted", pa.float64(), nullable=False),  # the MLP's predicted gain
        pa.field("bonus", pa.float64(), nullable=False),  # the exploration bonus added to it
        pa.field("selected", pa.bool_(), nullable=False),
    ),
    id_key=("run_id", "step", "rollout_id"),
    partition_by="run_id",
    sort_by=("step", "group_id", "rollout_id"),
    finite=("predicted", "bonus"),
    nonnegative=("step", "policy_version", "bonus"),
    nonempty=("rollout_id", "group_id"),
)
