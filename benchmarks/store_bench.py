"""Store benchmark: ingest throughput against raw polars, and replay sampling before/after compaction.

    python benchmarks/store_bench.py [--rows 1000000] [--batch-rows 1000] [--out DIR]

1. Ingest: the same rollout batches (64 tokens with float32 logprobs per row, ~800 characters of
   text, ids precomputed as a trainer does) written (a) by `polars.DataFrame.write_parquet`, one
   file per batch, and (b) through `ReplayStore.write` (validation, content addressing, atomic
   publish), with and without fsync. Reported as throughput ratio store / polars (goal >= 0.8).
2. Sampling: 1024 rows, uniformly with a seed, in a staleness window (policy_version >= current-16)
   over all rows, while they sit in one small file per batch, then after compaction (goal <= 150 ms).
Both sides run in the same process, interleaved, so machine noise hits both.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reasonloop.schemas import row_id
from reasonloop.storage import ReplayStore, StoreConfig
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="scratch dir (default: a temp dir)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(dir=args.out))
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
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
