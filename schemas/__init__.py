"""Table schemas: one module per table, each an explicit, versioned Arrow schema."""

from __future__ import annotations

from reasonloop.schemas.checkpoints import CHECKPOINTS
from reasonloop.schemas.common import TableSpec, config_fingerprint, row_id
from reasonloop.schemas.consumed import CONSUMED
from reasonloop.schemas.preferences import PREFERENCES
from reasonloop.schemas.problems import PROBLEMS
from reasonloop.schemas.promotions import PROMOTIONS
from reasonloop.schemas.rejected import REJECTED
from reasonloop.schemas.rollouts import ROLLOUTS
from reasonloop.schemas.schedule import SCHEDULE
from reasonloop.schemas.sft_samples import SFT_SAMPLES
from reasonloop.schemas.train_metrics import TRAIN_METRICS

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        PROBLEMS,
        ROLLOUTS,
        SFT_SAMPLES,
        PREFERENCES,
        TRAIN_METRICS,
        CONSUMED,
        CHECKPOINTS,
        PROMOTIONS,
        REJECTED,
        SCHEDULE,
    )
}


class UnknownTableError(ValueError):
    pass


def get_table(name: str) -> TableSpec:
    """The spec of table `name`; an unknown name fails listing the valid ones."""
    try:
        return TABLES[name]
    except KeyError:
        raise UnknownTableError(f"unknown table {name!r}; valid tables: {', '.join(sorted(TABLES))}") from None


__all__ = ["TABLES", "TableSpec", "UnknownTableError", "config_fingerprint", "get_table", "row_id"]
