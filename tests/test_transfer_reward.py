"""RLTR's transfer reward: prefixes cut at ⌊τ·|y|⌋ content tokens, one batched receiver call, the
answer judged on prefix ⊕ continuation, details stored per rollout; and in an RL step on both model
kinds with the frozen starting policy as the receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from reasonloop.tasks.engines.base import Completion, SamplingParams
from reasonloop.tasks.rewards import CompositeReward
from reasonloop.tasks.rewards import transfer as transfer_module
from reasonloop.tasks.rewards.transfer import TransferReward, prefix_length, transfer_tau
from tests.trainer_helpers import arith_store, make_trainer

EOS = 0


class Chars:
    """A tokenizer whose ids are character codes (EOS = 0)."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if i != EOS)


class Receiver:
    """Answers '#85' when the prefix it continues has reached the tens step ('4+3+1=8'), else '#99'."""

    accepts_token_ids = True

    def __init__(self) -> None:
        self.calls: list[list[list[int]]] = []

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingParams) -> list[Completion]:
        self.calls.append([list(p) for p in prompts])
        out = []
        for i, ids in enumerate(prompts):
            text = "#85" if "4+3+1=8" in Chars().decode(ids) else "#99"
            out.append(Completion(text, Chars().encode(text), [], None, "stop", list(ids), i))
        return out


def test_taus_are_deterministic_and_in_range() -> None:
    taus = [transfer_tau(3, [1, 2], [k, k + 1]) for k in range(2000)]
    assert all(0 < t <= 1 for t in taus) and 0.45 < sum(taus) / len(taus) < 0.55
    assert transfer_tau(3, [1, 2], [5, 6]) == transfer_tau(3, [1, 2], [5, 6]) != transfer_tau(4, [1, 2], [5, 6])
    assert prefix_length(1.0, 7) == 7 and prefix_length(0.5, 7) == 3 and prefix_length(1e-9, 7) == 0


def test_prefixes_receiver_inputs_and_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    chars, receiver = Chars(), Receiver()
    prompt = chars.encode("47+38=")
    right = [*chars.encode("7+8=15;4+3+1=8;#85"), EOS]  # 18 content tokens, then EOS
    wrong = [*chars.encode("7+8=15;4+3=7;#75"), EOS]
    scripted = iter([1.0, 0.9, 0.3, 1.0])  # τ per rollout, in call order
    monkeypatch.setattr(transfer_module, "transfer_tau", lambda seed, p, c: next(scripted))
    reward = TransferReward(receiver, chars, eos_ids=[EOS], max_new_tokens=5)
    composite = CompositeReward({"exact": 1.0, "transfer": 0.5}, functions={"transfer": reward})
    texts = ["7+8=15;4+3+1=8;#85", "7+8=15;4+3+1=8;#85", "7+8=15;4+3+1=8;#85", "7+8=15;4+3=7;#75"]
    result = composite(["47+38="] * 4, texts, completion_ids=[right, right, right, wrong],
                       prompt_ids=[prompt] * 4, answer=["85"] * 4, answer_type=["exact"] * 4)  # fmt: skip
    # τ=1: the rollout itself (no call); τ=0.9: ⌊16.2⌋ = 16 tokens, past the tens step -> right;
    # τ=0.3: 5 tokens ("7+8=1"), the receiver guesses wrong; the wrong rollout at τ=1 stays wrong.
    assert result.components["transfer"] == [1.0, 1.0, 0.0, 0.0]
    assert result.components["transfer/prefix_len"] == [18.0, 16.0, 5.0, 16.0]
    assert result.components["transfer/called"] == [0.0, 1.0, 1.0, 0.0]
    assert result.components["transfer/tau"] == [1.0, 0.9, 0.3, 1.0]
    assert result.totals == [1.5, 1.5, 1.0, 0.0]  # R_RLVR + λ·R_tr; details are not summed
    (batch,) = receiver.calls  # one batched call for the whole scoring
    assert batch == [prompt + right[:16], prompt + right[:5]]
    assert reward.drain_metrics() == {"transfer/calls": 2.0, "transfer/receiver_tokens": 6.0}
    assert reward.drain_metrics() == {"transfer/calls": 0.0, "transfer/receiver_tokens": 0.0}
    with pytest.raises(ValueError, match="prompt_ids"):
        reward(["x"], ["y"], completion_ids=[[1]], answer=["1"])


def test_the_receiver_must_take_token_ids() -> None:
    class TextOnly:
        def generate(self, prompts, n, sampling):  # pragma: no cover - refused before any call
            raise AssertionError

    with pytest.raises(ValueError, match="token ids"):
        TransferReward(TextOnly(), Chars())


def test_rltr_step_on_both_model_kinds(tmp_path: Path, sft_model: Path, model_kind: str) -> None:
    """One GRPO step with `exact:1,transfer:1` and the starting policy as receiver: every rollout
    stores τ, its prefix length (≤ its content length) and the transfer score; the total is the sum;
    the step's metrics count the receiver's calls."""
    store = arith_store(tmp_path / "store", chat=model_kind == "bpe")
    trainer = make_trainer(sft_model, store, tmp_path, scripted=False, rewards="exact:1,transfer:1",
                           max_completion_length=16, prompts_per_step=3, group_size=4)  # fmt: skip
    metrics = trainer.train_step()
    rows = store.query(
        "SELECT reward, rewards, len(completion_ids) AS n FROM rollouts WHERE run_id = 't'"
    ).to_pylist()  # fmt: skip
    assert len(rows) == 12
    for row in rows:
        parts = dict(row["rewards"])
        assert 0 < parts["transfer/tau"] <= 1 and 0 <= parts["transfer/prefix_len"] <= row["n"]
        assert parts["transfer"] in (0.0, 1.0) and row["reward"] == pytest.approx(parts["exact"] + parts["transfer"])
        if parts["transfer/called"] == 0:  # τ reached the end: the rollout is judged as is
            assert parts["transfer"] == parts["exact"]
    assert metrics["transfer/calls"] == sum(dict(r["rewards"])["transfer/called"] for r in rows)
