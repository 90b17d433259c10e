"""`reasonloop model init` and `reasonloop generate` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from reasonloop.flows.cli import app
from reasonloop.storage import ReplayStore

runner = CliRunner()


def test_model_init_then_generate_json_and_store(tmp_path: Path) -> None:
    model = tmp_path / "m"
    result = runner.invoke(app, ["model", "init", "--out", str(model), "--seed", "1"])
    assert result.exit_code == 0, result.output
    args = ["generate", "--model", str(model), "--prompt", "12+34=", "-n", "3", "--max-new-tokens", "6", "--seed", "0"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    assert len(items) == 3
    for item in items:
        assert set(item) == {"text", "raw_text", "token_ids", "logprobs", "entropies", "prompt_ids", "finish_reason"}
        assert len(item["token_ids"]) == len(item["logprobs"]) == len(item["entropies"]) <= 6
        assert item["text"] == item["raw_text"], "without --backtrack the shown text is the raw one"
    shown = json.loads(runner.invoke(app, [*args, "--json", "--backtrack"]).stdout)
    assert [i["raw_text"] for i in shown] == [i["raw_text"] for i in items], "backtracking changes no token"
    result = runner.invoke(app, [*args, "--store", "--root", str(tmp_path / "store"), "--run-id", "g1"])
    assert result.exit_code == 0 and "stored 3 rollouts" in result.output
    rows = ReplayStore(tmp_path / "store").query(
        "SELECT sample_idx, group_id, logprobs, reward FROM rollouts ORDER BY sample_idx"
    )
    assert rows.column("sample_idx").to_pylist() == [0, 1, 2] and len(set(rows.column("group_id").to_pylist())) == 1
    assert rows.column("logprobs").to_pylist() == [i["logprobs"] for i in items]
    assert rows.column("reward").to_pylist() == [None] * 3, "unscored, not a fake zero"
    assert "mean entropy" in runner.invoke(app, args).output


def test_model_init_rejects_unknown_size(tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "init", "--out", str(tmp_path / "m"), "--size", "huge"])
    assert result.exit_code == 2 and "tiny, small" in result.output
