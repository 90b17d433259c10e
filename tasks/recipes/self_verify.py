"""Learning to Self-Verify (2602.07594, SPECS §11.2): verification rows built from the policy's own
groups, the prompts that ask it to judge a response, and a warm start in that format.

From one generation step's groups (each response right or wrong by the run's reward):
    mixed group (0 < pass < 1)   one right response -> a "Yes" row, one wrong -> a "No" row;
                                 one more of each (if any) goes to the class's pool
    all-right group              its responses go to the "Yes" pool
    all-wrong group              skipped
then each class is balanced to `per_class` rows (|groups| / 2 in the paper): trimmed, or filled
from its pool, then by sampling its rows with replacement. A class with no row at all stays empty.

Templates: `teacher` (the paper's: a grading prompt ending in `Answer: \\boxed{Yes/No}`), `short`
(the tiny models': the question and response, then `verify:`, answered `#Yes` / `#No`), or a text
with {question} and {response}. Mode `full` shows the whole response, `answer` only its extracted
final answer (the paper's judge_answer).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from reasonloop.tasks.rewards.answers import extract_answer

TEMPLATES = {
    "teacher": (
        "You are a teacher grading a student's answer.\nQuestion: {question}\nStudent's Answer: {response}\n"
        "Is the student's answer correct? Reason briefly, then give the last line as "
        "`Answer: \\boxed{{Yes}}` or `Answer: \\boxed{{No}}`."
    ),
    "short": "{question}{response}\nverify:",
}
MODES = ("full", "answer")


def template_text(template: str) -> str:
    text = TEMPLATES.get(template, template)
    if "{question}" not in text or "{response}" not in text:
        raise ValueError(
            f"verify template must be {' | '.join(TEMPLATES)} or a text with {{question}} and {{response}}"
        )
    return text


def verify_prompt(question: str, response: str, template: str = "short", mode: str = "full") -> str:
    if mode not in MODES:
        raise ValueError(f"verify mode must be one of {', '.join(MODES)}")
    shown = extract_answer(response) if mode == "answer" else response
    return template_text(template).format(question=question, response=shown)


def label_target(right: bool, template: str = "short") -> str:
    """The verdict as a target the reward's answer extraction reads (SFT warm start)."""
    word = "Yes" if right else "No"
    return f"Answer: \\boxed{{{word}}}" if template == "teacher" else f"#{word}"


@dataclass(frozen=True)
class Judged:
    """A response of a group: which rollout, and whether the run's reward called it right."""

    rollout_id: str
    group_id: str
    right: bool


def verification_pairs(responses: Sequence[Judged], per_class: int, rng: random.Random) -> list[tuple[Judged, bool]]:
    """(response, label) rows, balanced to `per_class` per label as the module docstring says;
    groups in first-seen order, so the result depends on the input and `rng` only."""
    groups: dict[str, list[Judged]] = {}
    for r in responses:
        groups.setdefault(r.group_id, []).append(r)
    rows: dict[bool, list[Judged]] = {True: [], False: []}
    pools: dict[bool, list[Judged]] = {True: [], False: []}
    for members in groups.values():
        right = [m for m in members if m.right]
        wrong = [m for m in members if not m.right]
        if right and wrong:
            rows[True].append(right[0])
            rows[False].append(wrong[0])
            pools[True] += right[1:2]
            pools[False] += wrong[1:2]
        elif right:
            pools[True] += right
    out: list[tuple[Judged, bool]] = []
    for label in (True, False):
        chosen = rows[label][:per_class]
        pool = list(pools[label])
        rng.shuffle(pool)
        chosen += pool[: per_class - len(chosen)]
        if chosen and len(chosen) < per_class:
            chosen += rng.choices(chosen, k=per_class - len(chosen))
        out += [(j, label) for j in chosen]
    return out


def corrupt_answer(chain: str, rng: random.Random) -> str:
    """A wrong version of a '#'-answered chain: the final answer's last digit changed."""
    head, _, answer = chain.rpartition("#")
    digits = [i for i, ch in enumerate(answer) if ch.isdigit()]
    if not digits:
        return f"{head}#{answer}x"
    k = digits[-1]
    new = rng.choice([d for d in "0123456789" if d != answer[k]])
    return f"{head}#{answer[:k]}{new}{answer[k + 1 :]}"


def warm_start_rows(samples: Sequence[dict], template: str = "short", mode: str = "full", seed: int = 0) -> list[dict]:
    """SFT rows in the verification format from gold chains (verified right -> Yes) and the same
    chains with a corrupted final answer (-> No), half each: so a small model can write a verdict
    before RL trains it to judge its own responses (the paper's verification-first variant)."""
    rng = random.Random(seed)
    rows = []
    for s in samples:
        right = rng.random() < 0.5
        response = s["target"] if right else corrupt_answer(s["target"], rng)
        rows.append({**{k: v for k, v in s.items() if k not in ("messages",)},
                     "prompt": verify_prompt(s["prompt"], response, template, mode),
                     "target": label_target(right, template), "source": f"{s.get('source', '')}_verify"})  # fmt: skip
    return rows
