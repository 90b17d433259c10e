"""Deterministic rollout batches for the multi-process store tests."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from reasonloop.schemas import row_id

TOKENS = 64


def rollout_batch(writer: str, batch: int, rows: int, run_id: str) -> pa.Table:
    """`rows` rollouts tagged group_id=f'{writer}-{batch}' so a reader can check batch integrity."""
    rng = np.random.default_rng(zlib.crc32(f"{writer}-{batch}".encode()))
    group = f"{writer}-{batch}"
    n_tokens = rows * TOKENS
    offsets = pa.array(np.arange(0, n_tokens + 1, TOKENS, dtype=np.int32))
    sample_idx = np.arange(rows, dtype=np.int32)
    text = pa.array([f"completion {group} #{i} " + "x" * 200 for i in range(rows)])
    ids = [row_id("rollouts", (run_id, batch, f"p-{writer}", "single", group, int(i))) for i in sample_idx]
    return pa.table(
        {
            "id": pa.array(ids),
            "run_id": pa.array([run_id] * rows),
            "problem_id": pa.array([f"p-{writer}"] * rows),
            "group_id": pa.array([group] * rows),
            "sample_idx": pa.array(sample_idx),
            "policy_version": pa.array(np.full(rows, batch, dtype=np.int64)),
            "prompt": pa.array(["12+34="] * rows),
            "completion": text,
            "prompt_ids": pa.ListArray.from_arrays(
                pa.array(np.arange(0, rows * 6 + 1, 6, dtype=np.int32)), pa.array(np.ones(rows * 6, dtype=np.int32))
            ),
            "completion_ids": pa.ListArray.from_arrays(
                offsets, pa.array(rng.integers(0, 100, n_tokens, dtype=np.int32))
            ),
            "logprobs": pa.ListArray.from_arrays(offsets, pa.array(-rng.random(n_tokens, dtype=np.float32))),
            "finish_reason": pa.array(["stop"] * rows),
            "reward": pa.array(rng.random(rows)),
        }
    )
