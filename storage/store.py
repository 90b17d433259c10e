"""The replay store: the one place every producer writes rows and every consumer reads them.

    store = ReplayStore("./.reasonloop")
    result = store.write("problems", [{"prompt": "12+34=", "answer": "46", "answer_type": "exact"}])
    with store.reader() as r:
        r.query("SELECT count(*) FROM problems")

Writes validate, quarantine bad rows in `rejected` (with reasons), and commit the rest as
immutable Parquet files; reads are DuckDB views over a snapshot of those files.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from reasonloop.schemas import TABLES, UnknownTableError, get_table, row_id
from reasonloop.schemas.rejected import REJECTED
from reasonloop.schemas.validate import Limits, Rejection, Validated, validate_rows, validate_table
from reasonloop.storage import commit_log
from reasonloop.storage.compaction import CompactionPolicy, CompactionResult, compact_table
from reasonloop.storage.export import ExportResult, UniqueSnapshot, export, unique_snapshot
from reasonloop.storage.ingest import Decoded, RawText, input_format, read_input
from reasonloop.storage.janitor import VacuumResult, vacuum
from reasonloop.storage.layout import resolve_root
from reasonloop.storage.media import MediaLimits, MediaStore, attach_media
from reasonloop.storage.reader import Snapshot, StoreReader, snapshot
from reasonloop.storage.writer import WriteOptions, commit_rows

UNKNOWN_TABLE_PARTITION = "unknown"


@dataclass(frozen=True)
class StoreConfig:
    limits: Limits = field(default_factory=Limits)
    write: WriteOptions = field(default_factory=WriteOptions)
    compaction: CompactionPolicy = field(default_factory=CompactionPolicy)
    media: MediaLimits = field(default_factory=MediaLimits)


@dataclass
class CommitResult:
    table: str
    committed: int = 0  # rows newly visible
    duplicates: int = 0  # rows already in the store (or repeated within the batch)
    rejected: int = 0  # rows quarantined in `rejected`
    files: list[Path] = field(default_factory=list)  # files this commit published
    existing: list[Path] = field(default_factory=list)  # files already holding identical batches
    folded: int = 0  # duplicate rows whose file compaction absorbed (read them with SQL)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def batch_files(self) -> list[Path]:
        """Every file holding this batch's committed rows: new ones and identical earlier ones."""
        return self.files + self.existing

    def add(self, other: CommitResult) -> None:
        self.committed += other.committed
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.files += other.files
        self.existing += other.existing
        self.folded += other.folded
        self.rejections += other.rejections


def _raw_json(raw: Any) -> str:
    """The quarantined form of a rejected input: file text verbatim, anything else as JSON (repr
    where even that fails, e.g. nesting deeper than the encoder's stack)."""
    if isinstance(raw, RawText):
        return str(raw)
    try:
        return json.dumps(raw, default=repr, ensure_ascii=True, allow_nan=True)
    except (RecursionError, ValueError, TypeError):
        return repr(raw)[: 1 << 20]


def _located(rejection: Rejection, decoded: Decoded) -> Rejection:
    """A validation rejection of an ingested row, with its place in the file and its text there."""
    if rejection.index is None:
        return rejection
    return replace(
        rejection,
        raw=decoded.raw(rejection.index, rejection.raw),
        reason=f"{decoded.label}{decoded.where(rejection.index)}: {rejection.reason}",
    )


