"""The demo report: a Markdown page with PNG plots, gains reported stage by stage.

Base -> SFT and SFT -> RL gains are reported separately (an SFT gain is not an RL result), each
with its standard error on the same fixed held-out problems.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from reasonloop.storage import ReplayStore
from reasonloop.trainers.evaluate import paired_gain

QUERIES = [
    (
        "Reward and entropy by step",
        "SELECT step, metrics['reward_mean'] AS reward, metrics['entropy'] AS entropy FROM train_metrics WHERE run_id = '{run}' ORDER BY step",
    ),
    (
        "Which rollouts trained step 10",
        "SELECT prompt, completion, reward, advantage FROM rollouts WHERE run_id = '{run}' AND policy_version = 9 ORDER BY group_id, sample_idx",
    ),
    (
        "Reward by task type",
        "SELECT p.taxonomy, avg(r.reward) AS reward, count(*) AS n FROM rollouts r JOIN problems p ON p.id = r.problem_id WHERE r.run_id = '{run}' GROUP BY 1 ORDER BY 1",
    ),
    ("Quarantined rows and why", "SELECT table_name, reason, count(*) AS n FROM rejected GROUP BY ALL ORDER BY n DESC"),
    (
        "Checkpoints and their data watermark",
        "SELECT run_id, step, path, watermark FROM checkpoints WHERE kind = 'full' ORDER BY run_id, step",
    ),
]


def _plot(path: Path, title: str, series: dict[str, tuple[list, list]], ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, linewidth=0.8, alpha=0.5)
        if len(y) >= 20:  # per-step values are noisy (8 prompts a step): show a 10-step mean too
            smooth = [sum(y[max(0, i - 9) : i + 1]) / len(y[max(0, i - 9) : i + 1]) for i in range(len(y))]
            ax.plot(x, smooth, label=f"{label} (10-step mean)", linewidth=1.6)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0] and len(ax.lines) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _gain(after: dict, before: dict) -> str:
    gain = paired_gain(after, before)
    verdict = "larger than its standard error" if gain.beyond_noise else "within noise"
    kind = "paired SE over the same problems" if gain.paired else "unpaired SE"
    return f"{100 * gain.delta:+.1f} points (± {100 * gain.stderr:.1f}, {kind}; {verdict})"


def write_report(
    out: Path, store: ReplayStore, *, rl_run: str, sft_run: str, evals: dict[str, dict], info: dict[str, Any]
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = store.query(
        "SELECT step, metrics FROM train_metrics WHERE run_id = $r ORDER BY step", {"r": rl_run}
    ).to_pylist()
    steps = [r["step"] for r in rows]
    metric = {
        k: [dict(r["metrics"]).get(k, math.nan) for r in rows]
        for k in ("reward_mean", "entropy", "completion_length_mean")
    }
    _plot(out / "reward.png", "RL reward (veritime)", {"reward": (steps, metric["reward_mean"])}, "reward")
    _plot(out / "entropy.png", "Token entropy of rollouts", {"entropy": (steps, metric["entropy"])}, "nats")
    _plot(out / "length.png", "Completion length", {"length": (steps, metric["completion_length_mean"])}, "tokens")
    sft_rows = store.query(
        "SELECT step, loss FROM train_metrics WHERE run_id = $r ORDER BY step", {"r": sft_run}
    ).to_pylist()
    _plot(
        out / "sft_loss.png",
        "SFT loss",
        {"loss": ([r["step"] for r in sft_rows], [r["loss"] for r in sft_rows])},
        "nll",
    )
    stages = list(evals)
    tasks = sorted({t for e in evals.values() for t in e["per_task"]})
    _accuracy_plot(out / "accuracy.png", evals, tasks)

    lines = [
        "# reasonloop demo report", "",
        f"Store: `{store.root}` · RL run `{rl_run}` · algorithm `{info['algo']}` · wall time {info['wall_s']:.0f} s", "",
        "## Held-out accuracy (greedy, fixed problems split from training by content hash)", "",
        "| stage | accuracy | n | pass@4 |", "| --- | ---: | ---: | ---: |",
        *[f"| {s} | {100 * e['accuracy']:.1f}% ± {100 * e['stderr']:.1f} | {e['n']} | {100 * e['pass@4']:.1f}% |" for s, e in evals.items()],
        "",
        f"- base → SFT: {_gain(evals['sft'], evals['base'])} — a supervised gain, not an RL result",
        f"- SFT → RL: {_gain(evals['rl'], evals['sft'])} — what RL through the store added",
        "", "## Accuracy per task type", "",
        "| task | " + " | ".join(stages) + " |", "| --- |" + " ---: |" * len(stages),
        *[f"| {t} | " + " | ".join(_cell(evals[s]["per_task"].get(t)) for s in stages) + " |" for t in tasks],
        "", "![accuracy](accuracy.png)", "", "## Training curves", "",
        "![reward](reward.png) ![entropy](entropy.png)", "", "![length](length.png) ![sft loss](sft_loss.png)",
        "", "## Query the store yourself", "",
        *[f"{title}:\n\n```bash\nreasonloop store query \"{sql.format(run=rl_run)}\" --root {store.root}\n```\n" for title, sql in QUERIES],
        "## Settings", "", *[f"- {k}: {v}" for k, v in info.items()], "",
    ]  # fmt: skip
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def _cell(acc: dict | None) -> str:
    return "—" if acc is None else f"{100 * acc['accuracy']:.1f}% (n={acc['n']})"


def _accuracy_plot(path: Path, evals: dict[str, dict], tasks: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    width = 0.8 / max(1, len(evals))
    for i, (stage, e) in enumerate(evals.items()):
        values = [100 * e["per_task"].get(t, {"accuracy": 0})["accuracy"] for t in tasks]
        ax.bar([x + i * width for x in range(len(tasks))], values, width, label=stage)
    ax.set_xticks([x + width * (len(evals) - 1) / 2 for x in range(len(tasks))], tasks)
    ax.set_ylabel("held-out accuracy (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
