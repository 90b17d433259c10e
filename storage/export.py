"""The store for tools that are not reasonloop: a snapshot whose files hold each row exactly once,
and a self-contained export (Parquet, or a Delta table).

A glob over a table folder is wrong: it sees temp-free but obsolete files a compaction keeps for
its grace period (compacted and folded files both), and a row that two batches committed twice.
`unique_snapshot` names exactly the live files of a consistent snapshot (storage/reader.py) and
makes their rows unique first: the partitions where an id repeats (across delta files, or between
a delta and a compacted file) are compacted — the one place that deduplicates, keeping the first
copy in commit order, like the store's own views. Write-time deduplication would make every commit
read the ids already in its partition, under a lock that serializes the partition's writers; here
the cost is paid only when someone asks for a snapshot, and only where duplicates exist
(benchmarks/store_bench.py measures both).

Snapshot files stay readable for the compaction grace period after a later compaction makes them
obsolete; for longer-lived copies, `export`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from reasonloop.schemas import TableSpec
from reasonloop.storage import commit_log
from reasonloop.storage.compaction import CompactionPolicy, compact_table
from reasonloop.storage.reader import Snapshot, read_parquet_sql, snapshot
from reasonloop.storage.writer import WriteOptions

SNAPSHOT_FILE = "_snapshot.json"


@dataclass(frozen=True)
class UniqueSnapshot:
    table: str
    position: int  # commit-log position it reflects: every commit up to it is in `files`
    files: tuple[Path, ...]  # each row of the table exactly once
    rows: int
    schema_versions: tuple[int, ...]  # more than one: read with union_by_name / a unified schema
    compacted_partitions: tuple[str, ...] = field(default=())  # made unique for this snapshot

    def to_json(self) -> dict:
        return {
            "table": self.table, "position": self.position, "rows": self.rows,
            "schema_versions": list(self.schema_versions), "files": [str(f) for f in self.files],
            "compacted_partitions": list(self.compacted_partitions),
        }  # fmt: skip


def duplicate_partitions(spec: TableSpec, snap: Snapshot) -> list[str]:
    """Partition folders where an id repeats: in two delta files, or in a delta and a compacted
    file (compacted files alone never repeat one)."""
    if not snap.deltas:
        return []
    part = spec.partition_by
    with_deltas = {p.parent.name for p in snap.deltas}
    compacted = [p for p in snap.compacted if p.parent.name in with_deltas]
    deltas = f"SELECT {part} AS p, id FROM {read_parquet_sql(spec, snap.deltas)}"
    sql = f"WITH d AS ({deltas}) SELECT DISTINCT p FROM (SELECT p FROM d GROUP BY p, id HAVING count(*) > 1"
    if compacted:
        sql += (
            f" UNION ALL SELECT d.p FROM d SEMI JOIN (SELECT {part} AS p, id FROM "
            f"{read_parquet_sql(spec, compacted)}) c ON d.p = c.p AND d.id = c.id"
        )
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        values = [r[0] for r in con.sql(sql + ")").fetchall()]
    finally:
        con.close()
    return sorted(f"{part}={v}" for v in values)


def unique_snapshot(
    root: Path, spec: TableSpec, policy: CompactionPolicy, options: WriteOptions, *, max_rounds: int = 4
) -> UniqueSnapshot:
    """A consistent snapshot whose files hold every row once (see the module docstring)."""
    table_dir = root / spec.name
    fixed: list[str] = []
    for _ in range(max_rounds):
        position = commit_log.head(table_dir)  # before listing: every commit up to it is listed
        snap = snapshot(root, spec.name)
        dups = duplicate_partitions(spec, snap)
        if not dups:
            versions = sorted({_schema_version(f) for f in snap.files})
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in snap.files)
            return UniqueSnapshot(spec.name, position, snap.files, rows, tuple(versions), tuple(fixed))
        for partition in dups:  # compaction deduplicates (first committed copy wins)
            compact_table(root, spec, replace(policy, min_files=1), options, partition)
        fixed += dups
    raise RuntimeError(
        f"{spec.name}: writers kept committing duplicate rows; snapshot not unique after {max_rounds} rounds"
    )


def _rewrite(source: Path, target: Path, spec: TableSpec) -> None:
    reader = pq.ParquetFile(source)
    writer = None
    try:
        for batch in reader.iter_batches(columns=[f.name for f in spec.schema if f.name in reader.schema_arrow.names]):
            batch = maps_as_lists(batch)
            writer = writer or pq.ParquetWriter(target, batch.schema, compression="zstd")
            writer.write_batch(batch)
    finally:
        if writer is not None:
            writer.close()


def _schema_version(path: Path) -> int:
    meta = pq.read_schema(path).metadata or {}
    return int(meta.get(b"reasonloop.schema_version", b"0"))


@dataclass(frozen=True)
class ExportResult:
    out: Path
    format: str
    rows: int
    files: int
    position: int


def maps_as_lists(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Map columns as list<struct<key, value>>: the same data in a type Hugging Face `datasets`
    can hold (it has no map type)."""
    columns, fields = [], []
    for f, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_map(f.type):
            entries = pa.StructArray.from_arrays([column.keys, column.items], names=["key", "value"])
            column = pa.ListArray.from_arrays(column.offsets, entries, mask=column.is_null())
            f = pa.field(f.name, column.type, f.nullable)
        columns.append(column)
        fields.append(f)
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields, metadata=batch.schema.metadata))


def export(snap: UniqueSnapshot, spec: TableSpec, out: Path, fmt: str, *, lists_for_maps: bool = False) -> ExportResult:
    """A self-contained copy of a unique snapshot: `parquet` (a hive-partitioned folder any glob
    reads correctly, files hard-linked where the filesystem allows, they are immutable; with
    `lists_for_maps`, rewritten with map columns as lists of key/value structs, for `datasets`) or
    `delta` (a Delta table written in one commit, for Spark/Databricks/Trino)."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        for f in snap.files:
            target = out / f.parent.name / f.name  # <partition>/<file>, for deltas and compacted files alike
            target.parent.mkdir(exist_ok=True)
            if lists_for_maps:
                _rewrite(f, target, spec)
                continue
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)
        (out / SNAPSHOT_FILE).write_text(json.dumps(snap.to_json(), indent=1))
        return ExportResult(out, fmt, snap.rows, len(snap.files), snap.position)
    if fmt == "delta":
        try:
            from deltalake import write_deltalake
        except ImportError as exc:
            raise ImportError("--format delta needs the deltalake package: pip install 'reasonloop[delta]'") from exc
        data = ds.dataset(list(map(str, snap.files)), format="parquet", schema=spec.schema).scanner().to_reader()
        write_deltalake(str(out), data, partition_by=[spec.partition_by], mode="error")
        return ExportResult(out, fmt, snap.rows, len(snap.files), snap.position)
    raise ValueError(f"unknown export format {fmt!r}; use parquet or delta")
