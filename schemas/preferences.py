"""`preferences`: (prompt, chosen, rejected) pairs for preference training (DPO, trainers/dpo.py).

id key: hash(prompt, chosen, rejected, source). A pair comes from a stored group (`reason`
"reward": its best vs worst reward), from a critic ("critic": a safe vs an unsafe response) or from
the user; `source_ids` are the rows it was built from, `chosen_score` / `rejected_score` what
ranked them. Partitioned by `source`.
"""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import TableSpec

REASONS = frozenset({"reward", "critic", "user"})

PREFERENCES = TableSpec(
    name="preferences",
    version=1,
    fields=(
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("chosen", pa.string(), nullable=False),
        pa.field("rejected", pa.string(), nullable=False),
        pa.field("problem_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("chosen_score", pa.float64()),
        pa.field("rejected_score", pa.float64()),
        pa.field("source_ids", pa.list_(pa.string())),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # partition
    ),
    id_key=("prompt", "chosen", "rejected", "source"),
    partition_by="source",
    sort_by=("created_at", "id"),
    nonempty=("prompt", "chosen", "rejected"),
    defaults={"split": "train", "source": "user", "reason": "user"},
    enums={"split": frozenset({"train", "test", "heldout"}), "reason": REASONS},
    finite=("chosen_score", "rejected_score"),
    texts=("prompt", "chosen", "rejected"),
)
