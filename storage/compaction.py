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
import pyarrow as pa
import pyarrow.parquet as pq

from reasonloop.schemas import TableSpec
from reasonloop.storage import commit_log
from reasonloop.storage.layout import COMPACTED_DIR, iter_delta_files, publish, temp_path
from reasonloop.storage.manifest import Manifest, load_manifest, save_manifest, table_lock
from reasonloop.storage.reader import UNLOGGED, read_parquet_sql
from reasonloop.storage.writer import WriteOptions, parquet_kwargs


def _rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


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
    """One partition's rows: each id once, its first committed copy (`_order` gives each input's
    commit position; compacted inputs come first, as they hold earlier commits), ordered for
    pruning. Rows whose id `existing` compacted files already hold are left out."""
    anti = f"WHERE id NOT IN (SELECT id FROM {read_parquet_sql(spec, existing)})" if existing else ""
    columns = ", ".join(f"r.{f.name}" for f in spec.schema)
    return (
        f"SELECT {columns} FROM (SELECT * FROM {read_parquet_sql(spec, inputs, filename=True)} {anti}) r "
        f"LEFT JOIN _order o ON o.filename = r.filename "
        f"QUALIFY row_number() OVER (PARTITION BY r.id ORDER BY coalesce(o.seq, {UNLOGGED}), r.filename) = 1 "
        f"ORDER BY {', '.join('r.' + c for c in spec.sort_by)}, r.id"
    )


def _register_order(con: duckdb.DuckDBPyConnection, table_dir: Path, inputs: list[Path]) -> None:
    logged = commit_log.positions(table_dir)
    seqs = [
        -1 if p.parent.parent.name == COMPACTED_DIR else logged.get(f"{p.parent.name}/{p.name}", UNLOGGED)
        for p in inputs
    ]
    con.register("_order", pa.table({"filename": [str(p) for p in inputs], "seq": pa.array(seqs, pa.int64())}))


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


def take_expired(manifest: Manifest, table_dir: Path, grace_seconds: float, now: float) -> tuple[list[str], int]:
    """Remove obsolete files past their grace period from `manifest.garbage` and return them;
    folded names deleted long enough ago are forgotten (see storage.manifest). Delete the returned
    files only after the manifest is saved (a crash in between leaves orphans for `vacuum`, never
    a manifest naming a missing file). Also returns how many names were forgotten."""
    expired = [rel for rel, since in manifest.garbage if now - since >= grace_seconds]
    manifest.garbage = [(rel, since) for rel, since in manifest.garbage if now - since < grace_seconds]
    forgotten = manifest.forget_deleted(table_dir, grace_seconds, now)
    for rel in expired:
        manifest.mark_deleted(rel, now)
    return expired, forgotten


def compact_table(
    root: Path,
    spec: TableSpec,
    policy: CompactionPolicy = CompactionPolicy(),
    options: WriteOptions | None = None,
    partition: str | None = None,
) -> CompactionResult:
    """Compact every partition of a table with enough delta files, or only `partition` (a
    directory name such as 'run_id=abc': a trainer compacts its own run, never another's)."""
    options = options or WriteOptions()
    table_dir = root / spec.name
    result = CompactionResult(spec.name)
    if not table_dir.is_dir():
        return result
    with table_lock(table_dir):
        listed = list(iter_delta_files(table_dir, partition))
        manifest = load_manifest(table_dir)
        obsolete: list[Path] = []
        unlogged: list[Path] = []  # published by a writer killed before it logged them
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
                _register_order(con, table_dir, inputs)
                out, rows = _write_merged(con, spec, sql, table_dir / COMPACTED_DIR / pname, options)
                obsolete += deltas + (existing if merge_all else [])
                state.files = [str(out.relative_to(table_dir))] + ([] if merge_all else state.files)
                state.folded.update(dict.fromkeys(p.name for p in deltas))
                unlogged += [p for p in deltas if f"{pname}/{p.name}" not in commit_log.positions(table_dir)]
                result.partitions += 1
                result.files_in += len(inputs)
                result.files_out += 1
                result.rows_out += rows
                result.output.append(out)
        finally:
            con.close()
        switched_at = time.time()  # the grace period starts when readers can no longer pick them
        manifest.garbage.extend((str(p.relative_to(table_dir)), switched_at) for p in obsolete)
        expired, forgotten = take_expired(manifest, table_dir, policy.grace_seconds, switched_at)
        # Log what a killed writer published but never logged before its name can be forgotten:
        # the commit log is what recognizes a re-commit of a batch whose file is gone.
        commit_log.append_commits(table_dir, [(f"{p.parent.name}/{p.name}", _rows(p)) for p in unlogged])
        if result.partitions or expired or forgotten:
            manifest.version += 1
            save_manifest(table_dir, manifest)
        for rel in expired:
            (table_dir / rel).unlink(missing_ok=True)
        result.deleted = len(expired)
        result.manifest_version = manifest.version
    return result
