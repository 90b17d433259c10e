"""`sft_samples`: supervised targets (warm-up CoT, BSAFE+ backtracking, Octopus corrections).

id key: hash(prompt, target, source[, media_ref]); `media_ref` names the image an image-text
sample is about (as on `problems`). `loss_mask_spans` are character spans of `target` that do
not count in the loss (BSAFE+ masks the violation span; Octopus masks the first attempt).
A BSAFE+ row also keeps where its violation was injected (`inject_pos`, a character offset of
`target`), its `category` and the signal's X (`backtrack_by`, tokens). Partitioned by `source`.
"""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import LOSS_MASK_SPANS, MESSAGES, TableSpec

SFT_SAMPLES = TableSpec(
    name="sft_samples",
    version=3,  # 2: inject_pos, category, backtrack_by (BSAFE+); 3: media_ref
    fields=(
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("messages", MESSAGES),
        pa.field("target", pa.string(), nullable=False),
        pa.field("loss_mask_spans", LOSS_MASK_SPANS),
        pa.field("problem_id", pa.string()),
        pa.field("source_ids", pa.list_(pa.string())),  # rows this sample was built from
        pa.field("inject_pos", pa.int32()),  # BSAFE+: where the violation starts in `target`
        pa.field("category", pa.string()),  # BSAFE+: the violation's category
        pa.field("backtrack_by", pa.int32()),  # BSAFE+: the signal's X (tokens deleted)
        pa.field("media_ref", pa.string()),  # media:sha256:<hex>, the image the prompt is about
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # partition
    ),
    id_key=("prompt", "target", "source"),
    id_key_when_set=("media_ref",),
    partition_by="source",
    sort_by=("created_at", "id"),
    nonempty=("prompt", "target"),
    defaults={"split": "train", "source": "user"},
    enums={"split": frozenset({"train", "test", "heldout"})},
    nonnegative=("inject_pos", "backtrack_by"),
    texts=("prompt", "target"),
)
