"""Samplers: the queries trainers draw batches with. Parameterized SQL over one run's partition;
values are bound by DuckDB, never formatted into the text."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from reasonloop.schemas import get_table
from reasonloop.schemas.validate import partition_problem
from reasonloop.storage.layout import partition_dir_name
from reasonloop.storage.reader import StoreReader, read_parquet_sql


def run_partition(run_id: str) -> str:
    """The partition directory of a run (`run_id=...`), or ValueError for a name that cannot be one."""
    problem = partition_problem("run_id", run_id)
    if problem:
        raise ValueError(problem)
    return partition_dir_name("run_id", run_id)


def _seeded_order(seed: int | None) -> str:
    # hash(id, seed) is a fixed pseudo-random permutation for a given seed.
    return "hash(id || $seed)" if seed is not None else "id"


def staleness_window(
    reader: StoreReader,
    run_id: str,
    *,
    current_version: int,
    max_staleness: int,
    limit: int | None = None,
    seed: int | None = None,
) -> pa.Table:
    """Rollouts with current - k <= policy_version <= current; with `limit`, a uniform sample
    of that many (deterministic for a seed)."""
    where = "policy_version BETWEEN $low AND $high"
    params: dict = {"low": current_version - max_staleness, "high": current_version}
    bounds = {"policy_version": (params["low"], params["high"])}
    scan = reader.scan("rollouts", where=where, partition=run_partition(run_id), bounds=bounds)
    sql = f"SELECT * FROM ({scan}) ORDER BY {_seeded_order(seed)}"
    if seed is not None:
        params["seed"] = str(seed)
    if limit is not None:
        sql += " LIMIT $limit"
        params["limit"] = limit
    return reader.query(sql, params)


def latest_rollouts(reader: StoreReader, run_id: str) -> pa.Table:
    """The rollouts of the newest policy_version of a run (fresh, on-policy rows)."""
    scan = reader.scan("rollouts", partition=run_partition(run_id))
    sql = (
        f"WITH r AS ({scan}) SELECT * FROM r "
        "WHERE policy_version = (SELECT max(policy_version) FROM r) ORDER BY group_id, sample_idx, id"
    )
    return reader.query(sql)


def uniform_sample(reader: StoreReader, table: str, n: int, *, seed: int) -> pa.Table:
    """n rows of a table, uniformly, the same rows for the same seed and snapshot."""
    sql = f"SELECT * FROM ({reader.scan(table)}) ORDER BY hash(id || $seed) LIMIT $n"
    return reader.query(sql, {"seed": str(seed), "n": n})


def nonzero_std_groups(
    reader: StoreReader, run_id: str, *, min_version: int = 0, max_version: int | None = None
) -> pa.Table:
    """Rollouts of groups whose rewards are not all equal (DAPO dynamic sampling): a group where
    every sample scores the same has zero advantage and teaches nothing."""
    where = "policy_version >= $low" + (" AND policy_version <= $high" if max_version is not None else "")
    params: dict = {"low": min_version}
    if max_version is not None:
        params["high"] = max_version
    bounds = {"policy_version": (min_version, max_version)}
    scan = reader.scan("rollouts", where=where, partition=run_partition(run_id), bounds=bounds)
    sql = (
        f"WITH r AS ({scan}) SELECT * FROM r WHERE group_id IN "
        "(SELECT group_id FROM r GROUP BY group_id HAVING max(reward) > min(reward)) "
        "ORDER BY group_id, sample_idx, id"
    )
    return reader.query(sql, params)


def batch_rows(reader: StoreReader, files: list, *, nonzero_std: bool = False) -> pa.Table:
    """The rows of explicit rollout files (a step's own batch: no listing of the run's history),
    ordered by (problem_id, stage, group_id, sample_idx) — an order that does not depend on the
    run id — and with `nonzero_std`, only groups whose scored rewards differ."""
    if not files:
        return reader.query("SELECT * FROM _empty_rollouts")
    source = read_parquet_sql(get_table("rollouts"), files)
    keep = (
        "WHERE group_id IN (SELECT group_id FROM b GROUP BY group_id "
        "HAVING max(reward) > min(reward))"  # unscored (NULL) rewards take no part
        if nonzero_std
        else ""
    )
    order = "problem_id, stage, group_id, sample_idx"
    return reader.query(f"WITH b AS (SELECT * FROM {source}) SELECT * FROM b {keep} ORDER BY {order}")


def replay_groups(
    reader: StoreReader, run_id: str, *, low: int, high: int, groups: int, seed: int, stages: tuple[str, ...]
) -> pa.Table:
    """`groups` whole groups of a run with low <= policy_version <= high and a non-zero advantage
    (groups that can still teach something), chosen uniformly for a seed."""
    where = "policy_version BETWEEN $low AND $high AND advantage <> 0 AND list_contains($stages, stage)"
    scan = reader.scan("rollouts", where=where, partition=run_partition(run_id), bounds={"policy_version": (low, high)})
    sql = (
        f"WITH r AS ({scan}) SELECT * FROM r WHERE group_id IN "
        "(SELECT group_id FROM (SELECT DISTINCT group_id FROM r) ORDER BY hash(group_id || $seed) LIMIT $n) "
        "ORDER BY problem_id, stage, group_id, sample_idx"
    )
    params = {"low": low, "high": high, "seed": str(seed), "n": groups, "stages": list(stages)}
    return reader.query(sql, params)


def sft_rows(store: Any, split: str = "train", source: str = "", limit: int = 0) -> list[dict]:
    """What the trainers read of `sft_samples` (prompt, messages, target, loss_mask_spans, media_ref), by id:
    one split, one source unless `source` is '', the first `limit` rows unless 0."""
    where, by_split = split_filter(split, source)
    params: dict[str, Any] = {**by_split, "n": limit} if limit else dict(by_split)
    query = f"SELECT prompt, messages, target, loss_mask_spans, media_ref FROM sft_samples WHERE {where} ORDER BY id"
    return store.query(query + (" LIMIT $n" if limit else ""), params).to_pylist()


def split_filter(split: str, source: str = "") -> tuple[str, dict[str, str]]:
    """WHERE clause and parameters selecting one split, and one source unless `source` is ''."""
    if source:
        return "split = $split AND source = $source", {"split": split, "source": source}
    return "split = $split", {"split": split}


def problem_accuracy(reader: StoreReader, run_id: str, metric: str, *, before: int) -> dict[str, tuple[int, float]]:
    """problem_id -> (scored rollouts, mean of reward component `metric`) over a run's rollouts
    with policy_version < `before` (a fresh snapshot: what the run has committed so far)."""
    if before <= 0:
        return {}
    bounds = {"policy_version": (0, before - 1)}
    scan = reader.scan("rollouts", where="policy_version < $before", partition=run_partition(run_id), bounds=bounds)
    rows = reader.query(
        f"SELECT problem_id, count(rewards[$m]) AS n, avg(rewards[$m]) AS acc FROM ({scan}) GROUP BY problem_id",
        {"m": metric, "before": before},
    ).to_pylist()
    return {r["problem_id"]: (r["n"], r["acc"]) for r in rows if r["acc"] is not None}
