"""`reasonloop walkthrough`: a guided tour of the replay store on synthetic data.

It is the main job until the end-to-end demo exists: problems in, a quarantined bad row,
rollouts from three policy versions, an idempotent rerun, SQL over the views, the trainer-side
samplers, compaction, and where everything lives.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from reasonloop.storage import ReplayStore
from reasonloop.storage.samplers import nonzero_std_groups, staleness_window


def synthetic_rollouts(
    problems: list[dict], run_id: str, policy_version: int, group_size: int, seed: int
) -> list[dict]:
    """Rollout rows shaped like a trainer's (fake completions, real structure)."""
    rng = random.Random(seed * 1000 + policy_version)
    rows = []
    for problem in problems:
        group_id = f"{problem['id'][:8]}-v{policy_version}"
        for sample_idx in range(group_size):
            correct = rng.random() < 0.3 + 0.2 * policy_version
            completion = problem["answer"] if correct else str(rng.randint(0, 999))
            ids = [ord(c) % 97 for c in completion]
            rows.append(
                {
                    "problem_id": problem["id"],
                    "group_id": group_id,
                    "sample_idx": sample_idx,
                    "policy_version": policy_version,
                    "prompt": problem["prompt"],
                    "completion": completion,
                    "prompt_ids": [ord(c) % 97 for c in problem["prompt"]],
                    "completion_ids": ids,
                    "logprobs": [-rng.random() for _ in ids],
                    "entropy": rng.random(),
                    "finish_reason": "stop",
                    "reward": float(correct),
                    "rewards": {"exact": float(correct)},
                }
            )
    return rows


def run_walkthrough(root: Path | None, say: Callable[[str], None] = print, seed: int = 0) -> ReplayStore:
    store = ReplayStore(root)
    rng = random.Random(seed)
    say(f"store root: {store.root}")

    pairs = [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(16)]
    problems = [
        {"prompt": f"{a}+{b}=", "answer": str(a + b), "answer_type": "exact", "source": "arith"} for a, b in pairs
    ]
    bad = {"prompt": "1+1=", "answer_type": "exact"}  # no answer: quarantined, not lost
    result = store.write("problems", [*problems, bad], run_id="walkthrough", producer="walkthrough")
    say(f"1. problems: committed {result.committed}, rejected {result.rejected} ({result.rejections[0].reason})")

    again = store.write("problems", problems, run_id="walkthrough", producer="walkthrough")
    say(f"2. same batch again: committed {again.committed}, duplicate {again.duplicates} (content-addressed)")

    with store.reader() as reader:
        rows = reader.query("SELECT id, prompt, answer FROM problems ORDER BY prompt").to_pylist()
    for version in range(3):
        out = store.write(
            "rollouts",
            synthetic_rollouts(rows, "demo-run", version, 4, seed),
            run_id="demo-run",
            producer="walkthrough",
        )
        say(f"3. rollouts of policy_version {version}: committed {out.committed} in {len(out.files)} file")

    with store.reader() as reader:
        table = reader.query(
            "SELECT policy_version, count(*) AS n, round(avg(reward), 3) AS reward_mean "
            "FROM rollouts GROUP BY policy_version ORDER BY policy_version"
        )
        say(
            "4. SQL over the views:\n"
            + "\n".join(
                f"   v{r['policy_version']}: {r['n']} rows, reward {r['reward_mean']}" for r in table.to_pylist()
            )
        )
        window = staleness_window(reader, "demo-run", current_version=2, max_staleness=1, limit=8, seed=seed)
        say(
            f"5. replay sample, policy_version >= 2-1: {window.num_rows} rows, "
            f"versions {sorted(set(window.column('policy_version').to_pylist()))}"
        )
        useful = nonzero_std_groups(reader, "demo-run")
        say(f"6. DAPO dynamic sampling: {useful.num_rows} rollouts in groups whose rewards differ")
    before = store.delta_file_count("rollouts")
    store.compact()
    say(f"7. compaction: rollouts delta files {before} -> {store.delta_file_count('rollouts')} (+1 compacted file)")
    for s in store.stats():
        if s["rows"]:
            say(f"   {s['table']}: {s['rows']} rows in {s['files']} file(s)")
    say(f'Try: reasonloop store query "SELECT * FROM rejected" --root {store.root}')
    return store
