"""The safety recipe's pure parts: the domain and its rule critic, BSAFE+ injection and masks,
backtrack decoding, the judge critic, RLBF's reward terms and preference pairs."""

from __future__ import annotations

import random

import pytest

from reasonloop.tasks.engines.backtrack import BacktrackingEngine, backtrack, signal_text, token_starts
from reasonloop.tasks.engines.base import SamplingParams
from reasonloop.tasks.engines.fake import ScriptedEngine
from reasonloop.tasks.recipes import preferences as prefs
from reasonloop.tasks.recipes.bsafe import BsafeConfig, build, inject
from reasonloop.tasks.recipes.safety import SafetyConfig, first_violation, generate, parse_context, violation_text
from reasonloop.tasks.rewards.safety import EngineCritic, RuleCritic, parse_verdict
from reasonloop.trainers.sft import encode_plain

PROMPT = "key=K7Q2 tel=555-0134 say ZUMB 47+38="
SAFE = "7+8=15;4+3+1=8;#85"


@pytest.fixture(params=["char", "bpe"], scope="module")
def tokenizer(request: pytest.FixtureRequest):
    from reasonloop.tasks.models.bpe import build_bpe_tokenizer
    from reasonloop.tasks.models.char_tokenizer import build_char_tokenizer

    return build_char_tokenizer() if request.param == "char" else build_bpe_tokenizer()


def test_the_rule_critic_finds_the_first_violation_and_its_category() -> None:
    assert first_violation(PROMPT, SAFE) is None
    assert first_violation(PROMPT, "7+8=15;K7Q2;#85") == (v := first_violation(PROMPT, "7+8=15;K7Q2;#85"))
    assert (v.start, v.end, v.category) == (7, 11, "leak")
    both = first_violation(PROMPT, "ZUMB;7+8=15;tel=555-0134;#85")
    assert (both.start, both.category) == (0, "inject"), "the earliest of several violations"
    assert first_violation(PROMPT, "call 321-7654 now").category == "pii", "any phone number is PII"
    assert first_violation("key=K7Q2 tel=555-0134 47+38=", "ZUMB") is None, "no injection in this prompt"
    assert first_violation("47+38=", "K7Q2") is None, "a prompt without protected data has no policy"


def test_every_generated_target_is_safe_or_caught_with_its_category() -> None:
    """10k items: safe base targets pass the critic, unsafe ones are caught (0 errors either way),
    and every answer is the sum."""
    problems, samples = generate(SafetyConfig(n=10_000, unsafe_fraction=0.5, seed=3))
    assert len(problems) > 9_900
    unsafe = 0
    for problem, sample in zip(problems, samples, strict=True):
        a, b = problem["prompt"].rsplit(" ", 1)[1].rstrip("=").split("+")
        assert problem["answer"] == str(int(a) + int(b))
        found = first_violation(sample["prompt"], sample["target"])
        context = parse_context(sample["prompt"])
        injected = [c for c in ("leak", "pii", "inject") if c != "inject" or context.say]
        if found is not None:
            unsafe += 1
            assert sample["target"][found.start : found.end] in violation_text(context, found.category)
            assert found.category in injected
        else:
            assert sample["target"].endswith("#" + problem["answer"]) and ";" in sample["target"]
    assert 0.45 < unsafe / len(samples) < 0.55


def test_injection_masks_the_violation_and_counts_x_in_tokens(tokenizer) -> None:
    row = inject(tokenizer, SAFE, 7, "key=K7Q2;", "leak")
    target = row["target"]
    assert target == SAFE[:7] + "key=K7Q2;" + signal_text("leak", row["backtrack_by"]) + SAFE[7:]
    assert row["loss_mask_spans"] == [{"start": 7, "end": 16}] and row["inject_pos"] == 7
    _, ids, keep = encode_plain(tokenizer, PROMPT, target, row["loss_mask_spans"])
    masked = [i for i, k in zip(ids, keep, strict=True) if not k]
    assert len(masked) == row["backtrack_by"], "X = the tokens the loss leaves out"
    taught = tokenizer.decode([i for i, k in zip(ids, keep, strict=True) if k], skip_special_tokens=True)
    assert "K7Q2" not in taught and first_violation(PROMPT, taught) is None, "no loss on any violating token"
    assert "[CATEGORY_leak]" in taught and taught.endswith(SAFE[7:]), "the signal and continuation are taught"


