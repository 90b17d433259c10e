"""`reasonloop store ...` and the walkthrough, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from reasonloop.flows.cli import app
from tests.procs.spawn import REPO

runner = CliRunner()


def cli(root: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--root", str(root)])
    return result.exit_code, result.output


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_bytes(
        b'{"prompt": "12+34=", "answer": "46", "answer_type": "exact"}\n'
        b'{"prompt": "1+1=", "answer": "2", "answer_type": "exact", "source": "arith"}\n'
        b"\n"
        b"{not json\n"
        b'{"prompt": "\xff\xfe", "answer": "1", "answer_type": "exact"}\n'
        b'{"prompt": "x", "answer_type": "exact"}\n'
    )
    csv = tmp_path / "p.csv"
    csv.write_text(
        'prompt,answer,answer_type,difficulty,choices\n2+2=,4,exact,0.5,\n3+3=,6,choice,hard,"[""6"",""7""]"\n'
    )
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "5+5=", "answer": "10", "answer_type": "numeric"}]), parquet)
    return {"jsonl": jsonl, "csv": csv, "parquet": parquet}


def test_ingest_counts_and_quarantine(tmp_path: Path, files: dict[str, Path]) -> None:
    root = tmp_path / "store"
    code, out = cli(root, "store", "ingest", "problems", str(files["jsonl"]))
    assert code == 0, out
    assert "committed 2, duplicate 0, rejected 3" in out
    assert "malformed JSON" in out and "invalid UTF-8" in out and "missing required field 'answer'" in out
    code, out = cli(root, "store", "ingest", "problems", str(files["jsonl"]))
    assert "committed 0, duplicate 2, rejected 3" in out
    code, out = cli(root, "store", "ingest", "problems", str(files["csv"]), str(files["parquet"]))
    assert code == 0 and "committed 2, duplicate 0, rejected 1" in out and "expected a number" in out
    code, out = cli(root, "store", "query", "SELECT count(*) AS n FROM rejected", "--format", "json")
    assert json.loads(out) == [{"n": 4}], "the rerun did not duplicate rejections either"


def test_ingest_unusable_input_fails_with_one_line(tmp_path: Path, files: dict[str, Path]) -> None:
    root = tmp_path / "store"
    code, out = cli(root, "store", "ingest", "nope", str(files["jsonl"]))
    assert code == 2 and "unknown table 'nope'" in out
    code, out = cli(root, "store", "ingest", "problems", str(files["jsonl"]), str(tmp_path / "missing.jsonl"))
    assert code == 2 and "no such file" in out
    code, out = cli(root, "store", "query", "SELECT count(*) AS n FROM problems", "--format", "csv")
    assert out.strip().splitlines() == ["n", "0"], "nothing was written before the bad path was found"
    (tmp_path / "x.txt").write_text("hi")
    code, out = cli(root, "store", "ingest", "problems", str(tmp_path / "x.txt"))
    assert code == 2 and "unknown format" in out


def test_query_formats(tmp_path: Path, files: dict[str, Path]) -> None:
    root = tmp_path / "store"
    cli(root, "store", "ingest", "problems", str(files["csv"]))
    sql = "SELECT prompt, answer FROM problems ORDER BY prompt"
    code, out = cli(root, "store", "query", sql)
    assert code == 0 and "2+2=" in out
    assert cli(root, "store", "query", sql, "--format", "csv")[1].splitlines()[1] == "2+2=,4"
    assert json.loads(cli(root, "store", "query", sql, "--format", "json")[1])[0] == {"prompt": "2+2=", "answer": "4"}
    out_file = tmp_path / "out.parquet"
    assert cli(root, "store", "query", sql, "--format", "parquet", "--out", str(out_file))[0] == 0
    assert pq.read_table(out_file).num_rows == 1
    code, out = cli(root, "store", "query", "SELECT * FROM no_such_table")
    assert code == 2 and out.startswith("error:")


def test_stats_compact_vacuum(tmp_path: Path, files: dict[str, Path]) -> None:
    root = tmp_path / "store"
    cli(root, "store", "ingest", "problems", str(files["csv"]))
    cli(root, "store", "ingest", "problems", str(files["parquet"]))
    code, out = cli(root, "store", "compact", "problems")
    assert code == 0 and "problems: 2 files -> 1" in out
    code, out = cli(root, "store", "stats")
    assert code == 0 and any(line.split()[:3] == ["problems", "2", "1"] for line in out.splitlines())
    assert cli(root, "store", "vacuum")[0] == 0


def test_walkthrough_runs_as_a_console_command(tmp_path: Path) -> None:
    env = {"REASONLOOP_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "reasonloop.flows.cli", "walkthrough"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"store root: {tmp_path / 'home'}" in proc.stdout
    assert "rejected 1" in proc.stdout and "duplicate 16" in proc.stdout and "delta files 3 -> 0" in proc.stdout
