"""Compaction: fold a partition's small delta files into one ordered, deduplicated file.

Readers never see a row twice or miss one, and a writer committing meanwhile never loses its
file: compaction writes a new file, then switches the manifest atomically (storage.manifest);
deltas it did not list stay live. Obsolete files are deleted only after a grace period.

Per partition, a compaction appends one compacted file holding the deltas' rows minus ids the
partition's compacted files already have (an anti-join on the id column only). When a partition
reaches `max_compacted_files`, everything is merged into one file instead (so file counts stay
bounded and query cost stays flat as a run grows).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from reasonloop.schemas import TableSpec
from reasonloop.storage.layout import COMPACTED_DIR, iter_delta_files, publish, temp_path
from reasonloop.storage.manifest import Manifest, load_manifest, save_manifest, table_lock
from reasonloop.storage.reader import read_parquet_sql
from reasonloop.storage.writer import WriteOptions, parquet_kwargs


@dataclass(frozen=True)
class CompactionPolicy:
    min_files: int = 2  # compact a partition once it has at least this many delta files
    max_compacted_files: int = 8  # then merge the partition's compacted files into one
    grace_seconds: float = 60.0  # keep obsolete files this long for readers still using them


@dataclass
class CompactionResult:
    table: str
    partitions: int = 0
    files_in: int = 0
    files_out: int = 0
    rows_out: int = 0
    deleted: int = 0
    manifest_version: int = 0
    output: list[Path] = field(default_factory=list)


def _merge_sql(spec: TableSpec, inputs: list[Path], existing: list[Path]) -> str:
    anti = f"WHERE id NOT IN (SELECT id FROM {read_parquet_sql(spec, existing)})" if existing else ""
    order = ", ".join(spec.sort_by)
    columns = ", ".join(f.name for f in spec.schema)
    return (
        f"SELECT {columns} FROM {read_parquet_sql(spec, inputs, filename=True)} {anti} "
        f"QUALIFY row_number() OVER (PARTITION BY id ORDER BY created_at, filename) = 1 "
        f"ORDER BY {order}, id"
    )


def _write_merged(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, sql: str, out_dir: Path, options: WriteOptions
) -> tuple[Path, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"c-{uuid.uuid4().hex}.parquet"
    tmp = temp_path(out_dir)
    rows = 0
    try:
        kwargs = parquet_kwargs(spec, options)
        row_group_size = kwargs.pop("row_group_size")
        reader = con.sql(sql).to_arrow_reader(row_group_size)
        with pq.ParquetWriter(tmp, spec.schema, **kwargs) as writer:
            for batch in reader:
                writer.write_batch(batch.cast(spec.schema), row_group_size=row_group_size)
                rows += batch.num_rows
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    publish(tmp, final, exclusive=False, sync=options.sync)
    return final, rows


def take_expired(manifest: Manifest, grace_seconds: float, now: float) -> list[str]:
    """Remove obsolete files past their grace period from `manifest.garbage` and return them.
    Delete them only after the manifest without them is saved (a crash in between leaves
    orphans for `vacuum`, never a manifest naming a missing file)."""
    expired = [rel for rel, since in manifest.garbage if now - since >= grace_seconds]
    manifest.garbage = [(rel, since) for rel, since in manifest.garbage if now - since < grace_seconds]
    return expired


def compact_table(
    root: Path,
    spec: TableSpec,
    policy: CompactionPolicy = CompactionPolicy(),
    options: WriteOptions | None = None,
) -> CompactionResult:
    options = options or WriteOptions()
    table_dir = root / spec.name
    result = CompactionResult(spec.name)
    if not table_dir.is_dir():
        return result
    with table_lock(table_dir):
        listed = list(iter_delta_files(table_dir))
        manifest = load_manifest(table_dir)
        obsolete: list[Path] = []
        by_partition: dict[str, list[Path]] = {}
        for path in listed:
            if not manifest.is_folded(path.parent.name, path.name):
                by_partition.setdefault(path.parent.name, []).append(path)
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        try:
            for pname, deltas in sorted(by_partition.items()):
                if len(deltas) < policy.min_files:
                    continue
                state = manifest.partition(pname)
                existing = [table_dir / rel for rel in state.files]
                merge_all = len(existing) + 1 > policy.max_compacted_files
                inputs = deltas + existing if merge_all else deltas
                sql = _merge_sql(spec, inputs, [] if merge_all else existing)
                out, rows = _write_merged(con, spec, sql, table_dir / COMPACTED_DIR / pname, options)
                obsolete += deltas + (existing if merge_all else [])
                state.files = [str(out.relative_to(table_dir))] + ([] if merge_all else state.files)
                state.folded.update(p.name for p in deltas)
                result.partitions += 1
                result.files_in += len(inputs)
                result.files_out += 1
                result.rows_out += rows
                result.output.append(out)
        finally:
            con.close()
        switched_at = time.time()  # the grace period starts when readers can no longer pick them
        manifest.garbage.extend((str(p.relative_to(table_dir)), switched_at) for p in obsolete)
        expired = take_expired(manifest, policy.grace_seconds, switched_at)
        if result.partitions or expired:
            manifest.version += 1
            save_manifest(table_dir, manifest)
        for rel in expired:
            (table_dir / rel).unlink(missing_ok=True)
        result.deleted = len(expired)
        result.manifest_version = manifest.version
    return result
