"""`promotions`: the evaluate-and-promote decisions, one row per candidate checkpoint.

id key: hash(candidate_checkpoint_id), so deciding a candidate twice (a retried run) adds nothing.
A row records both branches: `decision` is "promoted" or "rejected", with the scores that decided
it. The checkpoint the deployments serve is the promoted row with the highest `generation` (the
number of promotions so far). Rows of `checkpoints` are immutable; promotion is this separate,
append-only record that points at them. Partitioned by `run_id` (the candidate's training run).
"""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import FLOAT_MAP, TableSpec

PROMOTIONS = TableSpec(
    name="promotions",
    version=1,
    fields=(
        pa.field("candidate_checkpoint_id", pa.string(), nullable=False),
        pa.field("candidate_path", pa.string(), nullable=False),
        pa.field("incumbent_checkpoint_id", pa.string()),  # None: the base model
        pa.field("incumbent_path", pa.string(), nullable=False),
        pa.field("decision", pa.string(), nullable=False),
        pa.field("generation", pa.int64(), nullable=False),
        pa.field("scores", FLOAT_MAP),  # candidate/incumbent accuracy, delta, stderr, n
        pa.field("watermark", pa.string()),  # JSON: the candidate's data watermark
        pa.field("report", pa.string()),
    ),
    id_key=("candidate_checkpoint_id",),
    partition_by="run_id",
    sort_by=("generation",),
    enums={"decision": frozenset({"promoted", "rejected"})},
    finite=("scores",),
    nonnegative=("generation",),
    nonempty=("candidate_checkpoint_id", "candidate_path", "incumbent_path"),
    texts=("candidate_path", "incumbent_path", "watermark", "report"),
)
