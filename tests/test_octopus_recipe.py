"""Octopus's pure parts (tasks/recipes/octopus.py): the parser, pair labels, both selection rules on
hand-built groups, and the shaped reward with every cap of the released code."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from reasonloop.tasks.recipes.octopus import (
    BOXED,
    HASH,
    SEPARATOR,
    Correction,
    candidate_pairs,
    correction_reward,
    final_part,
    pair_label,
    select_pairs,
    split_correction,
)


def verify(part: str, gold: str) -> bool:
    return HASH.answer(part) == gold


# ------------------------------------------------------------------------------------- parser
def test_the_parser_splits_truncates_and_drops() -> None:
    text = f"7+8=15;#15 and then noise{SEPARATOR}7+8=15;#15;#16 trailing"
    assert split_correction(text) == Correction("7+8=15;#15", "7+8=15;#15;#16", True)
    assert split_correction("no answer here" + SEPARATOR + "#3") == Correction(None, "#3", True)
    assert split_correction("#3" + SEPARATOR + "no answer") == Correction("#3", None, True)
    assert split_correction("1+1=2;#2") == Correction("1+1=2;#2", None, False)
    # a second self-correction block ends o2: o2 is the first correction
    assert split_correction(f"#1{SEPARATOR}#2{SEPARATOR}#3").o2 == "#2"
    assert final_part(f"#1{SEPARATOR}#2{SEPARATOR}#3") == "#3"


def test_the_boxed_format() -> None:
    text = f"so \\boxed{{\\frac{{1}}{{2}}}} end{SEPARATOR}\\boxed{{3}} more"
    parts = split_correction(text, BOXED)
    assert parts.o1 == "so \\boxed{\\frac{1}{2}}" and parts.o2 == "\\boxed{3}"
    assert BOXED.answer(parts.o1) == "\\frac{1}{2}"
    assert BOXED.well_formed("\\boxed{}") == 0.0 and BOXED.well_formed("\\boxed{1} \\boxed{2}") == 0.0


def test_all_sixteen_pair_labels_of_a_group_of_four() -> None:
    o1 = [True, False, True, False]
    o2 = [True, True, False, False]
    pools = candidate_pairs(o1, o2)
    labelled = {pair: label for label, pairs in pools.items() for pair in pairs}
    assert len(labelled) == 16
    for i in range(4):
        for j in range(4):
            assert labelled[(i, j)] == pair_label(o1[i], o2[j])
    assert labelled[(1, 0)] == "wc" and labelled[(0, 2)] == "cw" and labelled[(0, 0)] == "cc"
    assert labelled[(3, 3)] == "ww"
    # a dropped part pairs with nothing
    assert sum(len(p) for p in candidate_pairs([True, None], [None, False]).values()) == 1


# ---------------------------------------------------------------------------------- selection
def group(o1: list[bool | None], o2: list[bool | None]) -> tuple[dict, list[bool]]:
    """Pools, and each original's correctness (its final answer: o2)."""
    return candidate_pairs(o1, o2), [bool(c) for c in o2]


@pytest.mark.parametrize("rule", ["paper", "code"])
def test_selection_fills_n_minus_n_without_repeats(rule: str) -> None:
    pools, originals = group([True, False, False, True] * 2, [True, True, False, False] * 2)
    chosen, padding = select_pairs(pools, originals, 8, rule, random.Random(0))
    assert len(chosen) == 8 and padding == 0 and len(set(chosen)) == 8


def test_paper_rule_balances_positives_and_negatives() -> None:
    # one correct original of 8 (o2 correct only for rollout 0): add 16/2 - 1 = 7 positives, 1 negative
    o1 = [False, True, False, False, False, False, False, False]
    o2 = [True, False, False, False, False, False, False, False]
    pools, originals = group(o1, o2)
    chosen, _ = select_pairs(pools, originals, 8, "paper", random.Random(0))
    labels = Counter(pair_label(o1[i], o2[j]) for i, j in chosen)
    positives = labels["wc"] + labels["cc"]
    assert positives == 7 and labels["wc"] == 7  # seven w→c exist: (i, 0) for the seven wrong o1
    assert positives + sum(originals) == (8 + 8) // 2, "positives equal negatives over the 16"


def test_paper_rule_tops_up_with_cc() -> None:
    # two correct originals; only one w→c pair exists: the rest of the positives are c→c
    o1 = [True, True, False, True, True, True, True, True]
    o2 = [True, False, False, False, False, False, False, True]
    pools, originals = group(o1, o2)
    assert len(pools["wc"]) == 2  # (2, 0), (2, 7)
    chosen, _ = select_pairs(pools, originals, 8, "paper", random.Random(1))
    labels = Counter(pair_label(o1[i], o2[j]) for i, j in chosen)
    assert labels["wc"] == 2 and labels["cc"] == 4  # 16/2 - 2 correct originals = 6 positives
    assert labels["cw"] + labels["ww"] == 2


@pytest.mark.parametrize("all_correct", [True, False])
def test_paper_rule_fills_at_random_when_originals_agree(all_correct: bool) -> None:
    o1 = [True, False, True, False]
    o2 = [all_correct] * 4
    pools, originals = group(o1, o2)
    seen = set()
    for seed in range(20):
        chosen, padding = select_pairs(pools, originals, 4, "paper", random.Random(seed))
        assert len(chosen) == 4 and padding == 0
        seen.add(tuple(sorted(chosen)))
    assert len(seen) > 10, "random fill: different seeds choose different pairs"


