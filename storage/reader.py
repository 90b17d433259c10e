"""Reading: a consistent snapshot of a table's files, and DuckDB in-memory views over them.

No `.duckdb` database file is opened for writing (its lock would exclude every other process,
readers included): each reader holds an in-memory DuckDB connection whose views name the
Parquet files of a snapshot. Any number of reader and writer processes coexist.

A row's identity is (partition, id). Compacted files hold each identity once and before any
delta (compaction deduplicates and absorbs earlier commits), so only delta files can repeat one;
the view deduplicates that part alone, keeping the first copy in commit order (the position of
its file in the table's commit log; a file the log does not name yet comes after every logged
one). Commit order, not `created_at`: clocks differ between writers, and a batch is stamped long
before it is published.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from reasonloop.schemas import TABLES, TableSpec, get_table
from reasonloop.storage import commit_log
from reasonloop.storage.layout import iter_delta_files
from reasonloop.storage.manifest import load_manifest

UNLOGGED = 2**62  # the commit position of a file the log does not name yet: after every logged one


@dataclass(frozen=True)
class Snapshot:
    """The files that make up one table at one moment."""

    table: str
    compacted: tuple[Path, ...]
    deltas: tuple[Path, ...]
    manifest_version: int

    @property
    def files(self) -> tuple[Path, ...]:
        return self.compacted + self.deltas


Bounds = dict[str, tuple[int | None, int | None]]  # column -> (low, high) a filter keeps; None: open


def snapshot(root: Path, table: str, partition: str | None = None, *, bounds: Bounds | None = None) -> Snapshot:
    """List deltas first, then read the manifest (see storage.manifest for why this order).
    `bounds`: leave out the delta files whose logged range of a column lies outside (low, high)
    — files of which the caller's filter keeps no row, so leaving them out changes no result and
    DuckDB never opens them. Compacted files stay (few, and pruned by row-group statistics)."""
    table_dir = root / table
    listed = list(iter_delta_files(table_dir, partition))
    manifest = load_manifest(table_dir)
    deltas = tuple(p for p in listed if not manifest.is_folded(p.parent.name, p.name))
    if bounds:
        ranges = commit_log.file_ranges(table_dir)
        deltas = tuple(p for p in deltas if may_match(ranges.get(f"{p.parent.name}/{p.name}"), bounds))
    compacted = tuple(table_dir / rel for rel in manifest.compacted_files(partition))
    return Snapshot(table, compacted, deltas, manifest.version)


def may_match(ranges: commit_log.Ranges | None, bounds: Bounds) -> bool:
    """Whether a file with these logged ranges can hold a row within `bounds` (unknown: yes)."""
    if not ranges:
        return True
    for column, (low, high) in bounds.items():
        if column not in ranges:
            continue
        file_low, file_high = ranges[column]
        if (low is not None and file_high < low) or (high is not None and file_low > high):
            return False
    return True


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def read_parquet_sql(spec: TableSpec, files: Sequence[Path], *, filename: bool = False) -> str:
    paths = ", ".join(_sql_str(str(p)) for p in files)
    extra = ", filename=true" if filename else ""
    return (
        f"read_parquet([{paths}], hive_partitioning=true, union_by_name=true, "
        f"hive_types={{{_sql_str(spec.partition_by)}: 'VARCHAR'}}{extra})"
    )


def scan_sql(spec: TableSpec, snap: Snapshot, where: str | None = None) -> str:
    """A SELECT over a snapshot with `where` (code-defined SQL, values as $params) applied before
    deduplication, so filters prune files and row groups first. With more than one delta file it
    reads `_commit_order_<table>` (see StoreReader.order_table)."""
    cond = f"WHERE {where}" if where else ""
    if not snap.files:
        return f"SELECT * FROM _empty_{spec.name} {cond}"
    parts = []
    key = f"{spec.partition_by}, id"
    if snap.compacted:
        parts.append(f"SELECT * FROM {read_parquet_sql(spec, snap.compacted)} {cond}")
    if len(snap.deltas) == 1 and not snap.compacted:
        parts.append(f"SELECT * FROM {read_parquet_sql(spec, snap.deltas)} {cond}")  # one file: nothing to repeat
    elif snap.deltas:
        rows = f"SELECT * FROM {read_parquet_sql(spec, snap.deltas, filename=True)} {cond}"
        if snap.compacted:
            rows = (
                f"SELECT d.* FROM ({rows}) d ANTI JOIN (SELECT {key} FROM {read_parquet_sql(spec, snap.compacted)}) c "
                f"ON d.{spec.partition_by} = c.{spec.partition_by} AND d.id = c.id"
            )
        if len(snap.deltas) > 1:
            rows = (
                f"SELECT r.* FROM ({rows}) r LEFT JOIN _commit_order_{spec.name} o ON o.filename = r.filename "
                f"QUALIFY row_number() OVER (PARTITION BY r.{spec.partition_by}, r.id "
                f"ORDER BY coalesce(o.seq, {UNLOGGED}), r.filename) = 1"
            )
        parts.append(f"SELECT * EXCLUDE (filename) FROM ({rows})")
    return " UNION ALL BY NAME ".join(f"({p})" for p in parts)


class StoreReader:
    """An in-memory DuckDB connection with one view per table over a snapshot of the store.

    Views are a snapshot: call `refresh()` to see rows committed since. Parameters are bound by
    DuckDB (`$name` or `?`), never formatted into the SQL text.
    """

    def __init__(self, root: Path, *, threads: int | None = None) -> None:
        self.root = root
        self.con = duckdb.connect()
        self.con.execute("SET enable_progress_bar = false")
        if threads is not None:
            self.con.execute(f"SET threads = {int(threads)}")
        for spec in TABLES.values():
            self.con.register(f"_empty_{spec.name}", spec.schema.empty_table())
        self.snapshots: dict[str, Snapshot] = {}
        self._orders: dict[str, int] = {}  # table -> commit positions registered
        self.refresh()

    def order_table(self, table: str) -> None:
        """Register `_commit_order_<table>` (filename, seq): every logged file of the table with
        its commit position; a superset of any snapshot's deltas, re-registered when it grew."""
        table_dir = self.root / table
        logged = commit_log.positions(table_dir)
        if self._orders.get(table) == len(logged):
            return
        names = [str(table_dir / rel) for rel in logged]
        self.con.register(
            f"_commit_order_{table}",
            pa.table({"filename": pa.array(names, pa.string()), "seq": pa.array(list(logged.values()), pa.int64())}),
        )
        self._orders[table] = len(logged)

    def refresh(self, tables: Sequence[str] | None = None) -> None:
        for name in tables or TABLES:
            spec = get_table(name)
            snap = snapshot(self.root, name)
            self.snapshots[name] = snap
            if len(snap.deltas) > 1:
                self.order_table(name)
            self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {scan_sql(spec, snap)}")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
        """Run SQL against the views; the whole result as an Arrow table."""
        return self.con.sql(sql, params=params).to_arrow_table()

    def scan(
        self, table: str, *, where: str | None = None, partition: str | None = None, bounds: Bounds | None = None
    ) -> str:
        """SQL text for a fresh snapshot of `table` (optionally one partition dir, e.g.
        'run_id=abc'), filtered by `where` before deduplication. `bounds` must be implied by
        `where` (e.g. `policy_version BETWEEN $low AND $high` with the same values): files
        outside them are not read at all (see `snapshot`)."""
        spec = get_table(table)
        snap = snapshot(self.root, table, partition, bounds=bounds)
        if len(snap.deltas) > 1:
            self.order_table(table)
        return scan_sql(spec, snap, where)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
