"""`train_metrics`: one row per optimizer step.

id key: hash(run_id, step). `loss` and `step` are plain columns; every other metric (reward mean
per function, clip ratios, grad norm, timings, ...) lives in the `metrics` map because its names
depend on the algorithm and the reward functions. Non-finite values are kept: a diverging run is
data worth seeing. Partitioned by `run_id`.
"""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import FLOAT_MAP, TableSpec

TRAIN_METRICS = TableSpec(
    name="train_metrics",
    version=1,
    fields=(
        pa.field("step", pa.int64(), nullable=False),
        pa.field("loss", pa.float64()),
        pa.field("metrics", FLOAT_MAP),
    ),
    id_key=("run_id", "step"),
    partition_by="run_id",
    sort_by=("step",),
    range_columns=("step",),
    nonnegative=("step",),
)