def test_code_rule_order() -> None:
    # k = 2 correct of 8: quota 3 w→c, then 3 c→c, one c→w, then w→w for the last slot
    o1 = [False, False, False, False, True, True, True, True]
    o2 = [True, True, False, False, False, False, False, False]
    pools, originals = group(o1, o2)
    chosen, padding = select_pairs(pools, originals, 8, "code", random.Random(0))
    labels = [pair_label(o1[i], o2[j]) for i, j in chosen]
    assert labels == ["wc"] * 3 + ["cc"] * 3 + ["cw", "ww"] and padding == 0


def test_code_rule_all_correct_and_all_wrong() -> None:
    # all correct: quota 0, so one c→w, no w→w exists, the other c→w, then leftover c→c
    o1, o2 = [True, True, False, False], [True, True, True, True]
    pools, originals = group(o1, o2)
    chosen, _ = select_pairs(pools, originals, 4, "code", random.Random(0))
    assert len(chosen) == 4 and all(pair_label(o1[i], o2[j]) in ("wc", "cc") for i, j in chosen)
    # all wrong, o1 all wrong too: only w→w exists after the quotas
    o1, o2 = [False] * 4, [False] * 4
    pools, originals = group(o1, o2)
    chosen, _ = select_pairs(pools, originals, 4, "code", random.Random(0))
    assert {pair_label(o1[i], o2[j]) for i, j in chosen} == {"ww"}


def test_padding_when_pairs_run_out() -> None:
    pools, originals = group([True, None], [None, False])  # one pair only
    for rule in ("paper", "code"):
        chosen, padding = select_pairs(pools, originals, 2, rule, random.Random(0))
        assert chosen == [(0, 1)] and padding == 1


# ------------------------------------------------------------------------------------- reward
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"#1{SEPARATOR}#5", 0.9 * 1.0 + 0.1),  # w→c
        (f"#5{SEPARATOR};#5", 0.9 * 0.75 + 0.1),  # c→c
        (f"#1{SEPARATOR}#2", 0.9 * 0.0 + 0.1),  # w→w
        (f"#5{SEPARATOR}#2", 0.9 * -0.25 + 0.1),  # c→w
        (f"#5{SEPARATOR}#5", 0.9 * 0.5 + 0.1),  # o1 == o2: c→c capped at 0.5
        (f"no answer{SEPARATOR}#5", 0.9 * 0.0 + 0.0),  # o1 without an answer: r' <= 0, fmt 0
        (f"#{SEPARATOR}#5", 0.9 * 0.0 + 0.0),  # o1's answer empty: r' <= 0
        (f"#1{SEPARATOR}#5;#5", 0.9 * 0.5 + 0.0),  # o2 badly formed (two answers): w→c capped at 0.5
        (f"#1{SEPARATOR}nothing", 0.9 * 0.0 + 0.0),  # o2 dropped: w→w, fmt 0
        ("#5", 0.9 * 0.5 + 0.1),  # no separator, correct
        ("#4", 0.9 * -0.5 + 0.1),  # no separator, wrong
        ("nothing", 0.9 * -0.5 + 0.0),  # no separator, no answer
    ],
)
def test_reward_and_its_caps(text: str, expected: float) -> None:
    assert correction_reward(split_correction(text), "5", verify) == pytest.approx(expected)


def test_the_reward_on_veritime_targets() -> None:
    """VeriTime's chains end in '#<answer>' too; exact and choice problems are each checked by
    their own verifier (the registered `self_correction` reward)."""
    from reasonloop.tasks.recipes.veritime import VeriTimeConfig, generate
    from reasonloop.tasks.rewards import get_reward

    problems, samples = generate(VeriTimeConfig(n=200, seed=0))
    gold = {s["prompt"]: s["target"] for s in samples}
    reward = get_reward("self_correction")
    kinds = {p["answer_type"] for p in problems}
    assert kinds == {"exact", "choice"}
    for p in problems:
        chain = gold[p["prompt"]]
        wrong = chain.rsplit("#", 1)[0] + "#zzz"
        texts = [wrong + SEPARATOR + chain, chain + SEPARATOR + chain, chain + SEPARATOR + wrong, chain]
        scores = reward([p["prompt"]] * 4, texts, answer=[p["answer"]] * 4, answer_type=[p["answer_type"]] * 4)
        assert scores == pytest.approx([1.0, 0.9 * 0.5 + 0.1, 0.9 * -0.25 + 0.1, 0.9 * 0.5 + 0.1])


def test_stage_masks() -> None:
    from reasonloop.trainers.octopus import stage_masks

    span = [{"start": 0, "end": 5}]
    assert stage_masks(1, "cc", 3, 5) == (span, [{"start": 0, "end": 3}]), "stage I: every row, KL on o1"
    assert stage_masks(2, "wc", 3, 5) == (span, None) and stage_masks(2, "cw", 3, 5) == (span, None)
    assert stage_masks(2, "cc", 3, 5) == (None, None) and stage_masks(2, "ww", 3, 5) == (None, None)
    assert stage_masks(1, "wc", 3, 5, masks=False) == (None, None), "the reward-hacking control"


def test_code_rule_with_one_correct_original() -> None:
    o1 = [False, False, False, True]
    o2 = [True, False, False, False]
    pools, originals = group(o1, o2)
    chosen, padding = select_pairs(pools, originals, 4, "code", random.Random(0))
    labels = [pair_label(o1[i], o2[j]) for i, j in chosen]
    # k = 1: quota (4 - 1) // 2 = 1 w→c, one c→c (only (3, 0)), one c→w, then w→w
    assert labels == ["wc", "cc", "cw", "ww"] and padding == 0
