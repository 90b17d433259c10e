"""The retrain trigger's arithmetic, the promotion decision and the error-rate breaker (no Prefect)."""

from __future__ import annotations

import json
import math

import pytest

from reasonloop.flows.breaker import BreakerConfig, BreakerOpen, ErrorRateBreaker
from reasonloop.flows.promotion import Incumbent, checkpoint_id, current_incumbent, decide, record_decision
from reasonloop.flows.watermarks import RetrainPolicy, data_positions, pending_rows, retrain_run_id, trained_positions
from reasonloop.storage import ReplayStore


def problems(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"{i}-1=", "answer": str(i - 1), "answer_type": "exact"} for i in range(start, start + n)]


def register(store: ReplayStore, run_id: str, data: dict[str, int] | None) -> None:
    watermark = {"run_id": run_id, **({"data": data} if data is not None else {})}
    store.write("checkpoints", [{"step": 1, "path": f"/m/{run_id}", "watermark": json.dumps(watermark)}], run_id=run_id)


def test_policy_refuses_tables_the_trainer_writes() -> None:
    for table in ("rollouts", "train_metrics", "checkpoints", "promotions"):
        with pytest.raises(ValueError, match="trigger itself"):
            RetrainPolicy(tables=(table,))
    with pytest.raises(ValueError, match="valid tables"):
        RetrainPolicy(tables=("nope",))
    with pytest.raises(ValueError, match="threshold"):
        RetrainPolicy(threshold=0)


def test_threshold_edges_by_commit_order(store: ReplayStore) -> None:
    policy = RetrainPolicy(threshold=10, tables=("problems", "sft_samples"))
    store.write("problems", problems(9))
    assert (pending_rows(store, policy).total, pending_rows(store, policy).due) == (9, False)
    store.write("problems", problems(1, start=100))  # exactly the threshold
    assert pending_rows(store, policy).due
    # A checkpoint trained on everything so far resets the count; rows after it count again.
    register(store, "r1", data_positions(store, policy.tables))
    assert pending_rows(store, policy).total == 0
    store.write("problems", problems(4, start=200))
    store.write("sft_samples", [{"prompt": "q", "target": "a"}])
    pending = pending_rows(store, policy)
    assert pending.new_rows == {"problems": 4, "sft_samples": 1} and not pending.due


def test_trainer_rows_never_count(store: ReplayStore) -> None:
    from tests.procs.common import rollout_batch

    policy = RetrainPolicy(threshold=1)
    store.write("rollouts", rollout_batch("w", 0, 50, "run"))
    register(store, "run", None)  # a checkpoint without a data watermark (e.g. the demo's)
    assert pending_rows(store, policy).total == 0


def test_reference_is_the_newest_trained_position(store: ReplayStore) -> None:
    register(store, "old", {"problems": 3})
    register(store, "rejected-but-newer", {"problems": 7})
    register(store, "no-data", None)
    assert trained_positions(store) == {"problems": 7}
    assert retrain_run_id({"problems": 7, "sft_samples": 2}) == "retrain-p7-s2"


def _eval(correct: list[int]) -> dict:
    acc = sum(correct) / len(correct)
    return {"accuracy": acc, "n": len(correct), "stderr": math.sqrt(acc * (1 - acc) / len(correct)),
            "ids": [str(i) for i in range(len(correct))], "correct": correct}  # fmt: skip


def test_decide_promotes_only_beyond_noise() -> None:
    base = [0] * 50 + [1] * 50
    assert decide(_eval([1] * 100), _eval(base)).promoted  # +50 points
    assert not decide(_eval(base), _eval(base)).promoted  # equal
    mixed = [1, 1, 1, *base[3:48], 0, 0, *base[50:]]  # 3 problems gained, 2 lost (index 48, 49 are 0 already)
    mixed[50], mixed[51] = 0, 0
    gain = decide(_eval(mixed), _eval(base)).gain
    assert math.isclose(gain.delta, 0.01) and gain.stderr > 0.02
    assert not decide(_eval(mixed), _eval(base)).promoted  # +1 point, within noise
    assert not decide(_eval(base), _eval([1] * 100)).promoted  # worse, beyond noise: never promoted


def test_decisions_are_recorded_and_the_newest_promotion_is_served(store: ReplayStore) -> None:
    assert current_incumbent(store, "/base") == Incumbent(None, "/base", 0)
    good, base = _eval([1] * 10), _eval([0] * 10)
    for run, candidate, incumbent_eval in (("a", good, base), ("b", base, good)):
        incumbent = current_incumbent(store, "/base")
        record_decision(
            store, run_id=run, candidate_id=checkpoint_id(run, 1, f"/m/{run}"), candidate_path=f"/m/{run}", incumbent=incumbent,
            decision=decide(candidate, incumbent_eval), candidate_eval=candidate, incumbent_eval=incumbent_eval,
            watermark={}, report="",
        )  # fmt: skip
    rows = store.query("SELECT run_id, decision, generation FROM promotions ORDER BY run_id").to_pylist()
    assert [(r["run_id"], r["decision"], r["generation"]) for r in rows] == [("a", "promoted", 1), ("b", "rejected", 1)]
    assert current_incumbent(store, "/base") == Incumbent(checkpoint_id("a", 1, "/m/a"), "/m/a", 1)


@pytest.mark.parametrize(
    ("rate", "min_calls", "outcomes", "opens_at"),
    [
        (0.2, 5, [True, True, True, True, False], None),  # 1/5 = 20%: not above the limit
        (0.2, 5, [True, True, True, False, False], 5),  # 2/5 = 40% at the 5th call
        (0.2, 5, [False, False, False, False, True], 5),  # failures before min_calls are not a rate
        (0.0, 1, [True, False], 2),  # zero tolerance: the first failure stops the run
        (1.0, 1, [False] * 20, None),  # 100% tolerated: never opens
        (0.5, 4, [False, True, False, True, True, False, False], 7),  # 4/7 > 50%
    ],
)
def test_breaker_edges(rate: float, min_calls: int, outcomes: list[bool], opens_at: int | None) -> None:
    breaker = ErrorRateBreaker(BreakerConfig(max_failure_rate=rate, min_calls=min_calls))
    opened = None
    for i, ok in enumerate(outcomes, start=1):
        try:
            breaker.record(ok)
        except BreakerOpen:
            opened = i
            break
    assert opened == opens_at


def test_breaker_config_is_validated() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(max_failure_rate=1.5)
    with pytest.raises(ValueError):
        BreakerConfig(min_calls=0)
