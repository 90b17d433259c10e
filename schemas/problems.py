"""`problems`: what a policy is asked. One row per distinct (prompt, answer, answer_type, source).

id key: hash(prompt, answer, answer_type, source[, media_ref]) — the same problem from two runs is
one row; an image question adds its image (one question text asked of many images is many rows).
Partitioned by `source` (the recipe or dataset that made it).
"""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import MESSAGES, STRING_MAP, TableSpec

ANSWER_TYPES = frozenset({"exact", "numeric", "quantity", "choice", "math", "json", "rubric"})
SPLITS = frozenset({"train", "test", "heldout"})

PROBLEMS = TableSpec(
    name="problems",
    version=1,
    fields=(
        pa.field("prompt", pa.string(), nullable=False),  # plain text, or the last user turn
        pa.field("messages", MESSAGES),  # chat form of the prompt, when it has one
        pa.field("answer", pa.string(), nullable=False),  # gold answer (text form)
        pa.field("answer_type", pa.string(), nullable=False),  # how to verify `answer`
        pa.field("choices", pa.list_(pa.string())),  # options, for answer_type=choice
        pa.field("rubric", pa.list_(pa.string())),  # rubric items (Dr. SCI open-ended)
        pa.field("taxonomy", pa.string()),  # task type / taxonomy level (VeriTime, ...)
        pa.field("difficulty", pa.float64()),  # recipe-defined difficulty
        pa.field("pass_rate", pa.float64()),  # measured pass rate of some policy, if annotated
        pa.field("process_labels", STRING_MAP),  # step name -> gold label (process rewards)
        pa.field("media_ref", pa.string()),  # media:sha256:<hex>, an image in the store (storage/media.py)
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # partition
        pa.field("metadata", pa.string()),  # free-form JSON
    ),
    id_key=("prompt", "answer", "answer_type", "source"),
    id_key_when_set=("media_ref",),
    partition_by="source",
    sort_by=("created_at", "id"),
    nonempty=("prompt", "answer"),
    defaults={"split": "train", "source": "user"},
    enums={"answer_type": ANSWER_TYPES, "split": SPLITS},
    finite=("difficulty", "pass_rate"),
    texts=("prompt", "answer", "metadata"),
)
