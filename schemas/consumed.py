"""`consumed`: lineage. One row per (step, rollout) that a training step used, or drew and left.

id key: hash(run_id, attempt, step, rollout_id). `step` is the optimizer step the rollout entered
(1-based: the weights of checkpoint N were trained on steps 1..N); `attempt` numbers the trainer
processes of a run (0 for the first, one more on each start or resume), because a resumed async
trainer may consume other rollouts at a step than its killed predecessor did: the rollouts that
trained checkpoint N are, for each step <= N, those of the highest attempt <= N's attempt
(storage.lineage). `status`: `trained`, or for groups a step drew and did not train on,
`overflow` (dynamic sampling had more useful groups than the step takes) or `zero_variance`
(every sample scored the same) or `unscored` (its reward was None: no verdict, no advantage) or
`unselected` (a rollout scheduler, --scheduler cbs, left it out).
`use` is the how-manieth time the rollout trained (replay and
async reuse), `weight` the mean per-token importance weight it trained with (1: none).
Written each step just before that step's `train_metrics` row. Partitioned by `run_id`.
"""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import TableSpec

CONSUMED_STATUS = frozenset({"trained", "overflow", "zero_variance", "unscored", "unselected"})

CONSUMED = TableSpec(
    name="consumed",
    version=1,
    fields=(
        pa.field("step", pa.int64(), nullable=False),
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("rollout_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("policy_version", pa.int64(), nullable=False),  # of the weights that sampled it
        pa.field("status", pa.string(), nullable=False),
        pa.field("use", pa.int32(), nullable=False),  # 1 = first time trained; 0 = not trained
        pa.field("weight", pa.float64(), nullable=False),
    ),
    id_key=("run_id", "attempt", "step", "rollout_id"),
    partition_by="run_id",
    sort_by=("step", "attempt", "group_id", "rollout_id"),
    enums={"status": CONSUMED_STATUS},
    finite=("weight",),
    nonnegative=("step", "attempt", "policy_version", "use"),
    nonempty=("rollout_id", "group_id"),
)
