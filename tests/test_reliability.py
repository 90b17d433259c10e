"""The store under real processes: SIGKILLed writers, concurrent writers, compaction under load.

Every process is started through `Processes` and killed by PID in the fixture's teardown."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reasonloop.storage import ReplayStore, StoreConfig
from reasonloop.storage.compaction import CompactionPolicy
from reasonloop.storage.layout import iter_temp_files
from tests.procs.spawn import Processes

ROWS = 4000  # rows per batch: large enough that a batch spends real time in its temp file


@pytest.fixture
def procs() -> Iterator[Processes]:
    p = Processes()
    try:
        yield p
    finally:
        p.stop_all()


def parse_reader(output: str) -> list[tuple[int, ...]]:
    lines = output.splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert not errors, errors[:3]
    return [tuple(int(x) for x in line.split()[1:]) for line in lines if line.startswith("ok")]


def stop_reader(procs: Processes, reader, stop: Path) -> list[tuple[int, ...]]:
    stop.touch()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    return parse_reader(out)


def assert_consistent(samples: list[tuple[int, ...]], rows_per_batch: int) -> None:
    """Every snapshot: no id twice, every batch whole (atomic), never fewer rows than before."""
    previous = 0
    for n, distinct, lo, hi, *_ in samples:
        assert n == distinct, "a reader saw an id twice"
        assert n % rows_per_batch == 0 and (n == 0 or lo == hi == rows_per_batch), "a partial batch was visible"
        assert n >= previous, "a reader saw rows disappear"
        previous = n


def test_sigkilled_writers_leave_no_partial_data(tmp_path: Path, procs: Processes) -> None:
    root, stop = tmp_path / "store", tmp_path / "stop"
    rng = random.Random(7)
    batches = 120
    reader = procs.start("tests.procs.reader", root, stop)
    kills = kills_with_temp = 0
    seen_temps: set[Path] = set()
    while kills < 24:
        writer = procs.start("tests.procs.writer", root, "w", 0, batches, ROWS, "kill-run")
        if kills % 2 == 0:  # aim at the temp-file window: kill as soon as one appears
            deadline = time.monotonic() + 20
            while not (set(iter_temp_files(root)) - seen_temps) and time.monotonic() < deadline:
                time.sleep(0.0005)
        else:  # anywhere: during start-up, validation, writing or publishing
            time.sleep(rng.uniform(0.3, 1.5))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        kills += 1
        temps = set(iter_temp_files(root))
        if temps - seen_temps:
            kills_with_temp += 1
        seen_temps |= temps
    assert kills >= 20 and kills_with_temp >= kills // 2, (kills, kills_with_temp)

    store = ReplayStore(root)
    assert store.vacuum().temps_removed == len(seen_temps) > 0
    assert not list(iter_temp_files(root))

    final = procs.start("tests.procs.writer", root, "w", 0, batches, ROWS, "kill-run")
    assert final.wait(timeout=300) == 0, final.stderr.read()
    rerun = procs.start("tests.procs.writer", root, "w", 0, batches, ROWS, "kill-run")
    out, _ = rerun.communicate(timeout=300)
    assert all(" committed 0 " in line for line in out.splitlines()), "a rerun duplicated data"

    samples = stop_reader(procs, reader, stop)
    assert len(samples) > 20
    assert_consistent(samples, ROWS)
    counts = store.query("SELECT count(*) AS n, count(DISTINCT id) AS d, count(DISTINCT group_id) AS g FROM rollouts")
    assert counts.to_pylist()[0] == {"n": batches * ROWS, "d": batches * ROWS, "g": batches}


def test_concurrent_writers_exact_total(tmp_path: Path, procs: Processes) -> None:
    root = tmp_path / "store"
    writers = [procs.start("tests.procs.writer", root, f"w{i}", 0, 25, 500, "shared") for i in range(4)]
    for w in writers:
        assert w.wait(timeout=300) == 0, w.stderr.read()
    n = ReplayStore(root).query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM rollouts").to_pylist()[0]
    assert n == {"n": 4 * 25 * 500, "d": 4 * 25 * 500}
    # The commit log names every file once, with its rows, whatever the interleaving of the writers.
    log = [line for line in (root / "rollouts" / "_commits.jsonl").read_text().splitlines()]
    assert len(log) == 4 * 25 and len(set(log)) == len(log)
    assert ReplayStore(root).rows_since("rollouts", 0) == (4 * 25 * 500, 4 * 25)


def test_compaction_under_readers_and_writers(tmp_path: Path, procs: Processes) -> None:
    root, stop = tmp_path / "store", tmp_path / "stop"
    rows, batches = 200, 60
    policy = CompactionPolicy(min_files=4, max_compacted_files=3, grace_seconds=3.0)
    store = ReplayStore(root, StoreConfig(compaction=policy))
    reader = procs.start("tests.procs.reader", root, stop)
    writers = [procs.start("tests.procs.writer", root, f"w{i}", 0, batches, rows, "shared", 0.03) for i in range(2)]
    compactions = 0
    while any(w.poll() is None for w in writers):
        time.sleep(0.3)
        compactions += sum(r.partitions for r in store.compact("rollouts"))
    for w in writers:
        assert w.returncode == 0, w.stderr.read()
    compactions += sum(
        r.partitions for r in store.compact("rollouts", CompactionPolicy(min_files=1, grace_seconds=3.0))
    )
    time.sleep(0.5)  # let the reader see the final state
    samples = stop_reader(procs, reader, stop)

    assert compactions >= 3
    assert_consistent(samples, rows)
    files = [s[4] for s in samples]
    versions = [s[5] for s in samples]
    assert max(files) > min(files[files.index(max(files)) :]), "the reader never saw the file count drop"
    assert len(set(versions)) >= 3, "the reader never saw the manifest switch"
    assert samples[-1][0] == 2 * batches * rows, "a committed row was lost"
    assert store.query("SELECT count(*) AS n FROM rollouts").to_pylist()[0]["n"] == 2 * batches * rows
    assert store.live_files("rollouts").deltas == ()
