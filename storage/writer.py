"""Committing validated rows: one immutable Parquet file per (batch, partition).

A commit is exactly one file, so it is atomic on its own: written under a temp name, then
published with a link (put-if-absent). A batch that spans partitions is several commits, and its
rejected rows are another; atomicity across files is not promised.

The file name is a hash of the batch's table, partition and ids, so committing the same batch
twice publishes nothing new (the link finds the name taken, or the commit log names a file that
compaction absorbed since) — idempotency without reading any existing data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reasonloop.schemas import TableSpec
from reasonloop.storage import commit_log
from reasonloop.storage.commit_log import append_commits
from reasonloop.storage.layout import partition_dir_name, publish, temp_path

ROW_GROUP_ROWS = 8192  # small enough that a staleness window prunes most of a compacted file


@dataclass
class WriteOptions:
    sync: bool = True  # fsync files and directories (survive power loss, ~30% slower)
    compression: str = "zstd"
    row_group_rows: int = ROW_GROUP_ROWS


@dataclass
class Committed:
    rows: int = 0
    duplicates: int = 0
    files: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)  # files that already held an identical batch
    folded: int = 0  # duplicate rows whose earlier file was compacted away (readable via SQL)


def parquet_kwargs(spec: TableSpec, options: WriteOptions) -> dict:
    """Writer settings: dictionary-encode only short categorical strings (dictionary attempts on
    long text and token lists cost time and gain nothing), statistics where pruning uses them."""
    unique = {"id", "parent_rollout_id"}
    categorical = [
        f.name for f in spec.schema if pa.types.is_string(f.type) and f.name not in spec.texts and f.name not in unique
    ]
    stats = [f.name for f in spec.schema if not pa.types.is_nested(f.type) and f.name not in spec.texts]
    return {
        "compression": options.compression,
        "use_dictionary": categorical,
        "write_statistics": stats,
        "row_group_size": options.row_group_rows,
    }


def batch_name(spec: TableSpec, partition: str, ids: pa.ChunkedArray | pa.Array) -> str:
    """Content address of a batch: its table, partition and ids, in order."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{spec.name}/{partition}\n".encode())
    sink = pa.BufferOutputStream()
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    batch = pa.record_batch([ids], names=["id"])
    with pa.ipc.new_stream(sink, batch.schema) as stream:
        stream.write_batch(batch)
    digest.update(sink.getvalue())
    return f"part-{digest.hexdigest()}.parquet"


def first_occurrences(table: pa.Table) -> tuple[pa.Table, int]:
    """Drop rows whose id already appeared earlier in the same batch."""
    ids = table.column("id")
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return table, 0
    seen: set[str] = set()
    keep = np.zeros(table.num_rows, dtype=bool)
    for i, value in enumerate(ids.to_pylist()):
        if value not in seen:
            seen.add(value)
            keep[i] = True
    return table.filter(pa.array(keep)), int((~keep).sum())


def split_by_partition(spec: TableSpec, table: pa.Table) -> list[tuple[str, pa.Table]]:
    column = table.column(spec.partition_by)
    values = pc.unique(column).to_pylist()
    if len(values) == 1:
        return [(values[0], table)]
    return [(v, table.filter(pc.equal(column, v))) for v in sorted(values)]


def column_ranges(spec: TableSpec, table: pa.Table) -> commit_log.Ranges:
    """min/max of the table's range columns in these rows (what the commit log keeps for pruning)."""
    ranges = {}
    for column in spec.range_columns:
        bounds = pc.min_max(table.column(column)).as_py()
        if bounds["min"] is not None:
            ranges[column] = (bounds["min"], bounds["max"])
    return ranges


def commit_rows(root: Path, spec: TableSpec, table: pa.Table, options: WriteOptions) -> Committed:
    """Publish a validated table (already in `spec.schema`) as one file per partition."""
    result = Committed()
    if table.num_rows == 0:
        return result
    table, result.duplicates = first_occurrences(table)
    table_dir = root / spec.name
    logged: list[tuple[str, int, commit_log.Ranges]] = []
    for value, part in split_by_partition(spec, table):
        pdir_name = partition_dir_name(spec.partition_by, value)
        name = batch_name(spec, pdir_name, part.column("id"))
        pdir = table_dir / pdir_name
        final = pdir / name
        if final.exists():
            result.duplicates += part.num_rows
            result.existing.append(final)
            continue
        # Gone from its folder, yet published once: compacted away (every file ever published is
        # in the commit log; compaction logs what a killed writer had not). No manifest read here.
        if f"{pdir_name}/{name}" in commit_log.positions(table_dir):
            result.duplicates += part.num_rows
            result.folded += part.num_rows
            continue
        pdir.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(pdir)
        try:
            pq.write_table(part, tmp, **parquet_kwargs(spec, options))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if publish(tmp, final, exclusive=True, sync=options.sync):
            result.rows += part.num_rows
            result.files.append(final)
            logged.append((f"{pdir_name}/{name}", part.num_rows, column_ranges(spec, part)))
        else:
            result.duplicates += part.num_rows
            result.existing.append(final)
    append_commits(table_dir, logged, sync=options.sync)
    return result
