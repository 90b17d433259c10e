"""`rejected`: the quarantine. A row that failed validation, with why, so nothing is lost.

id key: hash(table_name, raw, reason). `raw` is the row as received, as JSON (values JSON cannot
hold are written with repr). Partitioned by `table_name` (a known table, or `_unknown`).
"""

from __future__ import annotations

import pyarrow as pa

from reasonloop.schemas.common import TableSpec

REJECTED = TableSpec(
    name="rejected",
    version=1,
    fields=(
        pa.field("table_name", pa.string(), nullable=False),  # partition
        pa.field("raw", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("validator", pa.string(), nullable=False),
    ),
    id_key=("table_name", "raw", "reason"),
    partition_by="table_name",
    sort_by=("created_at", "id"),
    nonempty=("reason",),
)
