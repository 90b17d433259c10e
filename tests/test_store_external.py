"""Other tools read the store correctly through a snapshot: DuckDB, polars, pyarrow and `datasets`
see exactly the rows the store's own view sees, with duplicates committed and a compaction whose
obsolete files are still on disk; `export` writes a self-contained Parquet folder or Delta table."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest

from reasonloop.storage import ReplayStore, StoreConfig
from reasonloop.storage.compaction import CompactionPolicy


def problems(lo: int, hi: int, source: str = "user") -> list[dict]:
    return [
        {"prompt": f"{i}+1=", "answer": str(i + 1), "answer_type": "exact", "source": source} for i in range(lo, hi)
    ]


@pytest.fixture
def messy(tmp_path: Path) -> ReplayStore:
    """20 distinct rows: batches that overlap (one batch re-committed inside another), a compaction
    whose folded files are still on disk (grace period), then more overlap with compacted rows."""
    store = ReplayStore(tmp_path / "store", StoreConfig(compaction=CompactionPolicy(min_files=2, grace_seconds=3600)))
    store.write("problems", problems(0, 10))
    store.write("problems", problems(5, 12))  # 5 rows already committed
    store.write("problems", problems(0, 4, source="other"))
    store.compact("problems")  # folded deltas stay on disk for an hour
    store.write("problems", problems(10, 16))  # 2 rows already compacted
    store.write("problems", problems(14, 16))  # the tail of the previous batch again
    store.write("problems", problems(2, 6, source="other"))  # 2 rows already compacted
    return store


def view_ids(store: ReplayStore) -> list[tuple[str, str]]:
    rows = store.query("SELECT source, id FROM problems ORDER BY source, id").to_pylist()
    return [(r["source"], r["id"]) for r in rows]


def test_a_glob_over_the_folder_is_wrong(messy: ReplayStore) -> None:
    """Why the snapshot exists: a plain glob reads obsolete and repeated rows."""
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{messy.root}/problems/**/*.parquet')").fetchall()[0][0]
    assert len(view_ids(messy)) == 22
    assert n > 22


def test_every_reader_sees_exactly_the_store_view(messy: ReplayStore, tmp_path: Path) -> None:
    expected = view_ids(messy)
    snap = messy.snapshot("problems")
    assert snap.rows == len(expected) and snap.compacted_partitions  # duplicates made unique
    files = [str(f) for f in snap.files]

    def ids(rows: list[dict]) -> list[tuple[str, str]]:
        return sorted((r["source"], r["id"]) for r in rows)

    rows = duckdb.sql(f"SELECT source, id FROM read_parquet({files})").fetchall()
    assert sorted(rows) == expected, "DuckDB read_parquet([...])"
    assert ids(pl.scan_parquet(files).select("source", "id").collect().to_dicts()) == expected, "polars"
    assert ids(ds.dataset(files, format="parquet").to_table(columns=["source", "id"]).to_pylist()) == expected
    from datasets import Features, Value, load_dataset

    # `datasets` has no map type: name the columns and their features, or export with maps as
    # lists (test_export_for_datasets_keeps_every_column).
    features = Features({c: Value("string") for c in ("source", "id", "prompt")})
    loaded = load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"),
                          columns=list(features), features=features)  # fmt: skip
    assert ids(loaded.to_list()) == expected, "datasets"
    assert view_ids(messy) == expected, "the store's own view is unchanged by the snapshot"


def test_export_for_datasets_keeps_every_column(messy: ReplayStore, tmp_path: Path) -> None:
    from datasets import load_dataset

    messy.write("problems", [{**problems(50, 51)[0], "process_labels": {"I": "trend", "A": "up"}}])
    messy.export("problems", tmp_path / "out", lists_for_maps=True)
    files = sorted(str(p) for p in (tmp_path / "out").glob("*/*.parquet"))
    loaded = load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == len(view_ids(messy))
    labelled = [r for r in loaded.to_list() if r["process_labels"]]
    assert (
        labelled == []
        or labelled[0]["process_labels"] == [{"key": "A", "value": "up"}, {"key": "I", "value": "trend"}]
        or sorted(labelled[0]["process_labels"], key=lambda e: e["key"])
        == [{"key": "A", "value": "up"}, {"key": "I", "value": "trend"}]
    )
    assert len(labelled) == 1


def test_snapshot_position_and_json(messy: ReplayStore, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reasonloop.flows.cli import app

    out = tmp_path / "snap.json"
    result = CliRunner().invoke(app, ["store", "snapshot", "problems", "--root", str(messy.root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["position"] == messy.commit_position("problems") == 6
    assert data["rows"] == 22 and data["schema_versions"] == [1]
    assert all(Path(f).exists() for f in data["files"])


def test_snapshots_stay_exact_while_compaction_runs(messy: ReplayStore) -> None:
    expected = view_ids(messy)
    stop = threading.Event()

    def compact_forever() -> None:
        while not stop.is_set():
            messy.compact("problems", CompactionPolicy(min_files=1, max_compacted_files=2, grace_seconds=30))

    thread = threading.Thread(target=compact_forever)
    thread.start()
    try:
        for _ in range(15):
            files = [str(f) for f in messy.snapshot("problems").files]
            assert sorted(duckdb.sql(f"SELECT source, id FROM read_parquet({files})").fetchall()) == expected
    finally:
        stop.set()
        thread.join()


def test_export_parquet_is_self_contained_and_glob_safe(messy: ReplayStore, tmp_path: Path) -> None:
    expected = view_ids(messy)
    result = messy.export("problems", tmp_path / "out")
    assert result.rows == len(expected)
    rows = duckdb.sql(f"SELECT source, id FROM read_parquet('{tmp_path}/out/**/*.parquet')").fetchall()
    assert sorted(rows) == expected
    with pytest.raises(FileExistsError):
        messy.export("problems", tmp_path / "out")


def test_export_delta_is_one_commit(messy: ReplayStore, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    expected = view_ids(messy)
    messy.export("problems", tmp_path / "delta", "delta")
    table = DeltaTable(str(tmp_path / "delta"))
    assert table.version() == 0, "one commit"
    assert sorted(
        table.partition_columns if hasattr(table, "partition_columns") else table.metadata().partition_columns
    ) == ["source"]
    got = table.to_pyarrow_table(columns=["source", "id"]).to_pylist()
    assert sorted((r["source"], r["id"]) for r in got) == expected
    assert pl.read_delta(str(tmp_path / "delta")).height == len(expected)
