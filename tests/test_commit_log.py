"""The commit log: commit order, rows after a position, duplicates, torn lines, crash repair."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow.parquet as pq

from reasonloop.storage import ReplayStore
from reasonloop.storage.commit_log import COMMIT_LOG, append_commits, read_commits
from reasonloop.storage.layout import iter_delta_files


def problems(n: int, start: int = 0, source: str = "user") -> list[dict]:
    return [
        {"prompt": f"{i}*3=", "answer": str(3 * i), "answer_type": "exact", "source": source}
        for i in range(start, start + n)
    ]


def test_positions_follow_commits_and_count_rows_after_them(store: ReplayStore) -> None:
    assert store.commit_position("problems") == 0
    assert store.rows_since("problems", 0) == (0, 0)
    store.write("problems", problems(5, source="a"))
    mark = store.commit_position("problems")
    store.write("problems", problems(7, start=100, source="a"))
    store.write("problems", problems(2, start=200, source="b"))  # another partition: its own file
    assert store.rows_since("problems", mark) == (9, mark + 2)
    assert store.rows_since("problems", 0) == (14, mark + 2)
    entries = read_commits(store.root / "problems")
    assert [e.seq for e in entries] == [1, 2, 3]
    assert [e.file.split("/")[0] for e in entries] == ["source=a", "source=a", "source=b"]


def test_a_rerun_and_compaction_add_no_commits(store: ReplayStore) -> None:
    store.write("problems", problems(5))
    store.write("problems", problems(5))  # identical batch: deduplicated, nothing published
    store.write("problems", problems(3, start=10))
    store.compact("problems")
    store.write("problems", problems(5))  # re-commit after compaction absorbed the first file
    assert store.rows_since("problems", 0) == (8, 2)


def test_torn_and_repeated_lines_are_harmless(tmp_path: Path) -> None:
    append_commits(tmp_path, [("p=a/part-1.parquet", 4), ("p=a/part-2.parquet", 6)])
    append_commits(tmp_path, [("p=a/part-1.parquet", 4)])  # logged twice (vacuum raced a writer)
    with open(tmp_path / COMMIT_LOG, "a") as fh:
        fh.write('{"file": "p=a/part-3.parq')  # a writer killed mid-append
    entries = read_commits(tmp_path)
    assert [(e.seq, e.file, e.rows) for e in entries] == [(1, "p=a/part-1.parquet", 4), (2, "p=a/part-2.parquet", 6)]


def test_vacuum_logs_a_file_published_but_never_logged(store: ReplayStore) -> None:
    store.write("problems", problems(4))
    store.write("problems", problems(6, start=50))
    log = store.root / "problems" / COMMIT_LOG
    lines = log.read_text().splitlines()
    log.write_text(lines[0] + "\n")  # as if the writer died between publishing and logging
    unlogged = [p for p in iter_delta_files(store.root / "problems") if p.name in lines[1]]
    assert pq.ParquetFile(unlogged[0]).metadata.num_rows == 6
    assert store.rows_since("problems", 0) == (4, 1)
    old = time.time() - 3600
    os.utime(unlogged[0], (old, old))  # past the grace period
    assert store.vacuum().commits_logged == 1
    assert store.rows_since("problems", 0) == (10, 2)
    assert store.vacuum().commits_logged == 0


def test_vacuum_does_not_race_a_fresh_file(store: ReplayStore) -> None:
    store.write("problems", problems(3))
    (store.root / "problems" / COMMIT_LOG).write_text("")
    assert store.vacuum().commits_logged == 0  # younger than the grace period: its writer may still log it


def test_tail_follows_the_log_from_an_offset(tmp_path: Path) -> None:
    from reasonloop.storage.commit_log import tail_commits

    append_commits(tmp_path, [("p=a/part-1.parquet", 4)])
    first, offset = tail_commits(tmp_path, 0)
    assert first == [("p=a/part-1.parquet", 4)]
    assert tail_commits(tmp_path, offset) == ([], offset)
    with open(tmp_path / COMMIT_LOG, "a") as fh:
        fh.write('{"file": "p=a/part-2.parquet", "rows": 6}\n{"file": "p=a/part-3.parq')  # second line torn
    entries, later = tail_commits(tmp_path, offset)
    assert entries == [("p=a/part-2.parquet", 6)]
    append_commits(tmp_path, [("p=a/part-4.parquet", 2)])  # the next writer starts a fresh line
    assert tail_commits(tmp_path, later)[0] == [("p=a/part-4.parquet", 2)]
    assert [e.file for e in read_commits(tmp_path)] == [f"p=a/part-{i}.parquet" for i in (1, 2, 4)]