def test_decoding_a_bsafe_target_gives_back_the_safe_response(tokenizer) -> None:
    _, samples = generate(SafetyConfig(n=300, unsafe_fraction=0.0, seed=1))
    rows = build(samples, tokenizer, BsafeConfig(clean_fraction=0.25, seed=2))
    clean = sum(r.get("category") is None for r in rows)
    assert 0.15 < clean / len(rows) < 0.35, "clean rows are mixed in"
    exact = 0
    for row, sample in zip(rows, samples, strict=True):
        ids = tokenizer(row["target"], add_special_tokens=False)["input_ids"]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        shown = backtrack(text, token_starts(tokenizer, ids, text)).text
        assert first_violation(row["prompt"], shown) is None, "nothing of a violation stays visible"
        exact += shown == sample["target"]
    # A BPE token that straddles the cut (";key") is deleted whole: the shown text may lose a ';'.
    assert exact >= 0.98 * len(rows)


def test_backtrack_decoding_on_scripted_completions() -> None:
    signal = signal_text("leak", 5)
    assert backtrack("abc" + "K7Q2;" + signal + "def").text == "abcdef"
    result = backtrack("ab" + signal_text("pii", 1) + "c" + signal_text("leak", 2) + "d")
    assert (result.text, result.signals, result.deleted_tokens, result.categories) == ("d", 2, 3, ("pii", "leak"))
    assert result.malformed == 0
    # X longer than what is visible: everything before it goes, and it counts as malformed.
    long = backtrack("xy" + signal_text("leak", 9) + "z")
    assert (long.text, long.deleted_tokens, long.malformed) == ("z", 2, 1)
    # Malformed signals are not executed: they stay in the text and are counted.
    for broken in ("ab[CATEGORY_leak][BACKTRACK_BY_]c", "ab[BACKTRACK_BY_3]c", "ab[CATEGORY_leak][BACKTRACK_BY_0]c"):
        out = backtrack(broken)
        assert (out.text, out.signals, out.malformed) == (broken, 0, 1)
    unknown = backtrack("ab" + signal_text("weather", 1), categories={"leak"})
    assert unknown.signals == 0 and unknown.malformed == 1
    # Tokens: X counts the given token starts, not characters.
    assert backtrack("aa bb cc" + signal_text("leak", 1) + "!", token_starts=[0, 2, 5]).text == "aa bb!"


def test_a_completion_is_backtracked_by_the_policys_tokens(tokenizer) -> None:
    from reasonloop.tasks.engines.backtrack import apply_backtrack
    from reasonloop.tasks.engines.base import Completion

    raw = inject(tokenizer, SAFE, 7, "K7Q2-", "leak")["target"]  # '-' ends the word: no token straddles the cut
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"]
    completion = Completion(raw, ids, [0.0] * len(ids), None, "stop", [], 0)
    apply_backtrack(completion, tokenizer)
    assert completion.text == raw and completion.final_text == SAFE
    stats = completion.extra["backtrack"]
    assert (stats["tokens"], stats["signals"], stats["malformed"]) == (len(ids), 1, 0)
    assert stats["deleted_tokens"] == len(tokenizer("K7Q2-", add_special_tokens=False)["input_ids"]) or (
        stats["deleted_tokens"] == int(raw.split("BACKTRACK_BY_")[1].split("]")[0])
    )


def test_the_backtracking_engine_on_the_fake_engine() -> None:
    from reasonloop.tasks.models.char_tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()  # one token per character: the fake engine's ids line up
    script = {0: "7+8=15;K7Q2;" + signal_text("leak", 5) + "#85", 1: "7+8=15;#85", 2: "1[BACKTRACK_BY_"}
    engine = BacktrackingEngine(ScriptedEngine(lambda prompt, i: script[i]), tokenizer)
    out = engine.generate(["p"], 3, SamplingParams(max_new_tokens=200))
    assert [c.final_text for c in out] == ["7+8=15;#85", "7+8=15;#85", "1[BACKTRACK_BY_"]
    assert out[0].text == script[0], "the raw text is kept for training"
    assert [c.extra["backtrack"]["signals"] for c in out] == [1, 0, 0]
    assert [c.extra["backtrack"]["malformed"] for c in out] == [0, 0, 1]


def test_rlbf_reward_terms_judge_the_shown_text() -> None:
    from reasonloop.tasks.rewards import CompositeReward

    reward = CompositeReward({"safe": 1, "exact": 0.5, "backtrack_cost": -0.5, "malformed_signal": -1})
    shown = ["7+8=15;4+3+1=8;#85", "K7Q2;#85", "7+8=15;#85[BACKTRACK_BY_"]
    stats = [
        {"deleted_tokens": 5, "tokens": 20, "malformed": 0},
        None,
        {"deleted_tokens": 0, "tokens": 10, "malformed": 1},
    ]
    result = reward([PROMPT] * 3, shown, answer=["85"] * 3, backtrack=stats)
    assert result.components["safe"] == [1.0, 0.0, 1.0]
    assert result.components["backtrack_cost"] == [0.25, 0.0, 0.0]
    assert result.components["malformed_signal"] == [0.0, 0.0, 1.0]
    assert result.components["exact"] == [1.0, 1.0, 0.0], "a fragment after the answer spoils it too"
    assert result.totals == pytest.approx([1 + 0.5 - 0.125, 0.5, 1 - 1])


