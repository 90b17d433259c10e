"""A corpus of bad inputs: each is rejected with its own reason, good rows beside it are kept."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasonloop.schemas import get_table
from reasonloop.schemas.validate import Limits, validate_rows, validate_table
from reasonloop.storage import ReplayStore, StoreConfig

PROBLEM = {"prompt": "12+34=", "answer": "46", "answer_type": "exact"}
ROLLOUT = {
    "problem_id": "p1",
    "group_id": "g1",
    "sample_idx": 0,
    "policy_version": 3,
    "prompt": "12+34=",
    "completion": "46",
    "prompt_ids": [5, 6, 7],
    "completion_ids": [8, 9],
    "logprobs": [-0.5, -0.25],
    "finish_reason": "stop",
    "reward": 1.0,
    "rewards": {"exact": 1.0},
}
METRIC = {"step": 1, "loss": 0.5, "metrics": {"reward/mean": 0.25}}
CHECKPOINT = {"step": 1, "path": "/ckpt/1"}


def with_(base: dict, **changes: object) -> dict:
    row = dict(base)
    for key, value in changes.items():
        if value is DROP:
            row.pop(key)
        else:
            row[key] = value
    return row


DROP = object()

# (name, table, bad row, words the reason must contain)
CORPUS = [
    ("list instead of object", "problems", [1, 2], "not an object"),
    ("string instead of object", "problems", "12+34=", "not an object"),
    ("missing prompt", "problems", with_(PROBLEM, prompt=DROP), "missing required field 'prompt'"),
    ("missing answer", "problems", with_(PROBLEM, answer=DROP), "missing required field 'answer'"),
    ("missing answer_type", "problems", with_(PROBLEM, answer_type=DROP), "'answer_type'"),
    ("prompt is a number", "problems", with_(PROBLEM, prompt=12), "expected a string"),
    ("answer is a list", "problems", with_(PROBLEM, answer=["46"]), "expected a string"),
    ("answer_type not known", "problems", with_(PROBLEM, answer_type="vibes"), "not one of"),
    ("empty prompt", "problems", with_(PROBLEM, prompt=""), "'prompt' is empty"),
    ("unknown field", "problems", with_(PROBLEM, question="?"), "unknown field"),
    ("unpaired surrogate", "problems", with_(PROBLEM, prompt="bad \ud800 text"), "invalid UTF-8"),
    ("invalid UTF-8 bytes", "problems", with_(PROBLEM, answer=b"\xff\xfe"), "invalid UTF-8"),
    ("text over limit", "problems", with_(PROBLEM, prompt="x" * 5000), "over the limit"),
    ("partition ../", "problems", with_(PROBLEM, source="../etc"), "could escape"),
    ("partition with /", "problems", with_(PROBLEM, source="a/b"), "could escape"),
    ("partition with NUL", "problems", with_(PROBLEM, source="a\x00b"), "could escape"),
    ("partition ..", "problems", with_(PROBLEM, source=".."), "could escape"),
    ("partition with space", "problems", with_(PROBLEM, source="my data"), "must be 1-128 characters"),
    ("split not known", "problems", with_(PROBLEM, split="validation"), "not one of"),
    ("difficulty NaN", "problems", with_(PROBLEM, difficulty=math.nan), "non-finite"),
    ("difficulty as text", "problems", with_(PROBLEM, difficulty="hard"), "expected a number"),
    ("schema_version from the future", "problems", with_(PROBLEM, schema_version=99), "schema_version 99"),
    ("id not a content hash", "problems", with_(PROBLEM, id="abc"), "not a 32-hex-digit"),
    ("created_at not a time", "problems", with_(PROBLEM, created_at="yesterday"), "ISO-8601"),
    ("choices with a number", "problems", with_(PROBLEM, choices=["a", 2]), "list element 1"),
    ("process_labels value not text", "problems", with_(PROBLEM, process_labels={"intent": 3}), "map value"),
    (
        "messages with extra key",
        "problems",
        with_(PROBLEM, messages=[{"role": "user", "text": "hi"}]),
        "unexpected key",
    ),
    ("reward NaN", "rollouts", with_(ROLLOUT, reward=math.nan), "non-finite value (NaN or inf) in 'reward'"),
    ("reward inf", "rollouts", with_(ROLLOUT, reward=math.inf), "non-finite value (NaN or inf) in 'reward'"),
    ("reward as text", "rollouts", with_(ROLLOUT, reward="1.0"), "expected a number"),
    ("per-function reward NaN", "rollouts", with_(ROLLOUT, rewards={"exact": math.nan}), "in 'rewards'"),
    ("advantage -inf", "rollouts", with_(ROLLOUT, advantage=-math.inf), "in 'advantage'"),
    ("token/logprob length mismatch", "rollouts", with_(ROLLOUT, logprobs=[-0.5]), "has 2 values but logprobs has 1"),
    ("positive logprob", "rollouts", with_(ROLLOUT, logprobs=[-0.5, 0.5]), "logprobs must be <= 0"),
    ("NaN logprob", "rollouts", with_(ROLLOUT, logprobs=[-0.5, math.nan]), "in 'logprobs'"),
    ("negative token id", "rollouts", with_(ROLLOUT, completion_ids=[8, -1]), "'completion_ids' has a negative"),
    ("token id over int32", "rollouts", with_(ROLLOUT, prompt_ids=[2**40]), "out of range"),
    ("null inside token ids", "rollouts", with_(ROLLOUT, prompt_ids=[1, None]), "list element 1 is null"),
    ("sample_idx is a bool", "rollouts", with_(ROLLOUT, sample_idx=True), "expected an integer"),
    ("sample_idx is fractional", "rollouts", with_(ROLLOUT, sample_idx=1.5), "expected an integer"),
    ("stage not known", "rollouts", with_(ROLLOUT, stage="final"), "stage 'final' is not one of"),
    ("finish_reason not known", "rollouts", with_(ROLLOUT, finish_reason="abort"), "finish_reason"),
    ("negative policy_version", "rollouts", with_(ROLLOUT, policy_version=-1), "'policy_version' has a negative"),
    ("span start after end", "rollouts", with_(ROLLOUT, loss_mask_spans=[{"start": 3, "end": 1}]), "loss_mask_spans"),
    ("run_id escaping root", "rollouts", with_(ROLLOUT, run_id="../../tmp"), "could escape"),
    ("missing step", "train_metrics", with_(METRIC, step=DROP), "missing required field 'step'"),
    ("metric map of text", "train_metrics", with_(METRIC, metrics={"lr": "high"}), "map value"),
    ("promoted not a bool", "checkpoints", with_(CHECKPOINT, promoted="yes"), "expected true/false"),
    ("empty checkpoint path", "checkpoints", with_(CHECKPOINT, path=""), "'path' is empty"),
]
GOOD = {"problems": PROBLEM, "rollouts": ROLLOUT, "train_metrics": METRIC, "checkpoints": CHECKPOINT}


def test_corpus_is_large_and_distinct() -> None:
    assert len(CORPUS) >= 30
    assert len({name for name, *_ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize(("name", "table", "bad", "words"), CORPUS, ids=[c[0] for c in CORPUS])
def test_each_bad_row_is_rejected_with_its_reason(name: str, table: str, bad: object, words: str) -> None:
    checked = validate_rows(get_table(table), [GOOD[table], bad], limits=Limits(max_text_bytes=4096))
    assert checked.good.num_rows == 1, name
    assert checked.good.column("id")[0].as_py() is not None
    [rejection] = checked.rejected
    assert words in rejection.reason, rejection.reason
    assert rejection.raw is bad


def test_the_whole_corpus_goes_to_quarantine_and_good_rows_stay(tmp_path: Path) -> None:
    store = ReplayStore(tmp_path, StoreConfig(limits=Limits(max_text_bytes=4096)))
    for table in GOOD:
        bad_rows = [bad for _, t, bad, _ in CORPUS if t == table]
        result = store.write(table, [GOOD[table], *bad_rows], run_id="r1")
        assert (result.committed, result.rejected) == (1, len(bad_rows))
    rejected = store.query("SELECT table_name, raw, reason FROM rejected").to_pylist()
    assert len(rejected) == len(CORPUS)
    assert all(r["reason"] for r in rejected)
    kept = store.query("SELECT raw FROM rejected WHERE table_name = 'problems'").column("raw").to_pylist()
    assert json.loads(next(r for r in kept if "../etc" in r))["source"] == "../etc"  # raw row kept whole
    for table in GOOD:
        assert store.query(f"SELECT count(*) AS n FROM {table}").to_pylist() == [{"n": 1}]


def test_unknown_table_is_quarantined(tmp_path: Path) -> None:
    store = ReplayStore(tmp_path)
    result = store.write("problemz", [PROBLEM])
    assert (result.committed, result.rejected) == (0, 1)
    assert "valid tables: checkpoints, consumed, preferences, problems" in result.rejections[0].reason


def test_arrow_path_falls_back_to_row_reasons() -> None:
    spec = get_table("rollouts")
    # a float column cannot be cast to int32 as a whole (1.5): the rows are checked one by one
    table = pa.Table.from_pylist([with_(ROLLOUT, sample_idx=0.0), with_(ROLLOUT, sample_idx=1.5, group_id="g2")])
    checked = validate_table(spec, table)
    assert checked.good.num_rows == 1
    assert "expected an integer" in checked.rejected[0].reason


def test_arrow_path_applies_the_same_rules() -> None:
    spec = get_table("rollouts")
    table = pa.Table.from_pylist([ROLLOUT, with_(ROLLOUT, group_id="g2", logprobs=[-1.0])])
    checked = validate_table(spec, table)
    assert checked.good.num_rows == 1
    assert "logprobs has 1" in checked.rejected[0].reason
    assert checked.rejected[0].raw["group_id"] == "g2"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([*ROLLOUT, "stage", "advantage", "junk"]), json_values, max_size=6))
def test_any_json_row_is_either_kept_or_rejected_never_raises(changes: dict) -> None:
    row = {**ROLLOUT, **changes}
    checked = validate_rows(get_table("rollouts"), [row])
    assert checked.good.num_rows + len(checked.rejected) == 1
