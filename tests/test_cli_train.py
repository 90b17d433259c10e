"""`reasonloop synth arith`, `sft` and `train` from the command line; every config option has help."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from typer.testing import CliRunner

from reasonloop.flows.cli import app
from reasonloop.storage import ReplayStore
from reasonloop.trainers.config import SFTConfig, TrainConfig

runner = CliRunner()


def test_every_config_field_is_an_option_with_help() -> None:
    for command, config in (("train", TrainConfig), ("sft", SFTConfig)):
        out = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"}).output
        for f in fields(config):
            assert f"--{f.name.replace('_', '-')}" in out, (command, f.name)
            assert f.metadata["help"][:25] in out, (command, f.name)


def test_synth_sft_train_from_the_command_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    root = str(tmp_path / "store")
    result = runner.invoke(app, ["synth", "arith", "--n", "300", "--max-digits", "2", "--root", root])
    assert result.exit_code == 0 and "problems committed" in result.output
    sft_out = tmp_path / "sft"
    args = [
        "sft",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(sft_out),
        "--steps",
        "5",
        "--batch-size",
        "8",
        "--root",
        root,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    args = ["train", "--run-id", "cli", "--model", str(sft_out), "--steps", "2", "--prompts-per-step", "2",
            "--group-size", "2", "--max-completion-length", "6", "--algo", "dapo", "--root", root]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = ReplayStore(root).query("SELECT run_id, step FROM train_metrics ORDER BY run_id, step").to_pylist()
    assert [r for r in rows if r["run_id"] == "cli"] == [{"run_id": "cli", "step": 1}, {"run_id": "cli", "step": 2}]
    assert ReplayStore(root).query("SELECT count(*) AS n FROM checkpoints WHERE run_id = 'cli'").to_pylist() == [
        {"n": 1}
    ]
    bad = runner.invoke(app, ["train", "--run-id", "x", "--model", str(sft_out), "--algo", "ppo", "--root", root])
    assert bad.exit_code == 2 and "valid algos" in bad.output


def test_report_to_tensorboard_reaches_the_training_loop(tmp_path: Path, tiny_model_dir: Path) -> None:
    import importlib.util

    import pytest

    from reasonloop.tasks.recipes.arith import ArithConfig, generate
    from reasonloop.trainers.run import run_rl

    store = ReplayStore(tmp_path / "store")
    store.write("problems", generate(ArithConfig(n=50, max_digits=2))[0])
    config = TrainConfig(steps=1, prompts_per_step=2, group_size=2, max_completion_length=4, report_to="tensorboard")
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            run_rl(store, config, run_id="tb", model=tiny_model_dir)
    else:  # pragma: no cover - with the bench extra installed
        run_rl(store, config, run_id="tb", model=tiny_model_dir)
        assert any((store.root / "checkpoints" / "tb" / "tb").iterdir())
