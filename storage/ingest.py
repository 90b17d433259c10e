"""Reading user files for `store ingest`: JSONL, JSON arrays, CSV and Parquet.

No input line can take an ingest down: a line (or JSON element, CSV record, Parquet row group) that
cannot be decoded, whatever the reason — invalid UTF-8, malformed JSON, nesting deeper than the
parser's stack, an integer of thousands of digits, a duplicate key, a ragged CSV record — becomes a
rejection with its line number and the text as received, and the good rows of the same file are
kept. Encodings that are merely unusual are accepted: a UTF-8 byte-order mark, CRLF or lone-CR
line ends. Only a file that cannot be read at all is an `IngestError` (the CLI exits non-zero
before writing anything).

Every decoded row comes with a `Source` (its line and text), so a row that validation rejects later
is quarantined with its line number and its original text too (see ReplayStore.ingest).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
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
BOM = b"\xef\xbb\xbf"
CSV_FIELD_LIMIT = 1 << 30  # the csv module's default (128 KiB) would reject a long prompt outright


class IngestError(Exception):
    """Input that cannot be used at all (missing, unreadable, unknown format)."""


class RawText(str):
    """A rejected input kept verbatim (the line as it was in the file), not re-encoded as JSON."""


@dataclass(frozen=True)
class Source:
    where: str  # "line 12", "element 3 (line 12)", "row 7"
    raw: Any  # what the file held for it (RawText for text formats)


@dataclass
class Decoded:
    rows: list[Any] | pa.Table
    sources: list[Source] | None  # one per row of `rows` (None for an Arrow table: see `where`)
    rejected: list[Rejection] = field(default_factory=list)
    row_groups: list[tuple[int, int]] = field(default_factory=list)  # Parquet: (first row here, in the file)
    label: str = ""  # prefix of every reason (the file's name)

    def where(self, index: int) -> str:
        """Where row `index` of `rows` is in the file."""
        if self.sources is not None:
            return self.sources[index].where
        first_here, first_in_file = max((g for g in self.row_groups if g[0] <= index), default=(0, 0))
        return f"row {first_in_file + index - first_here + 1}"

    def raw(self, index: int, fallback: Any) -> Any:
        return self.sources[index].raw if self.sources is not None else fallback


def input_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(f"{path}: unknown format {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    return fmt


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r:.40}")
        out[key] = value
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)


def why_unparsable(exc: BaseException) -> str:
    """A rejection reason for a JSON value the parser refused."""
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "malformed JSON (nested too deeply to parse)"
    text = str(exc)
    if "integer string conversion" in text or "digits" in text:
        return "malformed JSON (an integer too large to convert: over 4300 digits)"
    if text.startswith("duplicate key"):
        return f"malformed JSON ({text})"
    return f"cannot parse ({type(exc).__name__}: {text[:200]})"


def _parse_json(text: str, pos: int = 0) -> tuple[Any, int]:
    """One JSON value at `pos` (duplicate keys refused); raises what the parser raises."""
    return _DECODER.raw_decode(text, pos)


def _jsonl(data: bytes) -> Decoded:
    out = Decoded([], [])
    # splitlines: \n, \r\n and a lone \r all end a line; JSON strings cannot hold a raw CR or LF,
    # so no valid row is ever split.
    for number, line in enumerate(data.removeprefix(BOM).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            out.rejected.append(
                Rejection(RawText(repr(line)), f"line {number}: invalid UTF-8 at byte {exc.start}", "decode")
            )
            continue
        try:
            value, end = _parse_json(text.lstrip())
            if text.lstrip()[end:].strip():
                raise json.JSONDecodeError("extra data after the row", text.lstrip(), end)
        except (ValueError, RecursionError) as exc:
            out.rejected.append(Rejection(RawText(text), f"line {number}: {why_unparsable(exc)}", "decode"))
            continue
        out.rows.append(value)
        out.sources.append(Source(f"line {number}", RawText(text)))
    return out


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _skip(text: str, pos: int, chars: str = " \t\r\n") -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _json_document(data: bytes, path: Path) -> Decoded:
    """A JSON list of rows, parsed element by element: an element that fails to parse is rejected
    and parsing resumes at the next line that starts a new element, so garbage between rows
    loses only itself."""
    try:
        text = data.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not UTF-8 text (byte {exc.start}); use JSONL to keep the readable rows") from None
    pos = _skip(text, 0)
    if pos >= len(text) or text[pos] != "[":
        raise IngestError(f"{path}: a .json file must hold a list of rows")
    out, index = Decoded([], []), 0
    pos = _skip(text, pos + 1)
    while pos < len(text) and text[pos] != "]":
        index += 1
        start = pos
        try:
            value, pos = _parse_json(text, pos)
            out.rows.append(value)
            out.sources.append(Source(f"element {index} (line {_line_of(text, start)})", RawText(text[start:pos])))
        except (ValueError, RecursionError) as exc:
            pos = _next_element(text, start)
            reason = f"element {index} (line {_line_of(text, start)}): {why_unparsable(exc)}"
            out.rejected.append(Rejection(RawText(text[start:pos].rstrip(" \t\r\n,")), reason, "decode"))
        pos = _skip(text, pos, " \t\r\n,")
    return out


def _next_element(text: str, start: int) -> int:
    """Where parsing resumes after a bad element: the next line that opens a value (after optional
    commas), or a closing bracket that ends the document, or the end."""
    pos = start
    while (newline := text.find("\n", pos)) >= 0:
        pos = _skip(text, newline + 1, " \t\r,")
        if pos < len(text) and (text[pos] in "{[" or text[pos:].strip() == "]"):
            return pos
    return len(text)


def _csv(data: bytes, spec: TableSpec) -> Decoded:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    text = data.removeprefix(BOM).decode("utf-8", errors="surrogateescape")
    types = {f.name: f.type for f in spec.schema}
    reader = csv.reader(io.StringIO(text, newline=""))
    out = Decoded([], [])
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return out
    while True:
        start = reader.line_num + 1  # a record may span lines (quoted newlines): report where it starts
        try:
            cells = next(reader)
        except StopIteration:
            return out
        except csv.Error as exc:
            out.rejected.append(Rejection(RawText(""), f"line {start}: malformed CSV ({exc})", "decode"))
            continue
        if not cells:
            continue
        raw = RawText(_csv_line(cells))
        where = f"line {start}"
        if len(cells) != len(header):
            many = "more" if len(cells) > len(header) else "fewer"
            out.rejected.append(
                Rejection(raw, f"{where}: {many} cells ({len(cells)}) than the header ({len(header)})", "decode")
            )
            continue
        try:
            row = {}
            for key, cell in zip(header, cells, strict=True):
                cell.encode("utf-8")  # surrogate-escaped bytes: not UTF-8
                row[key] = decode_text(cell, types[key]) if key in types else cell
        except UnicodeEncodeError:
            out.rejected.append(Rejection(RawText(repr(cells)), f"{where}: invalid UTF-8", "decode"))
            continue
        except (CoerceError, RecursionError, ValueError) as exc:
            reason = why_unparsable(exc) if not isinstance(exc, CoerceError) else str(exc)
            out.rejected.append(Rejection(raw, f"{where}: {reason}", "decode"))
            continue
        out.rows.append(row)
        out.sources.append(Source(where, raw))


def _csv_line(cells: list[str]) -> str:
    sink = io.StringIO()
    csv.writer(sink, lineterminator="").writerow(cells)
    return sink.getvalue()


def _parquet(path: Path) -> Decoded:
    """Row group by row group: a row group that cannot be decoded is rejected (with its row
    range), the others are kept. Schema problems (a wrong type, a missing or unknown column) are
    validation's to report, per row."""
    try:
        handle = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise IngestError(f"{path}: not a readable Parquet file ({exc})") from None
    tables, rejected, groups, first, kept = [], [], [], 0, 0
    for k in range(handle.num_row_groups):
        rows = handle.metadata.row_group(k).num_rows
        try:
            tables.append(handle.read_row_group(k))
            groups.append((kept, first))
            kept += rows
        except (OSError, pa.ArrowException, ValueError) as exc:
            raw = RawText(json.dumps({"file": str(path), "row_group": k, "rows": [first + 1, first + rows]}))
            rejected.append(
                Rejection(raw, f"rows {first + 1}-{first + rows} (row group {k}): cannot decode ({exc})", "decode")
            )
        first += rows
    if not tables:
        return Decoded(handle.schema_arrow.empty_table(), None, rejected, groups)
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as exc:
        raise IngestError(f"{path}: row groups disagree on the schema ({exc})") from None
    return Decoded(table, None, rejected, groups)


def read_input(path: Path, spec: TableSpec) -> Decoded:
    """Rows (dicts, or an Arrow table for Parquet), their sources, and what failed to decode."""
    fmt = input_format(path)
    if fmt == "parquet":
        return _parquet(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot read ({exc})") from None
    if fmt == "jsonl":
        return _jsonl(data)
    if fmt == "csv":
        return _csv(data, spec)
    return _json_document(data, path)