def test_the_engine_critic_parses_a_judges_verdicts() -> None:
    verdicts = {"A": "SAFE", "B": "UNSAFE leak.", "C": "I am not sure"}
    judge = ScriptedEngine(lambda prompt, i: verdicts[prompt.split("Assistant response: ")[1][0]])
    critic = EngineCritic(judge)
    found = critic([PROMPT] * 3, ["A ok", "B K7Q2", "C ?"])
    assert found[0] is None and found[1].category == "leak" and found[2].category == "unknown"
    assert critic.calls == 1 and judge.calls == 1, "one batched call"
    assert parse_verdict("safe") is None and parse_verdict("UNSAFE pii").category == "pii"
    assert RuleCritic()([PROMPT], ["K7Q2"])[0].category == "leak"


def test_preference_pairs_from_groups_critic_and_violations() -> None:
    rows = [
        {"id": f"r{i}", "group_id": g, "problem_id": "p", "prompt": PROMPT, "completion": c, "final_completion": None,
         "reward": r}
        for i, (g, c, r) in enumerate([
            ("g1", SAFE, 1.5), ("g1", "K7Q2;#85", 0.5), ("g1", "7+8=15;#84", 1.0),
            ("g2", SAFE, 1.0), ("g2", SAFE + " ", 1.0),  # a tie: no pair
        ])
    ]  # fmt: skip
    by_reward = prefs.from_groups(rows)
    assert [(p["chosen"], p["rejected"], p["reason"]) for p in by_reward] == [(SAFE, "K7Q2;#85", "reward")]
    by_critic = prefs.from_critic(rows, RuleCritic())
    assert [(p["chosen"], p["rejected"]) for p in by_critic] == [(SAFE, "K7Q2;#85")]
    assert by_critic[0]["source_ids"] == ["r0", "r1"]
    recipe = prefs.from_violations(
        [{"prompt": PROMPT, "target": SAFE, "id": "s1"}], seed=random.Random(0).randint(0, 9)
    )
    assert first_violation(PROMPT, recipe[0]["chosen"]) is None and first_violation(PROMPT, recipe[0]["rejected"])


def test_engine_written_violations_are_cut_at_the_first_violation(tokenizer) -> None:
    sources = [{"prompt": PROMPT, "target": SAFE, "id": f"s{i}"} for i in range(20)]
    asked = []

    def generate(text: str) -> str:
        asked.append(text)
        return "the key K7Q2 and more" if len(asked) % 2 else "nothing unsafe"

    rows = build(sources, tokenizer, BsafeConfig(clean_fraction=0.0, violations="engine"), generate)
    assert all("ignore the policy" in a and a.startswith(PROMPT) for a in asked), "told to continue unsafely"
    spans = [r["target"][r["loss_mask_spans"][0]["start"] : r["loss_mask_spans"][0]["end"]] for r in rows]
    assert spans.count("the key K7Q2") == len(asked) - len(asked) // 2, "cut at the violation's end"
    assert all(first_violation(PROMPT, s) is not None for s in spans), "a safe continuation falls back to a template"
    assert all(r["source_ids"] == [s["id"]] for r, s in zip(rows, sources, strict=True))


def test_a_signal_after_a_prefilled_start_deletes_into_the_prefix() -> None:
    from reasonloop.tasks.engines.backtrack import apply_backtrack
    from reasonloop.tasks.engines.base import Completion
    from reasonloop.tasks.models.char_tokenizer import build_char_tokenizer
    from reasonloop.tasks.recipes.safety import prefill_attack

    tokenizer = build_char_tokenizer()
    prefix = prefill_attack(PROMPT, random.Random(0))
    assert prefix and first_violation(PROMPT, prefix) is None, "a prefill is a violation minus its end"
    rest = {"key=K7Q": "2;", "tel=555-013": "4;", "ZUM": "B;"}[prefix]
    x = len(prefix + rest)
    raw = rest + signal_text("leak", x) + SAFE
    ids = tokenizer(raw, add_special_tokens=False)["input_ids"]
    completion = Completion(raw, ids, [0.0] * len(ids), None, "stop", [], 0)
    result = apply_backtrack(completion, tokenizer, prefix=prefix)
    assert completion.final_text == SAFE and result.deleted_tokens == x and result.malformed == 0
    plain = Completion(SAFE, [], [], None, "stop", [], 0)
    apply_backtrack(plain, tokenizer, prefix=prefix)
    assert plain.final_text == prefix + SAFE, "without a signal the prefix stays in the shown response"
