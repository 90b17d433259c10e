"""`reasonloop store ...`: ingest, query and maintain the replay store. Never starts Prefect."""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from reasonloop.schemas import UnknownTableError
from reasonloop.storage import ReplayStore
from reasonloop.storage.ingest import IngestError

app = typer.Typer(help="Ingest, query and maintain the replay store.", no_args_is_help=True)

RootOption = Annotated[
    Path | None,
    typer.Option("--root", envvar="REASONLOOP_HOME", help="Store root (default ./.reasonloop)."),
]


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def ingest(
    table: Annotated[str, typer.Argument(help="Target table, e.g. problems.")],
    files: Annotated[list[Path] | None, typer.Argument(help="JSONL, JSON (a list), CSV or Parquet files.")] = None,
    root: RootOption = None,
    run_id: Annotated[str | None, typer.Option(help="run_id for rows that lack one.")] = None,
    producer: Annotated[str | None, typer.Option(help="producer for rows that lack one.")] = None,
    from_hf: Annotated[
        str,
        typer.Option(
            help="A `datasets` dataset instead of files: a save_to_disk folder, a data file or folder, or a hub id."
        ),
    ] = "",
    split: Annotated[str, typer.Option(help="--from-hf: the dataset split to read.")] = "train",
    mapping: Annotated[
        str,
        typer.Option("--map", help="--from-hf: table_column=dataset_column pairs, e.g. prompt=question,answer=answer."),
    ] = "",
    constants: Annotated[
        str,
        typer.Option(
            "--set", help="--from-hf: columns with one value for every row, e.g. answer_type=exact,source=webinstruct."
        ),
    ] = "",
) -> None:
    """Validate and commit rows; bad rows go to the `rejected` table with their reason.

    Exit code 0 even with rejections (they are data); 2 for unusable input.
    """
    store = ReplayStore(root)
    if bool(files) == bool(from_hf):
        fail("give input files or --from-hf, not both")
    try:
        if from_hf:
            from reasonloop.schemas import get_table
            from reasonloop.storage.hf_ingest import hf_rows, parse_mapping

            get_table(table)
            fixed = parse_mapping(constants, "--set") if constants else {}
            rows = [fixed | r for r in hf_rows(from_hf, split, parse_mapping(mapping))]
            result = store.write(table, rows, run_id=run_id, producer=producer or f"ingest:hf:{from_hf}")
        else:
            result = store.ingest(table, files, run_id=run_id, producer=producer)
    except (UnknownTableError, IngestError) as exc:
        fail(str(exc))
    typer.echo(f"committed {result.committed}, duplicate {result.duplicates}, rejected {result.rejected}")
    for rej in result.rejections[:10]:
        typer.echo(f"  rejected: {rej.reason}")
    if result.rejected > 10:
        typer.echo(f"  ... and {result.rejected - 10} more (SELECT * FROM rejected)")


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL; every table is a view by its name.")],
    root: RootOption = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.table,
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Run SQL against the store's views (problems, rollouts, sft_samples, train_metrics,
    checkpoints, rejected)."""
    import duckdb

    store = ReplayStore(root)
    if fmt is OutputFormat.parquet and out is None:
        fail("--format parquet needs --out FILE")
    with store.reader() as reader:
        try:
            if fmt is OutputFormat.table:
                text = str(reader.con.sql(sql))
            else:
                text = _render(reader.query(sql), fmt, out)
        except duckdb.Error as exc:
            fail(str(exc).splitlines()[0])
    if out is not None and fmt is not OutputFormat.parquet:
        out.write_text(text, encoding="utf-8")
    elif text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _render(result, fmt: OutputFormat, out: Path | None) -> str:
    import pyarrow.parquet as pq

    if fmt is OutputFormat.parquet:
        pq.write_table(result, out)
        return ""
    if fmt is OutputFormat.csv:
        sink = io.StringIO()
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(result.column_names)
        writer.writerows(zip(*(c.to_pylist() for c in result.columns), strict=True))
        return sink.getvalue()
    return json.dumps(result.to_pylist(), default=str, ensure_ascii=False, indent=1)


@app.command()
def stats(root: RootOption = None) -> None:
    """Rows, files and bytes per table."""
    store = ReplayStore(root)
    typer.echo(f"store: {store.root}")
    typer.echo(f"{'table':<14}{'rows':>10}{'files':>8}{'compacted':>11}{'MB':>10}")
    for s in store.stats():
        typer.echo(f"{s['table']:<14}{s['rows']:>10}{s['files']:>8}{s['compacted_files']:>11}{s['bytes'] / 1e6:>10.2f}")


@app.command()
def compact(
    table: Annotated[str | None, typer.Argument(help="One table (default: all).")] = None,
    root: RootOption = None,
) -> None:
    """Merge small files per partition (ordered, deduplicated); readers are never disturbed."""
    store = ReplayStore(root)
    try:
        results = store.compact(table)
    except UnknownTableError as exc:
        fail(str(exc))
    for r in results:
        if r.partitions:
            typer.echo(
                f"{r.table}: {r.files_in} files -> {r.files_out} in {r.partitions} partition(s), {r.rows_out} rows"
            )
    typer.echo("compaction done")


@app.command()
def snapshot(
    table: Annotated[str, typer.Argument(help="Table, e.g. rollouts.")],
    root: RootOption = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON here instead of stdout.")] = None,
) -> None:
    """The exact live files of a consistent snapshot, each row in exactly one of them, and the
    commit-log position it reflects (JSON). Point DuckDB, polars, pyarrow or `datasets` at
    `files`, never at a glob of the folder (see README: "Reading the store from other tools")."""
    try:
        snap = ReplayStore(root).snapshot(table)
    except UnknownTableError as exc:
        fail(str(exc))
    text = json.dumps(snap.to_json(), indent=1)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"{snap.table}: {snap.rows} rows in {len(snap.files)} files at position {snap.position} -> {out}")
    else:
        typer.echo(text)


class ExportFormat(str, Enum):
    parquet = "parquet"
    delta = "delta"


@app.command()
def export(
    table: Annotated[str, typer.Argument(help="Table, e.g. rollouts.")],
    to: Annotated[Path, typer.Option("--to", help="An empty or new folder.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="parquet (hive folders) or delta (one commit).")] = (
        ExportFormat.parquet
    ),
    maps_as_lists: Annotated[
        bool,
        typer.Option(help="Parquet: map columns as lists of {key, value} (Hugging Face datasets has no map type)."),
    ] = False,
    root: RootOption = None,
) -> None:
    """A self-contained copy of a table's unique snapshot, for Spark, Databricks, Trino, polars..."""
    try:
        result = ReplayStore(root).export(table, to, fmt.value, lists_for_maps=maps_as_lists)
    except (UnknownTableError, FileExistsError, ImportError) as exc:
        fail(str(exc))
    typer.echo(
        f"exported {result.rows} rows ({result.files} files, position {result.position}) to {result.out} as {result.format}"
    )


@app.command()
def vacuum(
    root: RootOption = None,
    temp_max_age: Annotated[
        float, typer.Option(help="Remove temp files older than this (s), even of live writers.")
    ] = 3600.0,
) -> None:
    """Remove orphaned temp files and obsolete files past their grace period."""
    r = ReplayStore(root).vacuum(temp_max_age=temp_max_age)
    typer.echo(
        f"removed {r.temps_removed} temp, {r.obsolete_removed} obsolete, {r.orphans_removed} orphan file(s); "
        f"logged {r.commits_logged} unlogged commit(s)"
    )
