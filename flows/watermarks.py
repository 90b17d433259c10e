"""Which data a checkpoint has seen, and how much arrived since: the retrain trigger's arithmetic.

Counts are by commit order (positions in each table's commit log, storage.commit_log), never by
wall-clock timestamps, which are not monotonic across writers. The reference a count starts from
is the newest data position any registered checkpoint was trained on: the promoted checkpoint's
watermark, advanced past data a later candidate already trained on — else a candidate rejected
by evaluate-and-promote would be retrained on the same rows again and again. Pure functions of
the store; Prefect is not imported here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from reasonloop.schemas import get_table
from reasonloop.storage import ReplayStore

# Tables a retrain may count. Tables the trainer itself writes (rollouts, train_metrics,
# checkpoints, promotions) are refused: training would trigger training.
COUNTABLE = frozenset({"problems", "sft_samples"})


@dataclass(frozen=True)
class RetrainPolicy:
    """When new data makes a retrain due."""

    threshold: int = 1000  # new rows (summed over `tables`) that make a retrain due
    tables: tuple[str, ...] = ("problems",)  # source tables counted (synthesis output)

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {self.threshold}")
        for name in self.tables:
            get_table(name)  # unknown names fail listing the valid ones
            if name not in COUNTABLE:
                raise ValueError(
                    f"table {name!r} cannot trigger a retrain: only {sorted(COUNTABLE)} (synthesis output) "
                    "count; the trainer writes the others, so counting them would make training trigger itself"
                )


@dataclass(frozen=True)
class Pending:
    new_rows: dict[str, int]  # per table, after the reference position
    reference: dict[str, int]  # positions the newest trained checkpoint has seen
    positions: dict[str, int]  # newest positions now
    threshold: int
    total: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total", sum(self.new_rows.values()))

    @property
    def due(self) -> bool:
        return self.total >= self.threshold


def trained_positions(store: ReplayStore) -> dict[str, int]:
    """Per table, the newest data position any registered checkpoint was trained on."""
    rows = store.query("SELECT watermark FROM checkpoints WHERE watermark LIKE '%\"data\"%'").column("watermark")
    seen: dict[str, int] = {}
    for raw in rows.to_pylist():
        for table, position in json.loads(raw).get("data", {}).items():
            seen[table] = max(seen.get(table, 0), int(position))
    return seen


def data_positions(store: ReplayStore, tables: tuple[str, ...]) -> dict[str, int]:
    """The newest commit position of each table: the watermark a retrain starting now records."""
    return {t: store.commit_position(t) for t in tables}


def pending_rows(store: ReplayStore, policy: RetrainPolicy) -> Pending:
    reference = trained_positions(store)
    new_rows, positions = {}, {}
    for table in policy.tables:
        new_rows[table], positions[table] = store.rows_since(table, reference.get(table, 0))
    return Pending(new_rows, {t: reference.get(t, 0) for t in policy.tables}, positions, policy.threshold)


def retrain_run_id(positions: dict[str, int]) -> str:
    """A run id named by the data it trains on: a burst of events for one crossing names one run."""
    return "retrain-" + "-".join(f"{t[0]}{p}" for t, p in sorted(positions.items()))
