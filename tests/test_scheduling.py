"""Difficulty scheduling: buckets, order, and pass rates measured with a scripted engine."""

from __future__ import annotations

from reasonloop.tasks.engines import make_engine
from reasonloop.tasks.scheduling.difficulty import Annotated, annotate, schedule


def problem(pid: str, taxonomy: str) -> dict:
    return {"id": pid, "prompt": pid, "answer": "1", "taxonomy": taxonomy,
            "process_labels": {"I": "calc", "P": "x", "A": "1", "F": "1"}}  # fmt: skip


def test_buckets_and_order() -> None:
    rows = [
        Annotated(problem("solved", "deductive"), 1.0, 6.0),
        Annotated(problem("learn-inductive", "inductive"), 0.5, 4.0),
        Annotated(problem("learn-deductive", "deductive"), 0.25, 2.0),
        Annotated(problem("promising", "deductive"), 0.0, 4.0),
        Annotated(problem("hopeless", "causal"), 0.0, 1.0),
        Annotated(problem("learn-causal", "causal"), 0.75, 5.0),
    ]
    assert [a.bucket for a in rows] == ["solved", "learnable", "learnable", "promising", "hopeless", "learnable"]
    order = [p["id"] for p in schedule(rows)]
    assert order == ["learn-deductive", "learn-causal", "learn-inductive", "promising"]


def test_annotate_measures_pass_rate_and_process() -> None:
    answers = {"a": ["I:calc;P:x;S:y;A:1;#1"] * 4, "b": ["I:calc;P:x;S:y;A:1;#1", "#2", "#2", "#2"], "c": ["#2"] * 4}
    engine = make_engine("fake", script=lambda prompt, i: answers[prompt][i])
    result = annotate(engine, [problem("a", "deductive"), problem("b", "causal"), problem("c", "inductive")], k=4)
    assert [r.pass_rate for r in result] == [1.0, 0.25, 0.0]
    assert [r.process for r in result] == [6.0, 1.5, 0.0]
    assert [r.bucket for r in result] == ["solved", "learnable", "hopeless"]


def test_write_curriculum_keeps_learnable_in_order(tmp_path) -> None:
    import json

    from reasonloop.tasks.scheduling.difficulty import write_curriculum

    answers = {"a": ["#1"] * 4, "b": ["#1", "#2", "#2", "#2"], "c": ["#2"] * 4, "d": ["#1", "#1", "#2", "#2"]}
    engine = make_engine("fake", script=lambda prompt, i: answers[prompt][i])
    rows = [problem("a", "deductive"), problem("b", "inductive"), problem("c", "causal"), problem("d", "causal")]
    counts = write_curriculum(engine, rows, tmp_path / "c.json", k=4)
    assert counts == {"solved": 1, "learnable": 2, "promising": 0, "hopeless": 1, "scheduled": 2}
    assert json.loads((tmp_path / "c.json").read_text())["problem_ids"] == ["d", "b"]  # causal before inductive