class ReplayStore:
    def __init__(self, root: str | os.PathLike | None = None, config: StoreConfig | None = None) -> None:
        self.root = resolve_root(root)
        self.config = config or StoreConfig()
        self.root.mkdir(parents=True, exist_ok=True)
        self.media = MediaStore(self.root, limits=self.config.media, sync=self.config.write.sync)

    # ------------------------------------------------------------------ writing
    def write(
        self,
        table: str,
        data: Iterable[Any] | pa.Table,
        *,
        run_id: str | None = None,
        producer: str | None = None,
        config_hash: str | None = None,
        rejections: Sequence[Rejection] = (),
        sync: bool | None = None,
        decoded: Decoded | None = None,
    ) -> CommitResult:
        """Validate and commit rows (dicts, an Arrow table or a polars DataFrame). Fields a row
        lacks are filled from `run_id`/`producer`/`config_hash`, then the table's defaults.
        `sync` overrides the store's fsync setting for this commit (atomicity is unaffected).
        `decoded`: where the rows came from (ingest), so a rejected row is quarantined with its
        line number and its text as it was in the file."""
        overrides = {
            k: v for k, v in (("run_id", run_id), ("producer", producer), ("config_hash", config_hash)) if v is not None
        }
        now = datetime.now(timezone.utc)
        if hasattr(data, "to_arrow") and not isinstance(data, pa.Table):  # polars
            data = data.to_arrow()
        try:
            spec = get_table(table)
        except UnknownTableError as exc:
            rows = data.to_pylist() if isinstance(data, pa.Table) else list(data)
            bad = list(rejections) + [Rejection(r, str(exc), "table") for r in rows]
            return self._quarantine(UNKNOWN_TABLE_PARTITION, CommitResult(table), bad, overrides, now)
        if "media_ref" in spec.column_names:  # images put first, so a committed row's image exists
            data, media_rejections = self._attach_media(data)
            rejections = list(rejections) + media_rejections
        kwargs = {"limits": self.config.limits, "overrides": overrides, "now": now}
        checked: Validated = (
            validate_table(spec, data, **kwargs) if isinstance(data, pa.Table) else validate_rows(spec, data, **kwargs)
        )
        if decoded is not None:
            checked.rejected = [_located(r, decoded) for r in checked.rejected]
        options = self.config.write if sync is None else replace(self.config.write, sync=sync)
        committed = commit_rows(self.root, spec, checked.good, options)
        result = CommitResult(
            table, committed.rows, committed.duplicates, files=committed.files, existing=committed.existing,
            folded=committed.folded,
        )  # fmt: skip
        return self._quarantine(table, result, list(rejections) + checked.rejected, overrides, now)

    def _attach_media(self, data: Any) -> tuple[Any, list[Rejection]]:
        if isinstance(data, pa.Table):
            if "media_ref" not in data.column_names or data.column("media_ref").null_count == data.num_rows:
                return data, []
            refs = data.column("media_ref").to_pylist()
            if all(ref is None or self.media.exists(ref) for ref in set(refs)):
                return data, []
            data = data.to_pylist()  # some reference is bad: find the rows, as for dicts
        good, bad = attach_media(self.media, list(data))
        return good, [Rejection(raw, reason, "media") for raw, reason in bad]

    def write_many(
        self, table: str, batches: Iterable[Any], *, workers: int | None = None, **kwargs: Any
    ) -> CommitResult:
        """Commit many batches, `workers` at a time (default: one per core). Each batch is still
        its own commit; Parquet encoding releases the GIL, so a bulk load uses every core (a
        single pyarrow file write is single-threaded). Results are summed in batch order."""
        total = CommitResult(table)
        workers = workers or (os.cpu_count() or 1) + 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: deque = deque()
            for batch in batches:  # bounded window: at most 2 * workers batches in memory
                pending.append(pool.submit(self.write, table, batch, **kwargs))
                if len(pending) >= 2 * workers:
                    total.add(pending.popleft().result())
            while pending:
                total.add(pending.popleft().result())
        return total

    def _quarantine(
        self, table_name: str, result: CommitResult, bad: list[Rejection], overrides: dict, now: datetime
    ) -> CommitResult:
        if not bad:
            return result
        rows = []
        for rej in bad:
            raw = _raw_json(rej.raw)
            rows.append(
                {
                    "id": row_id(REJECTED.name, (table_name, raw, rej.reason)),
                    "run_id": overrides.get("run_id", "ingest"),
                    "created_at": now,
                    "producer": overrides.get("producer", "user"),
                    "config_hash": overrides.get("config_hash", ""),
                    "schema_version": REJECTED.version,
                    "table_name": table_name,
                    "raw": raw,
                    "reason": rej.reason,
                    "validator": rej.validator,
                }
            )
        commit_rows(self.root, REJECTED, pa.Table.from_pylist(rows, schema=REJECTED.schema), self.config.write)
        result.rejected += len(bad)
        result.rejections += bad
        return result

    def ingest(self, table: str, paths: Sequence[str | os.PathLike], **write_kwargs: Any) -> CommitResult:
        """Commit JSONL/JSON/CSV/Parquet files. Every path is checked before anything is written;
        an unknown table or unusable file raises (UnknownTableError, IngestError)."""
        spec = get_table(table)
        files = [Path(p) for p in paths]
        for path in files:
            input_format(path)
        total = CommitResult(table)
        for path in files:
            decoded = read_input(path, spec)
            decoded.label = f"{path}: "  # every reason names the file
            bad = [replace(r, reason=decoded.label + r.reason) for r in decoded.rejected]
            total.add(self.write(table, decoded.rows, rejections=bad, decoded=decoded, **write_kwargs))
        return total

    # ------------------------------------------------------------------ reading
    def reader(self, *, threads: int | None = None) -> StoreReader:
        return StoreReader(self.root, threads=threads)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
        with self.reader() as r:
            return r.query(sql, params)

    def read_files(self, table: str, files: Sequence[Path]) -> pa.Table:
        """Rows of specific committed files (e.g. the batch a step just wrote), in file order,
        without listing the rest of the table."""
        spec = get_table(table)
        if not files:
            return spec.schema.empty_table()
        return pa.concat_tables([pq.read_table(f, schema=spec.schema) for f in files])

    # ------------------------------------------------------------------ upkeep
    def compact(
        self, table: str | None = None, policy: CompactionPolicy | None = None, *, partition: str | None = None
    ) -> list[CompactionResult]:
        """Compact one table or all; with `partition` (e.g. 'run_id=abc') only that partition."""
        names = [get_table(table).name] if table else list(TABLES)
        policy = policy or self.config.compaction
        return [compact_table(self.root, TABLES[n], policy, self.config.write, partition) for n in names]

    def delta_file_count(self, table: str, partition: str | None = None) -> int:
        """Live (not yet compacted) files of a table or one partition dir, e.g. 'run_id=abc'."""
        return len(snapshot(self.root, get_table(table).name, partition).deltas)

    def vacuum(self, *, temp_max_age: float = 3600.0) -> VacuumResult:
        return vacuum(self.root, grace_seconds=self.config.compaction.grace_seconds, temp_max_age=temp_max_age)

    def stats(self) -> list[dict[str, Any]]:
        out = []
        with self.reader() as r:
            for name in TABLES:
                snap = r.snapshots[name]
                rows = r.query(f"SELECT count(*) AS n FROM {name}").column("n")[0].as_py()
                size = sum(p.stat().st_size for p in snap.files if p.exists())
                out.append(
                    {
                        "table": name,
                        "rows": rows,
                        "files": len(snap.files),
                        "compacted_files": len(snap.compacted),
                        "bytes": size,
                        "manifest_version": snap.manifest_version,
                    }
                )
        return out

    def commit_position(self, table: str) -> int:
        """The table's newest commit sequence number (see storage.commit_log); 0 when empty."""
        return commit_log.head(self.root / get_table(table).name)

    def rows_since(self, table: str, position: int) -> tuple[int, int]:
        """(rows committed after `position` in commit order, the newest position)."""
        return commit_log.rows_after(self.root / get_table(table).name, position)

    def live_files(self, table: str, partition: str | None = None) -> Snapshot:
        """The files of a consistent snapshot as reasonloop's own readers see them (compacted files,
        then deltas; an id may repeat across deltas: the views deduplicate)."""
        return snapshot(self.root, get_table(table).name, partition)

    def snapshot(self, table: str) -> UniqueSnapshot:
        """For other tools: the exact live files of a consistent snapshot, each row in exactly one
        of them (partitions with repeated ids are compacted first), and the commit-log position it
        reflects. Read `.files` with DuckDB, polars, pyarrow or `datasets` (README)."""
        spec = get_table(table)
        return unique_snapshot(self.root, spec, self.config.compaction, self.config.write)

    def export(
        self, table: str, out: str | os.PathLike, fmt: str = "parquet", *, lists_for_maps: bool = False
    ) -> ExportResult:
        """A self-contained copy of the table's unique snapshot: `parquet` or `delta` (see
        storage.export; `lists_for_maps` for Hugging Face `datasets`), with the images its rows
        reference under `<out>/_media` (storage/media.py)."""
        spec = get_table(table)
        snap = self.snapshot(table)
        result = export(snap, spec, Path(out), fmt, lists_for_maps=lists_for_maps)
        if "media_ref" in spec.column_names and snap.files:  # the rows' images travel with them
            files = ds.dataset(list(map(str, snap.files)), format="parquet", schema=spec.schema)
            refs = files.to_table(columns=["media_ref"]).column("media_ref")  # older files: null
            self.media.copy_to({r for r in refs.to_pylist() if r}, Path(out))
        return result
