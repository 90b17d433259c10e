"""Store benchmark: ingest throughput against raw polars, and replay sampling before/after compaction.

    python benchmarks/store_bench.py [--rows 1000000] [--batch-rows 1000] [--out DIR]
        [--delta] [--dedup] [--commits 10000]

1. Ingest: the same rollout batches (64 tokens with float32 logprobs per row, ~800 characters of
   text, ids precomputed as a trainer does) written (a) by `polars.DataFrame.write_parquet`, one
   file per batch, and (b) through `ReplayStore.write` (validation, content addressing, atomic
   publish), with and without fsync. Reported as throughput ratio store / polars (goal >= 0.8).
2. Sampling: 1024 rows, uniformly with a seed, in a staleness window (policy_version >= current-16)
   over all rows, while they sit in one small file per batch, then after compaction (goal <= 150 ms).
3. --delta: the same batches appended to a Delta table with delta-rs (`write_deltalake`, one
   commit per batch), timed per commit against a plain Parquet file write of the same batch in the
   same loop, at the first and the last commits (a Delta log grows), and as throughput vs polars.
4. --dedup: what unique rows for other tools cost, both ways: at snapshot time (`store.snapshot`:
   one query over the ids, plus compacting the partitions that hold duplicates) vs at write time
   (a prototype that checks every batch's ids against the partition's ids, kept in memory and
   followed through the commit log, before committing; no cross-process lock counted).
5. --commits N: a trainer-like run of N commits of 8 rows into one partition, compacted every 64
   files: commit time at the start and the end, and the manifest's size (it must stay bounded).
6. --prune-files N[,N...]: the same 1024-row staleness-window sample over `--rows` rows in N delta
   files (one policy version each), with the commit log's per-file ranges (only the window's
   files reach DuckDB) and without them (every file of the run, as before pruning), interleaved,
   and after compaction into one file for reference.
Both sides run in the same process, interleaved, so machine noise hits both.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reasonloop.schemas import row_id
from reasonloop.storage import ReplayStore, StoreConfig, commit_log
from reasonloop.storage.compaction import CompactionPolicy
from reasonloop.storage.samplers import staleness_window
from reasonloop.storage.writer import WriteOptions

TOKENS, TEXT_CHARS = 64, 800


def _strings(rng: np.random.Generator, n: int, chars: int) -> pa.Array:
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz   0123456789+=;#\n", dtype=np.uint8)
    data = alphabet[rng.integers(0, len(alphabet), n * chars)]
    offsets = np.arange(0, n * chars + 1, chars, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))


def make_batch(rng: np.random.Generator, version: int, rows: int, run_id: str) -> pl.DataFrame:
    offsets = pa.array(np.arange(0, rows * TOKENS + 1, TOKENS, dtype=np.int32))

    def tokens() -> pa.Array:
        return pa.ListArray.from_arrays(offsets, pa.array(rng.integers(0, 100, rows * TOKENS, dtype=np.int32)))

    groups = [f"g{version}-{i // 8}" for i in range(rows)]
    ids = [row_id("rollouts", (run_id, version, f"p{i // 8}", "single", groups[i], i % 8)) for i in range(rows)]
    table = pa.table({
        "id": ids,
        "run_id": [run_id] * rows,
        "problem_id": [f"p{i // 8}" for i in range(rows)],
        "group_id": groups,
        "sample_idx": pa.array(np.arange(rows, dtype=np.int32) % 8),
        "policy_version": pa.array(np.full(rows, version, dtype=np.int64)),
        "prompt": _strings(rng, rows, 40),
        "completion": _strings(rng, rows, TEXT_CHARS - 40),
        "prompt_ids": tokens(),
        "completion_ids": tokens(),
        "logprobs": pa.ListArray.from_arrays(offsets, pa.array(-rng.random(rows * TOKENS, dtype=np.float32))),
        "entropy": pa.array(rng.random(rows)),
        "finish_reason": ["stop"] * rows,
        "reward": pa.array(rng.integers(0, 2, rows).astype(np.float64)),
    })  # fmt: skip
    return pl.from_arrow(table)


def time_polars(batches: list[pl.DataFrame], out: Path) -> float:
    out.mkdir(parents=True)
    start = time.perf_counter()
    for i, frame in enumerate(batches):
        frame.write_parquet(out / f"part-{i}.parquet", compression="zstd")
    return time.perf_counter() - start


def time_store(batches: list[pl.DataFrame], root: Path, sync: bool, bulk: bool) -> tuple[float, ReplayStore]:
    store = ReplayStore(root, StoreConfig(write=WriteOptions(sync=sync)))
    start = time.perf_counter()
    if bulk:
        committed = store.write_many("rollouts", batches).committed
    else:
        committed = sum(store.write("rollouts", frame).committed for frame in batches)
    elapsed = time.perf_counter() - start
    assert committed == sum(len(b) for b in batches), committed
    return elapsed, store


def time_sample(store: ReplayStore, current: int, repeats: int = 7) -> float:
    times = []
    with store.reader() as reader:
        for seed in range(repeats):
            start = time.perf_counter()
            rows = staleness_window(reader, "bench", current_version=current, max_staleness=16, limit=1024, seed=seed)
            times.append(time.perf_counter() - start)
            assert rows.num_rows == 1024
    return statistics.median(times)


def delta_arm(batches: list[pl.DataFrame], scratch: Path, polars_s: float, window: int = 10) -> None:
    from deltalake import write_deltalake

    table, plain = scratch / "delta", scratch / "plain"
    plain.mkdir()
    delta_t, plain_t = [], []
    for i, frame in enumerate(batches):
        arrow = frame.to_arrow()
        start = time.perf_counter()
        write_deltalake(str(table), arrow, mode="append")
        delta_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        frame.write_parquet(plain / f"part-{i}.parquet", compression="zstd")
        plain_t.append(time.perf_counter() - start)
    rows = sum(len(b) for b in batches)
    print(f"\ndelta-rs append, one commit per {len(batches[0])}-row batch (median of {window} commits)")
    for label, sl in (("first", slice(0, window)), ("last", slice(-window, None))):
        d, q = statistics.median(delta_t[sl]), statistics.median(plain_t[sl])
        print(
            f"  {label} {window} commits: delta {d * 1000:7.1f} ms   parquet file {q * 1000:7.1f} ms   ratio {d / q:5.1f}x"
        )
    print(
        f"  delta ingest {sum(delta_t):.2f} s = {rows / sum(delta_t):.0f} rows/s, {polars_s / sum(delta_t):.2f}x polars"
    )
    shutil.rmtree(table)
    shutil.rmtree(plain)


def dedup_write_time(batches: list[pl.DataFrame], scratch: Path) -> None:
    """The write-time way: before each commit, drop ids the partition already holds (known from
    the files committed since the last check, followed through the commit log)."""
    from reasonloop.storage import commit_log

    plain_s, _ = time_store(batches, scratch / "plain", sync=False, bulk=False)
    root = scratch / "checked"
    checked = ReplayStore(root, StoreConfig(write=WriteOptions(sync=False)))
    seen: set[str] = set()
    offset = 0
    start = time.perf_counter()
    for frame in batches:
        entries, offset = commit_log.tail_commits(root / "rollouts", offset)
        for rel, _ in entries:
            seen.update(pq.read_table(root / "rollouts" / rel, columns=["id"]).column("id").to_pylist())
        ids = frame.get_column("id").to_list()
        fresh = [i for i, x in enumerate(ids) if x not in seen]
        checked.write("rollouts", frame[fresh] if len(fresh) < len(ids) else frame)
    write_time_s = time.perf_counter() - start
    shutil.rmtree(scratch / "plain")
    shutil.rmtree(root)
    print(f"\ndeduplication for other tools, {sum(len(b) for b in batches)} rows in {len(batches)} commits")
    print(f"  write time, every commit checked:     {write_time_s:7.2f} s vs {plain_s:.2f} s unchecked "
          f"(+{100 * (write_time_s / plain_s - 1):.0f}% on every ingest, before any cross-process lock)")  # fmt: skip


def dedup_snapshot_time(store: ReplayStore, batches: list[pl.DataFrame], *, with_duplicates: bool) -> None:
    if with_duplicates:  # 9 commits that each repeat half of two earlier batches
        for a, b in itertools.pairwise(batches[-10:]):
            store.write("rollouts", pl.concat([a[len(a) // 2 :], b[: len(b) // 2]]))
    start = time.perf_counter()
    snap = store.snapshot("rollouts")
    elapsed = time.perf_counter() - start
    label = "duplicates in 9 files" if with_duplicates else f"no duplicates, {len(snap.files)} files"
    done = f" (compacted {', '.join(snap.compacted_partitions)})" if snap.compacted_partitions else ""
    print(f"  snapshot time, {label}: {elapsed:7.2f} s per snapshot{done}")


def commits_arm(n: int, scratch: Path, grace: float, window: int = 2000) -> None:
    rng = np.random.default_rng(1)
    policy = CompactionPolicy(grace_seconds=grace)
    store = ReplayStore(scratch / "commits", StoreConfig(write=WriteOptions(sync=False), compaction=policy))
    manifest = store.root / "rollouts" / "_manifest.json"
    files, times = 0, []
    print(f"\n{n} commits of 8 rows into one partition, compacted every 64 files (compaction time included; "
          f"grace period {store.config.compaction.grace_seconds:.0f} s)")  # fmt: skip
    print("  commits        mean commit ms   manifest bytes   folded names")
    start_all = time.perf_counter()
    for v in range(n):
        batch = make_batch(rng, v, 8, "long")
        start = time.perf_counter()
        store.write("rollouts", batch, sync=False)
        files += 1
        if files >= 64:  # the trainer's default (TrainConfig.compact_files)
            store.compact("rollouts", partition="run_id=long")
            files = 0
        times.append(time.perf_counter() - start)
        if (v + 1) % window == 0:
            folded = sum(len(p["folded"]) for p in json.loads(manifest.read_text())["partitions"].values())
            print(f"  {v + 1 - window + 1:>5}-{v + 1:<6} {statistics.mean(times[-window:]) * 1000:12.2f} "
                  f"{manifest.stat().st_size:16d} {folded:14d}")  # fmt: skip
    print(
        f"  ({time.perf_counter() - start_all:.0f} s; a manifest remembering every absorbed file would name {n - files})"
    )
    shutil.rmtree(scratch / "commits")


def prune_arm(n_files: int, total_rows: int, scratch: Path, repeats: int = 7) -> None:
    """Sampling over many small files with and without the commit log's per-file ranges."""
    rows = max(8, total_rows // n_files)
    rng = np.random.default_rng(1)
    store = ReplayStore(scratch / f"prune-{n_files}", StoreConfig(write=WriteOptions(sync=False)))
    start = time.perf_counter()
    for version in range(n_files):
        store.write("rollouts", make_batch(rng, version, rows, "bench"))
    made = time.perf_counter() - start
    current, unpruned = n_files - 1, commit_log.file_ranges
    pruned_s, full_s = [], []
    for seed in range(repeats):  # interleaved
        for arm, out in (("pruned", pruned_s), ("full", full_s)):
            if arm == "full":
                commit_log.file_ranges = lambda table_dir: {}  # as before: no ranges, every file is read
            try:
                with store.reader() as reader:
                    t = time.perf_counter()
                    got = staleness_window(
                        reader, "bench", current_version=current, max_staleness=16, limit=1024, seed=seed
                    )
                    out.append(time.perf_counter() - t)
            finally:
                commit_log.file_ranges = unpruned
            assert got.num_rows == min(1024, 17 * rows), got.num_rows
    store.compact("rollouts", CompactionPolicy(min_files=1, grace_seconds=0))
    compacted = time_sample(store, current) if 17 * rows >= 1024 else float("nan")
    pruned, full = statistics.median(pruned_s), statistics.median(full_s)
    print(f"\nsample 1024 rows (window of 17 versions) over {n_files} files x {rows} rows ({made:.0f} s to write):")
    print(f"  every file (no ranges):   {full * 1000:8.1f} ms")
    print(f"  pruned by logged ranges:  {pruned * 1000:8.1f} ms   ratio {full / pruned:.1f}x")
    print(f"  after compaction (1 file): {compacted * 1000:7.1f} ms")
    shutil.rmtree(store.root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="scratch dir (default: a temp dir)")
    parser.add_argument("--delta", action="store_true", help="also the delta-rs arm")
    parser.add_argument("--dedup", action="store_true", help="also write-time vs snapshot-time deduplication")
    parser.add_argument("--commits", type=int, default=0, help="also an N-commit run (manifest size, commit time)")
    parser.add_argument("--grace", type=float, default=60.0, help="compaction grace period of the N-commit run (s)")
    parser.add_argument("--skip-ingest", action="store_true", help="only the extra arms (no ingest/sampling)")
    parser.add_argument("--prune-files", default="", help="also the pruning arm at these file counts, e.g. 1000,10000")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(dir=args.out))
    for n_files in [int(n) for n in args.prune_files.split(",") if n]:
        prune_arm(n_files, args.rows, scratch)
    if args.commits:
        commits_arm(args.commits, scratch, args.grace)
    if args.skip_ingest and not (args.delta or args.dedup):
        shutil.rmtree(scratch)
        return
    rng = np.random.default_rng(0)
    n_batches = args.rows // args.batch_rows
    t0 = time.perf_counter()
    batches = [make_batch(rng, v, args.batch_rows, "bench") for v in range(n_batches)]
    mb = sum(b.estimated_size() for b in batches) / 1e6
    print(f"data: {n_batches} batches x {args.batch_rows} rows = {args.rows} rows, {mb:.0f} MB in memory "
          f"(made in {time.perf_counter() - t0:.1f}s)")  # fmt: skip

    # store.write: one batch at a time (what a trainer step does); write_many: the bulk path,
    # batches encoded on every core (polars' own writer is multi-threaded too).
    arms = {
        "store.write nosync": (False, False),
        "store.write fsync": (True, False),
        "store.write_many nosync": (False, True),
        "store.write_many fsync": (True, True),
    }
    runs: dict[str, list[float]] = {"polars": [], **{name: [] for name in arms}}
    store = None
    for rep in range(2):  # interleaved, so drift hits every arm
        runs["polars"].append(time_polars(batches, scratch / "polars"))
        shutil.rmtree(scratch / "polars")
        for i, (name, (sync, bulk)) in enumerate(arms.items()):
            elapsed, store = time_store(batches, scratch / f"s{rep}-{i}", sync=sync, bulk=bulk)
            runs[name].append(elapsed)
            if rep == 0 or name != "store.write_many fsync":
                shutil.rmtree(scratch / f"s{rep}-{i}")
    best = {k: min(v) for k, v in runs.items()}
    print("\ningest (best of 2)             seconds    rows/s   throughput vs polars")
    for name, secs in best.items():
        print(f"  {name:<26}{secs:>8.2f}{args.rows / secs:>10.0f}{best['polars'] / secs:>10.2f}x")

    assert store is not None
    if args.delta:
        delta_arm(batches, scratch, best["polars"])
    if args.dedup:
        dedup_write_time(batches, scratch)
        dedup_snapshot_time(store, batches, with_duplicates=False)
    current = n_batches - 1
    files = store.delta_file_count("rollouts")
    before = time_sample(store, current)
    start = time.perf_counter()
    store.compact("rollouts", CompactionPolicy(min_files=1, grace_seconds=0))
    compact_s = time.perf_counter() - start
    after = time_sample(store, current)
    print(f"\nsample 1024 rows, policy_version >= {current}-16, over {args.rows} rows")
    print(f"  before compaction ({files} files): {before * 1000:8.1f} ms")
    print(f"  compaction:                   {compact_s:8.2f} s")
    print(f"  after compaction (1 file):       {after * 1000:8.1f} ms   ratio before/after {before / after:.1f}x")
    if args.dedup:
        dedup_snapshot_time(store, batches, with_duplicates=True)
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
