"""`checkpoints`: the registry of saved policies, an append-only record of checkpoint events.

id key: hash(run_id, step, kind, path). `kind`: `full` (weights + optimizer, scheduler, RNG and trainer
state: a resume point), `weights` (weights, config and tokenizer only: what rollout workers and
evaluation load; SFT output), or `deleted` (the folder at `path` was removed, e.g. by
`--save-total-limit`; the row it deletes stays). `watermark` is JSON naming the rows that trained
it (run, attempt, policy version, data positions). Which checkpoint the deployments serve is the
`promotions` table. Partitioned by `run_id`.
"""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import FLOAT_MAP, TableSpec

CHECKPOINT_KINDS = frozenset({"full", "weights", "deleted"})

CHECKPOINTS = TableSpec(
    name="checkpoints",
    version=2,  # 2: kind
    fields=(
        pa.field("step", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("parent_checkpoint_id", pa.string()),
        pa.field("eval_scores", FLOAT_MAP),
        pa.field("watermark", pa.string()),  # JSON
        pa.field("promoted", pa.bool_(), nullable=False),
    ),
    id_key=("run_id", "step", "kind", "path"),
    partition_by="run_id",
    sort_by=("step",),
    nonempty=("path",),
    defaults={"promoted": False, "kind": "full"},
    enums={"kind": CHECKPOINT_KINDS},
    finite=("eval_scores",),
    range_columns=("step",),
    nonnegative=("step",),
    texts=("path", "watermark"),
)
