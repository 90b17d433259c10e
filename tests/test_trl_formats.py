"""TRL's dataset formats load unchanged: prompt/completion and conversational rows are mapped onto
`sft_samples` and `problems` at ingest, from JSONL and from Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from reasonloop.storage import ReplayStore

USER = {"role": "user", "content": "2+2="}
ASSISTANT = {"role": "assistant", "content": "#4"}


def test_sft_formats(tmp_path: Path) -> None:
    rows = [
        {"prompt": "1+1=", "completion": "#2"},  # standard prompt-completion
        {"prompt": [USER], "completion": [ASSISTANT]},  # conversational prompt-completion
        {"messages": [{"role": "system", "content": "Add."}, {"role": "user", "content": "3+3="},
                      {"role": "assistant", "content": "#6"}]},  # conversational language modeling
    ]  # fmt: skip
    path = tmp_path / "sft.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    store = ReplayStore(tmp_path / "store")
    result = store.ingest("sft_samples", [path])
    assert (result.committed, result.rejected) == (3, 0), [r.reason for r in result.rejections]
    got = store.query("SELECT prompt, target, messages FROM sft_samples ORDER BY prompt").to_pylist()
    assert [(g["prompt"], g["target"]) for g in got] == [("1+1=", "#2"), ("2+2=", "#4"), ("3+3=", "#6")]
    assert got[0]["messages"] is None
    assert got[1]["messages"] == [USER, ASSISTANT] and len(got[2]["messages"]) == 3


def test_conversational_problems_from_parquet(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([
        {"prompt": [USER], "answer": "4", "answer_type": "numeric"},
        {"prompt": [{"role": "user", "content": "9+1="}], "answer": "10", "answer_type": "numeric"},
    ])  # fmt: skip
    path = tmp_path / "problems.parquet"
    pq.write_table(table, path)
    store = ReplayStore(tmp_path / "store")
    assert store.ingest("problems", [path]).committed == 2
    got = store.query("SELECT prompt, messages FROM problems ORDER BY prompt").to_pylist()
    assert got[0] == {"prompt": "2+2=", "messages": [USER]}


def test_a_trl_row_with_a_bad_turn_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"prompt": [USER], "completion": [{"role": "assistant", "content": 4}]}) + "\n")
    result = ReplayStore(tmp_path / "store").ingest("sft_samples", [path])
    assert result.rejected == 1 and "line 1" in result.rejections[0].reason
