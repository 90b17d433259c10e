"""The replay store in one process: round trips, idempotency, views, samplers, compaction, vacuum."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from reasonloop.schemas import TABLES, config_fingerprint, get_table, row_id
from reasonloop.schemas.validate import validate_rows
from reasonloop.storage import ReplayStore, StoreConfig
from reasonloop.storage.compaction import CompactionPolicy
from reasonloop.storage.layout import iter_temp_files, temp_path
from reasonloop.storage.samplers import latest_rollouts, nonzero_std_groups, staleness_window, uniform_sample
from tests.procs.common import rollout_batch


def problems(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"{i}+1=", "answer": str(i + 1), "answer_type": "exact"} for i in range(start, start + n)]


def test_empty_store_queries_as_empty(store: ReplayStore) -> None:
    with store.reader() as r:
        for name, spec in TABLES.items():
            result = r.query(f"SELECT * FROM {name}")
            assert result.num_rows == 0
            assert result.column_names == list(spec.column_names)


def test_ids_are_content_hashes_without_timestamps() -> None:
    spec = get_table("problems")
    row = problems(1)[0]
    early = validate_rows(spec, [row], now=datetime(2020, 1, 1, tzinfo=timezone.utc)).good
    late = validate_rows(spec, [row], now=datetime(2030, 1, 1, tzinfo=timezone.utc)).good
    assert early.column("id").to_pylist() == late.column("id").to_pylist()
    assert early.column("id")[0].as_py() == row_id("problems", ("0+1=", "1", "exact", "user"))
    assert "created_at" not in spec.id_key and all("time" not in k for t in TABLES.values() for k in t.id_key)
    assert get_table("rollouts").id_key == ("run_id", "policy_version", "problem_id", "stage", "group_id", "sample_idx")


def test_config_fingerprint_is_stable_and_sensitive() -> None:
    @dataclass(frozen=True)
    class Cfg:
        lr: float = 1e-5
        group: int = 8

    assert config_fingerprint(Cfg()) == config_fingerprint({"group": 8, "lr": 1e-5})
    assert config_fingerprint(Cfg()) != config_fingerprint(Cfg(lr=2e-5))


def test_round_trip_keeps_types(store: ReplayStore) -> None:
    batch = rollout_batch("w", 3, 5, "run-a")
    result = store.write("rollouts", batch, producer="test", config_hash="abc")
    assert result.committed == 5 and len(result.files) == 1
    assert result.files[0].parent.name == "run_id=run-a"
    back = store.query("SELECT * FROM rollouts ORDER BY sample_idx")
    assert back.column("logprobs").to_pylist() == batch.column("logprobs").to_pylist()
    assert back.column("completion_ids").to_pylist() == batch.column("completion_ids").to_pylist()
    row = back.to_pylist()[0]
    version = get_table("rollouts").version
    assert (row["producer"], row["config_hash"], row["schema_version"], row["stage"]) == (
        "test",
        "abc",
        version,
        "single",
    )
    on_disk = pq.read_schema(result.files[0])
    assert on_disk.field("rewards").type == get_table("rollouts").schema.field("rewards").type
    assert on_disk.metadata[b"reasonloop.table"] == b"rollouts"


def test_rollouts_of_schema_2_read_with_those_of_3(store: ReplayStore) -> None:
    """Files written before the Octopus columns (schema 2) and after read as one table: the new
    columns are NULL on the old rows (DuckDB's union_by_name), nothing is rewritten."""
    old = store.write("rollouts", rollout_batch("w", 3, 5, "run-a"), producer="test").files[0]
    octopus = ["kl_mask_spans", "pair_type", "source_ids", "part_correct"]
    pq.write_table(pq.read_table(old).drop_columns(octopus), old)  # as a schema-2 writer left it
    store.write("rollouts", rollout_batch("w", 4, 5, "run-a"), producer="test")
    rows = store.query(
        "SELECT policy_version, count(*) AS n, count(pair_type) AS typed FROM rollouts GROUP BY 1 ORDER BY 1"
    ).to_pylist()  # fmt: skip
    assert rows == [{"policy_version": 3, "n": 5, "typed": 0}, {"policy_version": 4, "n": 5, "typed": 0}]
    assert not set(octopus) & set(pq.read_schema(old).names)


def test_same_batch_twice_adds_nothing(store: ReplayStore) -> None:
    first = store.write("problems", problems(10))
    again = store.write("problems", problems(10))
    assert (first.committed, again.committed, again.duplicates) == (10, 0, 10)
    store.compact("problems", CompactionPolicy(min_files=1))
    after = store.write("problems", problems(10))
    assert (after.committed, after.duplicates) == (0, 10), "a batch folded by compaction is still known"
    assert store.query("SELECT count(*) AS n FROM problems").to_pylist() == [{"n": 10}]


def test_duplicates_within_a_batch_are_dropped(store: ReplayStore) -> None:
    result = store.write("problems", problems(3) + problems(2))
    assert (result.committed, result.duplicates) == (3, 2)


def test_overlapping_batches_never_show_an_id_twice(store: ReplayStore) -> None:
    store.write("problems", problems(10))
    store.write("problems", problems(10, start=5))  # rows 5..9 again, in another batch
    q = "SELECT count(*) AS n, count(DISTINCT id) AS d FROM problems"
    assert store.query(q).to_pylist() == [{"n": 15, "d": 15}]
    store.compact("problems", CompactionPolicy(min_files=1))
    store.write("problems", problems(3, start=13))  # overlaps the compacted file
    assert store.query(q).to_pylist() == [{"n": 16, "d": 16}]
    store.compact("problems", CompactionPolicy(min_files=1))
    assert store.query(q).to_pylist() == [{"n": 16, "d": 16}]
    files = store.live_files("problems").compacted
    assert sum(pq.read_metadata(f).num_rows for f in files) == 16, "compaction deduplicated on disk"


def test_polars_and_arrow_inputs(store: ReplayStore) -> None:
    frame = pl.DataFrame(problems(4)).with_columns(pl.lit("arith").alias("source"))
    assert store.write("problems", frame).committed == 4
    assert store.query("SELECT DISTINCT source FROM problems").to_pylist() == [{"source": "arith"}]


def test_batch_across_partitions_is_one_file_each(store: ReplayStore) -> None:
    rows = [dict(p, source=s) for p, s in zip(problems(6), ["a", "b", "c"] * 2, strict=True)]
    result = store.write("problems", rows)
    assert result.committed == 6
    assert sorted(f.parent.name for f in result.files) == ["source=a", "source=b", "source=c"]


def test_read_files_returns_exactly_that_batch(store: ReplayStore) -> None:
    store.write("rollouts", rollout_batch("w", 0, 7, "run-a"))
    mine = store.write("rollouts", rollout_batch("w", 1, 5, "run-a"))
    batch = store.read_files("rollouts", mine.files)
    assert batch.num_rows == 5 and set(batch.column("policy_version").to_pylist()) == {1}


def test_store_root_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REASONLOOP_HOME", raising=False)
    assert ReplayStore().root == tmp_path / ".reasonloop"
    monkeypatch.setenv("REASONLOOP_HOME", str(tmp_path / "env"))
    assert ReplayStore().root == tmp_path / "env"
    assert ReplayStore(tmp_path / "arg").root == tmp_path / "arg"


def test_temp_names_are_invisible_to_readers(tmp_path: Path) -> None:
    name = temp_path(tmp_path).name
    assert not name.endswith(".parquet") and name.startswith(".tmp-")


# ------------------------------------------------------------------ samplers


@pytest.fixture
def rollouts(store: ReplayStore) -> ReplayStore:
    for version in range(6):
        store.write("rollouts", rollout_batch("w", version, 16, "run-a"))
    store.write("rollouts", rollout_batch("other", 9, 16, "run-b"))
    return store


def test_staleness_window_respects_the_bound(rollouts: ReplayStore) -> None:
    with rollouts.reader() as r:
        rows = staleness_window(r, "run-a", current_version=5, max_staleness=2)
        assert rows.num_rows == 3 * 16
        assert set(rows.column("policy_version").to_pylist()) == {3, 4, 5}
        assert set(rows.column("run_id").to_pylist()) == {"run-a"}
        on_policy = staleness_window(r, "run-a", current_version=5, max_staleness=0)
        assert set(on_policy.column("policy_version").to_pylist()) == {5}


def test_seeded_sample_is_reproducible(rollouts: ReplayStore) -> None:
    with rollouts.reader() as r:
        a = staleness_window(r, "run-a", current_version=5, max_staleness=5, limit=10, seed=1)
        b = staleness_window(r, "run-a", current_version=5, max_staleness=5, limit=10, seed=1)
        c = staleness_window(r, "run-a", current_version=5, max_staleness=5, limit=10, seed=2)
        assert a.num_rows == 10
        assert a.column("id").to_pylist() == b.column("id").to_pylist() != c.column("id").to_pylist()
        assert uniform_sample(r, "rollouts", 5, seed=3).num_rows == 5


def test_latest_and_nonzero_std_groups(store: ReplayStore) -> None:
    rows = []
    for group, rewards in {"flat": [1.0, 1.0, 1.0], "mixed": [0.0, 1.0, 1.0]}.items():
        for i, reward in enumerate(rewards):
            rows.append({
                "problem_id": "p", "group_id": group, "sample_idx": i, "policy_version": 2, "prompt": "q",
                "completion": "a", "prompt_ids": [1], "completion_ids": [2], "logprobs": [-1.0],
                "finish_reason": "stop", "reward": reward,
            })  # fmt: skip
    store.write("rollouts", rows, run_id="run-c")
    store.write("rollouts", rollout_batch("w", 1, 4, "run-c"))
    with store.reader() as r:
        useful = nonzero_std_groups(r, "run-c", min_version=2)
        assert set(useful.column("group_id").to_pylist()) == {"mixed"}
        assert latest_rollouts(r, "run-c").num_rows == 6
        with pytest.raises(ValueError, match="could escape"):
            staleness_window(r, "../x", current_version=1, max_staleness=1)


# ------------------------------------------------------------------ compaction and vacuum


def test_compaction_orders_rows_and_bounds_files(store: ReplayStore) -> None:
    policy = CompactionPolicy(min_files=2, max_compacted_files=3, grace_seconds=0)
    for version in [5, 1, 4, 0, 3, 2, 7, 6]:
        store.write("rollouts", rollout_batch("w", version, 8, "run-a"))
        store.compact("rollouts", policy)
    snap = store.live_files("rollouts")
    assert len(snap.compacted) <= 3 and len(snap.deltas) <= 1
    store.compact("rollouts", CompactionPolicy(min_files=1, max_compacted_files=1, grace_seconds=0))
    [only] = store.live_files("rollouts").compacted
    versions = pq.read_table(only, columns=["policy_version"]).column(0).to_pylist()
    assert versions == sorted(versions) and len(versions) == 64
    on_disk = {p.name for p in (store.root / "rollouts").rglob("*.parquet")}
    assert on_disk == {only.name}, "obsolete files past grace were deleted"


def test_obsolete_files_outlive_the_grace_period(store: ReplayStore) -> None:
    store.write("problems", problems(2))
    store.write("problems", problems(2, start=2))
    before = store.live_files("problems").files
    store.compact("problems", CompactionPolicy(min_files=2, grace_seconds=3600))
    assert all(p.exists() for p in before), "a reader planning with the old manifest can still read"
    assert store.vacuum().obsolete_removed == 0


def test_vacuum_removes_dead_writers_temps_only(store: ReplayStore) -> None:
    part = store.root / "problems" / "source=user"
    part.mkdir(parents=True)
    dead = part / ".tmp-999999999-abc.inprogress"  # no such pid
    live = temp_path(part)  # this process
    dead.write_bytes(b"partial")
    live.write_bytes(b"partial")
    assert store.vacuum().temps_removed == 1
    assert not dead.exists() and live.exists()
    old = time.time() - 7200
    os.utime(live, (old, old))
    assert store.vacuum(temp_max_age=3600).temps_removed == 1
    assert list(iter_temp_files(store.root)) == []


def test_vacuum_removes_orphaned_compaction_output(tmp_path: Path) -> None:
    store = ReplayStore(tmp_path, StoreConfig(compaction=CompactionPolicy(grace_seconds=0)))
    store.write("problems", problems(2))
    orphan_dir = store.root / "problems" / "_compacted" / "source=user"
    orphan_dir.mkdir(parents=True)
    orphan = orphan_dir / "c-orphan.parquet"
    orphan.write_bytes(b"crashed before the manifest switch")
    stamp = (datetime.now() - timedelta(seconds=10)).timestamp()
    os.utime(orphan, (stamp, stamp))
    assert store.vacuum().orphans_removed == 1 and not orphan.exists()
    assert store.query("SELECT count(*) AS n FROM problems").to_pylist() == [{"n": 2}]
