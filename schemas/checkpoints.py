"""`checkpoints`: the registry of saved policies.

id key: hash(run_id, step). `watermark` is JSON naming the rows that trained the checkpoint;
`promoted` marks the checkpoint the deployments serve. Partitioned by `run_id`.
"""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import FLOAT_MAP, TableSpec

CHECKPOINTS = TableSpec(
    name="checkpoints",
    version=1,
    fields=(
        pa.field("step", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("parent_checkpoint_id", pa.string()),
        pa.field("eval_scores", FLOAT_MAP),
        pa.field("watermark", pa.string()),  # JSON
        pa.field("promoted", pa.bool_(), nullable=False),
    ),
    id_key=("run_id", "step"),
    partition_by="run_id",
    sort_by=("step",),
    nonempty=("path",),
    defaults={"promoted": False},
    finite=("eval_scores",),
    nonnegative=("step",),
    texts=("path", "watermark"),
)
