"""Reading user files for `store ingest`: JSONL, JSON arrays, CSV and Parquet.

A line that is not valid UTF-8 or not valid JSON becomes a rejection (with its line number),
not an error: the good lines of the same file are kept. A file that cannot be read at all is an
`IngestError` (the CLI exits non-zero without writing anything).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from reasonloop.schemas import TableSpec
from reasonloop.schemas.coerce import CoerceError, decode_text
from reasonloop.schemas.validate import Rejection

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class IngestError(Exception):
    """Input that cannot be used at all (missing, unreadable, unknown format)."""


def input_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(f"{path}: unknown format {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    return fmt


def _jsonl(data: bytes) -> tuple[list[Any], list[Rejection]]:
    rows, bad = [], []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append(Rejection(repr(line), f"line {number}: invalid UTF-8 at byte {exc.start}", "decode"))
            continue
        try:
            rows.append(json.loads(text))
        except json.JSONDecodeError as exc:
            bad.append(Rejection(text, f"line {number}: malformed JSON ({exc.msg})", "decode"))
    return rows, bad


def _csv(data: bytes, spec: TableSpec) -> tuple[list[Any], list[Rejection]]:
    text = data.decode("utf-8", errors="surrogateescape")
    types = {f.name: f.type for f in spec.schema}
    rows, bad = [], []
    for number, cells in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
        if None in cells:
            bad.append(Rejection(cells.get(None), f"line {number}: more cells than the header", "decode"))
            continue
        try:
            row = {}
            for key, cell in cells.items():
                if cell is None:
                    raise CoerceError("fewer cells than the header")
                cell.encode("utf-8")  # surrogate-escaped bytes: not UTF-8
                row[key] = decode_text(cell, types[key]) if key in types else cell
            rows.append(row)
        except UnicodeEncodeError:
            bad.append(Rejection(repr(cells), f"line {number}: invalid UTF-8", "decode"))
        except CoerceError as exc:
            bad.append(Rejection(cells, f"line {number}: {exc}", "decode"))
    return rows, bad


def read_input(path: Path, spec: TableSpec) -> tuple[list[Any] | pa.Table, list[Rejection]]:
    """Rows (dicts, or an Arrow table for Parquet) and the lines rejected while decoding."""
    fmt = input_format(path)
    try:
        if fmt == "parquet":
            return pq.read_table(path), []
        data = path.read_bytes()
    except (OSError, pa.ArrowException) as exc:
        raise IngestError(f"{path}: cannot read ({exc})") from None
    if fmt == "jsonl":
        return _jsonl(data)
    if fmt == "csv":
        return _csv(data, spec)
    try:
        rows = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IngestError(f"{path}: not a JSON document ({exc})") from None
    if not isinstance(rows, list):
        raise IngestError(f"{path}: a .json file must hold a list of rows")
    return rows, []
