"""`sft_samples`: supervised targets (warm-up CoT, BSAFE+ backtracking, Octopus corrections).

id key: hash(prompt, target, source). `loss_mask_spans` are character spans of `target` that do
not count in the loss (BSAFE+ masks the violation span; Octopus masks the first attempt).
Partitioned by `source`.
"""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import LOSS_MASK_SPANS, MESSAGES, TableSpec

SFT_SAMPLES = TableSpec(
    name="sft_samples",
    version=1,
    fields=(
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("messages", MESSAGES),
        pa.field("target", pa.string(), nullable=False),
        pa.field("loss_mask_spans", LOSS_MASK_SPANS),
        pa.field("problem_id", pa.string()),
        pa.field("source_ids", pa.list_(pa.string())),  # rows this sample was built from
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # partition
    ),
    id_key=("prompt", "target", "source"),
    partition_by="source",
    sort_by=("created_at", "id"),
    nonempty=("prompt", "target"),
    defaults={"split": "train", "source": "user"},
    enums={"split": frozenset({"train", "test", "heldout"})},
    texts=("prompt", "target"),
)
