"""Pathological input files: no line can take an ingest down. Each file holds good rows beside one
bad line (or an unusual but valid encoding); the bad line is quarantined with its reason and line
number, and every good row of the same file is committed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reasonloop.schemas.validate import Limits
from reasonloop.storage import ReplayStore, StoreConfig
from reasonloop.storage.ingest import IngestError

GOOD = [
    {"prompt": "12+34=", "answer": "46", "answer_type": "exact"},
    {"prompt": "1+1=", "answer": "2", "answer_type": "exact"},
]


def jsonl(*lines: bytes | str, sep: bytes = b"\n") -> bytes:
    return sep.join(x.encode() if isinstance(x, str) else x for x in lines) + sep


def good(i: int) -> str:
    return json.dumps(GOOD[i])


DEEP = "[" * 5000 + "]" * 5000
HUGE_INT = "9" * 5000
MEGA = "x" * (3 * 2**20)

# (name, file name, contents, good rows expected, [(line, words of the reason)])
CASES = [
    ("deep nesting as a value", "p.jsonl",
     jsonl(good(0), '{"prompt": ' + DEEP + ', "answer": "1", "answer_type": "exact"}', good(1)), 2,
     [("line 2", "nested too deeply")]),
    ("deep nesting as the whole line", "p.jsonl", jsonl(good(0), DEEP, good(1)), 2, [("line 2", "nested too deeply")]),
    ("deep objects", "p.jsonl", jsonl(good(0), '{"a":' * 3000 + "1" + "}" * 3000, good(1)), 2,
     [("line 2", "nested too deeply")]),
    ("integer of 5000 digits", "p.jsonl",
     jsonl(good(0), '{"prompt": "a", "answer": "1", "answer_type": "exact", "difficulty": ' + HUGE_INT + "}", good(1)),
     2, [("line 2", "integer too large")]),
    ("exponent overflowing to inf", "p.jsonl",
     jsonl(good(0), '{"prompt": "a", "answer": "1", "answer_type": "exact", "difficulty": 1e999999}', good(1)), 2,
     [("line 2", "non-finite")]),
    ("NaN literal", "p.jsonl",
     jsonl(good(0), '{"prompt": "a", "answer": "1", "answer_type": "exact", "pass_rate": NaN}', good(1)), 2,
     [("line 2", "non-finite")]),
    ("-Infinity literal", "p.jsonl",
     jsonl(good(0), '{"prompt": "a", "answer": "1", "answer_type": "exact", "difficulty": -Infinity}', good(1)), 2,
     [("line 2", "non-finite")]),
    ("UTF-8 byte-order mark", "p.jsonl", b"\xef\xbb\xbf" + jsonl(good(0), "{oops", good(1)), 2,
     [("line 2", "malformed JSON")]),
    ("CRLF line ends", "p.jsonl", jsonl(good(0), "{oops", good(1), sep=b"\r\n"), 2, [("line 2", "malformed JSON")]),
    ("lone CR line ends", "p.jsonl", jsonl(good(0), "{oops", good(1), sep=b"\r"), 2, [("line 2", "malformed JSON")]),
    ("multi-megabyte line", "p.jsonl",
     jsonl(good(0), json.dumps({"prompt": MEGA, "answer": "1", "answer_type": "exact"}), good(1)), 2,
     [("line 2", "over the limit")]),
    ("raw NUL byte", "p.jsonl", jsonl(good(0), b'{"prompt": "a\x00b", "answer": "1", "answer_type": "exact"}', good(1)),
     2, [("line 2", "malformed JSON (Invalid control character")]),
    ("NUL escape in a partition value", "p.jsonl",
     jsonl(good(0), '{"prompt": "a", "answer": "1", "answer_type": "exact", "source": "a\\u0000b"}', good(1)), 2,
     [("line 2", "could escape")]),
    ("trailing garbage after a row", "p.jsonl", jsonl(good(0), good(1) + " garbage"), 1, [("line 2", "extra data")]),
    ("duplicate key", "p.jsonl",
     jsonl(good(0), '{"prompt": "a", "prompt": "b", "answer": "1", "answer_type": "exact"}', good(1)), 2,
     [("line 2", "duplicate key 'prompt'")]),
    ("invalid UTF-8 inside a line", "p.jsonl",
     jsonl(good(0), b'{"prompt": "caf\xe9", "answer": "1", "answer_type": "exact"}', good(1)), 2,
     [("line 2", "invalid UTF-8 at byte")]),
    ("JSON list mixed with garbage", "p.json",
     "[\n " + good(0) + ",\n {not a row},\n garbage garbage\n,\n " + good(1) + "\n]\n", 2,
     [("element 2 (line 3)", "malformed JSON")]),
    ("JSON list with deep garbage", "p.json", "[\n " + good(0) + ",\n " + DEEP + ",\n " + good(1) + "\n]", 2,
     [("element 2 (line 3)", "nested too deeply")]),
    ("JSON list with non-objects", "p.json", "[" + good(0) + ", 42, \"text\", " + good(1) + "]", 2,
     [("element 2 (line 1)", "not an object"), ("element 3 (line 1)", "not an object")]),
    ("CSV ragged, too many cells", "p.csv", "prompt,answer,answer_type\n1+1=,2,exact\n2+2=,4,exact,extra\n3+3=,6,exact\n",
     2, [("line 3", "more cells (4) than the header (3)")]),
    ("CSV ragged, too few cells", "p.csv", "prompt,answer,answer_type\n1+1=,2,exact\n2+2=,4\n3+3=,6,exact\n", 2,
     [("line 3", "fewer cells (2) than the header (3)")]),
    ("CSV with quoted newlines", "p.csv",
     'prompt,answer,answer_type\n"line one\nline two\r\nline three",2,exact\n3+3=,6,vibes\n4+4=,8,exact\n', 2,
     [("line 5", "answer_type 'vibes' is not one of")]),
    ("CSV with a NUL and a BOM", "p.csv",
     "\ufeffprompt,answer,answer_type,difficulty\na\x00b,1,exact,\nc,2,exact,hard\nd,3,exact,0.5\n", 2,
     [("line 3", "expected a number")]),
    ("CSV field over the csv module's limit", "p.csv",
     "prompt,answer,answer_type\n" + "y" * 200_000 + ",1,exact\n2+2=,4,exact\n" + MEGA + ",1,exact\n", 2,
     [("line 4", "over the limit")]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "filename", "contents", "kept", "expected"), CASES, ids=[c[0] for c in CASES])
def test_pathological_file(
    tmp_path: Path, name: str, filename: str, contents: bytes | str, kept: int, expected: list[tuple[str, str]]
) -> None:
    path = tmp_path / filename
    path.write_bytes(contents.encode() if isinstance(contents, str) else contents)
    store = ReplayStore(tmp_path / "store", StoreConfig(limits=Limits(max_text_bytes=2**20)))
    result = store.ingest("problems", [path])
    assert (result.committed, result.rejected) == (kept, len(expected)), [r.reason for r in result.rejections]
    reasons = sorted(r.reason for r in result.rejections)
    for (where, words), reason in zip(sorted(expected), reasons, strict=True):
        assert reason.startswith(f"{path}: {where}: "), reason
        assert words.lower() in reason.lower(), reason
    quarantined = store.query("SELECT reason, raw FROM rejected ORDER BY reason").to_pylist()
    assert [q["reason"] for q in quarantined] == reasons
    assert all(q["raw"] for q in quarantined), "the bad input itself is kept"
    assert store.query("SELECT count(*) AS n FROM problems").to_pylist() == [{"n": kept}]


def test_corpus_is_large_and_distinct() -> None:
    assert len(CASES) >= 15
    assert len({c[0] for c in CASES}) == len(CASES)


def test_quarantined_line_is_the_text_as_it_was(tmp_path: Path) -> None:
    line = '{"prompt": "a", "answer": "1", "answer_type": "vibes"}'
    path = tmp_path / "p.jsonl"
    path.write_text(good(0) + "\n" + line + "\n")
    store = ReplayStore(tmp_path / "store")
    store.ingest("problems", [path])
    [row] = store.query("SELECT raw, reason FROM rejected").to_pylist()
    assert row["raw"] == line, "verbatim, so it can be fixed and ingested again"
    assert row["reason"].startswith(f"{path}: line 2: answer_type 'vibes'")


def _parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=2)
    return path


PARQUET_CASES = [
    ("wrong type for a column", [{**g, "split": None} for g in GOOD] + [{**GOOD[0], "prompt": "3+3=", "split": 3}], 2,
     ["row 3", "split '3' is not one of"]),
    ("column that cannot be cast", [{**g, "prompt": {"text": g["prompt"]}} for g in GOOD], 0, ["row 1", "expected a string"]),
    ("partial schema", [{"prompt": "only a prompt"}], 0, ["row 1", "missing required field 'answer'"]),
    ("unknown column", [{**GOOD[0], "question": "?"}], 0, ["row 1", "unknown column(s) 'question'"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "rows", "kept", "expected"), PARQUET_CASES, ids=[c[0] for c in PARQUET_CASES])
def test_parquet_with_a_wrong_or_partial_schema(
    tmp_path: Path, name: str, rows: list, kept: int, expected: list
) -> None:
    path = _parquet(tmp_path / "p.parquet", rows)
    store = ReplayStore(tmp_path / "store")
    result = store.ingest("problems", [path])
    assert result.committed == kept
    assert result.rejected == len(rows) - kept
    where, words = expected
    assert any(r.reason.startswith(f"{path}: {where}: ") and words in r.reason for r in result.rejections), [
        r.reason for r in result.rejections
    ]


def test_parquet_with_an_undecodable_row_group_keeps_the_others(tmp_path: Path) -> None:
    rows = [{"prompt": f"{i}+1=", "answer": str(i + 1), "answer_type": "exact"} for i in range(6)]
    path = _parquet(tmp_path / "p.parquet", rows)  # 3 row groups of 2 rows
    meta = pq.ParquetFile(path).metadata.row_group(1)
    start = min(meta.column(c).data_page_offset for c in range(meta.num_columns))
    data = bytearray(path.read_bytes())
    data[start : start + 64] = b"\xff" * 64  # corrupt the second row group's pages, not the footer
    path.write_bytes(bytes(data))
    store = ReplayStore(tmp_path / "store")
    result = store.ingest("problems", [path])
    assert result.committed == 4
    assert [r.reason.split(" (")[0] for r in result.rejections] == [f"{path}: rows 3-4"]


def test_unreadable_parquet_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    path.write_bytes(b"PAR1 not really")
    store = ReplayStore(tmp_path / "store")
    with pytest.raises(IngestError, match="not a readable Parquet file"):
        store.ingest("problems", [path])
    assert store.query("SELECT count(*) AS n FROM rejected").to_pylist() == [{"n": 0}]


def test_the_cli_survives_a_deeply_nested_line(tmp_path: Path) -> None:
    """The original report: `reasonloop store ingest` crashed with a traceback on this file."""
    path = tmp_path / "p.jsonl"
    path.write_text(jsonl(good(0), '{"prompt": ' + DEEP + "}", good(1)).decode())
    out = subprocess.run(
        [sys.executable, "-m", "reasonloop.flows.cli", "store", "ingest", "problems", str(path), "--root",
         str(tmp_path / "store")], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "committed 2, duplicate 0, rejected 1" in out.stdout
    assert "line 2: malformed JSON (nested too deeply to parse)" in out.stdout
