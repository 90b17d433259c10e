"""The path a Qwen/Llama instruct checkpoint takes: chat templates, every EOS id, no pad token, bf16
compute over fp32 masters, exact gradient accumulation, LoRA — on the BPE Qwen2 built offline and,
where it applies, on the char Llama too."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from reasonloop.tasks.engines import SamplingParams
from reasonloop.tasks.engines.transformers_engine import TransformersEngine
from reasonloop.tasks.models.bpe import IM_END, IM_START, build_bpe_tokenizer, init_bpe_model
from reasonloop.tasks.models.loading import load_tokenizer
from reasonloop.tasks.models.precision import eos_token_ids, pad_token_id
from reasonloop.tasks.rewards import CompositeReward
from reasonloop.trainers.algos import CLIP_DEFAULTS, POLICY_LOSSES, ClipRange
from reasonloop.trainers.config import TrainConfig
from reasonloop.trainers.policy import load_policy
from reasonloop.trainers.update import PolicyUpdate
from tests.trainer_helpers import arith_store, digit_share, make_trainer


def test_bpe_model_is_shaped_like_a_real_checkpoint(bpe_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    config = json.loads((bpe_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["dtype"] == "bfloat16"
    assert config["num_key_value_heads"] < config["num_attention_heads"], "grouped-query attention"
    tokenizer = load_tokenizer(bpe_model_dir)
    assert type(tokenizer).__name__ == "Qwen2Tokenizer" and tokenizer.pad_token_id is None
    assert config["vocab_size"] > len(tokenizer) and config["vocab_size"] % 64 == 0, "padded embedding"
    generation = json.loads((bpe_model_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.convert_tokens_to_ids(["<|endoftext|>", IM_END])
    trained = build_bpe_tokenizer(0)
    for text in ["12+34=", "  spaces\nand\ttabs ", "I:trend;P:up;S:3..7;A:up;#up", "café ü"]:
        ids = tokenizer(text)["input_ids"]
        assert ids == trained(text)["input_ids"] and tokenizer.decode(ids) == text
    merged = tokenizer(" the answer is trend and seasonal")["input_ids"]
    assert max(len(tokenizer.decode([i])) for i in merged) > 2, "merges, not one token per character"
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+2="}], add_generation_prompt=True, tokenize=False
    )
    assert chat == f"{IM_START}user\n2+2={IM_END}\n{IM_START}assistant\n"
    assert AutoModelForCausalLM.from_pretrained(bpe_model_dir).dtype == torch.bfloat16
    again = init_bpe_model(tmp_path / "again", seed=0)
    assert (again / "model.safetensors").read_bytes() == (bpe_model_dir / "model.safetensors").read_bytes()


def test_every_eos_id_and_the_pad_fallback(base_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    model, tokenizer = AutoModelForCausalLM.from_pretrained(base_model), load_tokenizer(base_model)
    ids = eos_token_ids(model, tokenizer)
    assert len(ids) == 2 and tokenizer.eos_token_id in ids, "the end of a chat turn stops generation too"
    assert pad_token_id(tokenizer, model) == (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )


def test_a_chat_model_stops_on_its_second_eos_id(bpe_sft_model_dir: Path) -> None:
    policy = load_policy(bpe_sft_model_dir, TrainConfig())
    engine = TransformersEngine(policy.model, policy.tokenizer, dtype=policy.compute_dtype)
    im_end = policy.tokenizer.convert_tokens_to_ids(IM_END)
    assert policy.tokenizer.eos_token_id != im_end
    prompts = [[{"role": "user", "content": f"{a}+{b}="}] for a, b in ((3, 4), (12, 30), (7, 55))]
    out = engine.generate(prompts, 2, SamplingParams(temperature=0, max_new_tokens=48))
    for c in out:
        assert c.finish_reason == "stop" and c.token_ids[-1] == im_end and len(c.token_ids) < 48, c
        assert IM_END not in c.text and "#" in c.text


def test_stop_strings_end_a_completion(sft_model: Path, model_kind: str) -> None:
    policy = load_policy(sft_model, TrainConfig())
    engine = TransformersEngine(policy.model, policy.tokenizer, dtype=policy.compute_dtype)
    prompt = "12+34=" if model_kind == "char" else [{"role": "user", "content": "12+34="}]
    plain = engine.generate([prompt], 1, SamplingParams(temperature=0, max_new_tokens=32))[0]
    stopped = engine.generate([prompt], 1, SamplingParams(temperature=0, max_new_tokens=32, stop=(";",)))[0]
    assert ";" in plain.text and stopped.finish_reason == "stop"
    assert stopped.text == plain.text.split(";")[0], "the text ends before the stop string"
    assert stopped.token_ids == plain.token_ids[: len(stopped.token_ids)] and len(stopped.token_ids) < len(
        plain.token_ids
    )


def test_chat_prompts_are_templated_in_the_stored_rollouts(bpe_model_dir: Path, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "s", chat=True)
    trainer = make_trainer(bpe_model_dir, store, tmp_path)
    trainer.train_step()
    tokenizer = trainer.tokenizer
    head = tokenizer(f"{IM_START}user\n", add_special_tokens=False)["input_ids"]
    tail = tokenizer(f"{IM_END}\n{IM_START}assistant\n", add_special_tokens=False)["input_ids"]
    rows = store.query("SELECT prompt, prompt_ids FROM rollouts").to_pylist()
    for r in rows:
        assert r["prompt_ids"][: len(head)] == head and r["prompt_ids"][-len(tail) :] == tail
        assert r["prompt"].startswith(f"{IM_START}user\n") and tokenizer.decode(r["prompt_ids"]) == r["prompt"]
    trainer.config = TrainConfig(**{**trainer.config.__dict__, "chat_template": "none"})
    plain = trainer.encode([trainer.render(trainer.problems[0])])[0][0]
    assert plain == tokenizer(trainer.problems[0]["prompt"])["input_ids"], "--chat-template none: the plain text"


def test_bf16_clip_fraction_is_exactly_zero_before_any_update(bpe_model_dir: Path, tmp_path: Path) -> None:
    """At μ = 1 the ratio is against the trainer's own forward: numerics cannot clip, even with
    GSPO's 3e-4 range, though bf16 sampling and training logprobs differ (the mismatch metric)."""
    store = arith_store(tmp_path / "s", chat=True)
    trainer = make_trainer(bpe_model_dir, store, tmp_path, algo="gspo", lr=0.0, prompts_per_step=8, dtype="bfloat16")
    assert trainer.compute_dtype == torch.bfloat16 and next(trainer.model.parameters()).dtype == torch.float32
    metrics = trainer.train_step()
    assert metrics["clip_ratio_low"] == 0.0 and metrics["clip_ratio_high"] == 0.0
    assert metrics["mismatch/logprob_abs_diff_max"] > 1e-4, "bf16 engine and trainer do differ"
    assert 0.9 < metrics["is_ratio_mean"] < 1.1


def _batch(lengths: list[int], vocab: int, seed: int = 0) -> pa.Table:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i, n in enumerate(lengths):
        rows.append({
            "prompt_ids": torch.randint(8, vocab, (3 + i,), generator=g).tolist(),
            "completion_ids": torch.randint(8, vocab, (n,), generator=g).tolist(),
            "logprobs": (-torch.rand(n, generator=g) * 3).tolist(),
            "advantage": float(torch.randn(1, generator=g)),
        })  # fmt: skip
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize("beta", [0.0, 0.1])
@pytest.mark.parametrize("loss", list(POLICY_LOSSES))
def test_gradient_accumulation_is_exact_for_every_loss(loss: str, beta: float, tiny_model_dir: Path) -> None:
    """Gradients with grad_accum 1, 2 and 4 agree to 1e-6 (float64) on a batch whose completion
    lengths differ 10x: token-mean losses and the KL term use the mini-batch's token count."""
    batch = _batch([20, 2, 2, 2], vocab=90)
    grads = []
    for accum in (1, 2, 4):
        config = TrainConfig(loss=loss, algo="grpo", grad_accum=accum, lr=0.0, max_grad_norm=0.0, num_iterations=2,
                             beta=beta, max_completion_length=20)  # fmt: skip
        policy = load_policy(tiny_model_dir, config)
        model = policy.model.double()
        reference = None
        if beta:
            import contextlib
            import copy

            frozen = copy.deepcopy(model).requires_grad_(False)
            noise = torch.Generator().manual_seed(1)
            with torch.no_grad():
                for p in frozen.parameters():  # a reference that differs: the KL has a gradient
                    p.add_(0.01 * torch.randn(p.shape, generator=noise, dtype=p.dtype))
            reference = lambda frozen=frozen: contextlib.nullcontext(frozen)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
        update = PolicyUpdate(config, model=model, optimizer=optimizer, scheduler=scheduler, loss_fn=POLICY_LOSSES.get(loss),
                              clip=CLIP_DEFAULTS[loss], pad_id=0, compute_dtype=None, reference=reference)  # fmt: skip
        update(batch, 0, {})
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].abs().max() > 0
    for other in grads[1:]:
        assert torch.allclose(grads[0], other, atol=1e-6, rtol=0), (grads[0] - other).abs().max()


def test_the_old_objective_was_not_accumulation_invariant() -> None:
    """The review's case (lengths [10, 1, 1, 1]): a token-mean loss weighted per micro-batch by
    row count changes value with accumulation; normalized by the mini-batch's tokens it does not."""
    loss_fn, clip = POLICY_LOSSES.get("dapo"), ClipRange(0.2, 0.28)
    lengths, adv = [10, 1, 1, 1], torch.tensor([-1.0, 1.0, 1.0, 1.0])
    mask = torch.zeros(4, 10, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, :n] = True
    logp = torch.full((4, 10), -1.0)
    whole = loss_fn(logp, logp, adv, mask, clip=clip).loss.item()
    halves = [slice(0, 2), slice(2, 4)]
    old_way = sum(loss_fn(logp[h], logp[h], adv[h], mask[h], clip=clip).loss.item() * 2 / 4 for h in halves)
    new_way = sum(loss_fn(logp[h], logp[h], adv[h], mask[h], clip=clip, batch_tokens=13.0).loss.item() for h in halves)
    assert whole == pytest.approx(new_way, abs=1e-7)
    assert (whole > 0) != (old_way > 0), "the old weighting even changed the sign"


def test_unscored_rewards_are_left_out_and_counted(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A reward of None takes no part in its group's mean and std, gets no advantage, is counted,
    and is recorded in the lineage as unscored; never a silent 0."""
    store = arith_store(tmp_path / "s")
    calls = {"n": 0}

    def every_third_unscored(completions, **kwargs):
        calls["n"] += 1
        return [None if i % 3 == 0 else s for i, s in enumerate(digit_share(completions))]

    trainer = make_trainer(tiny_model_dir, store, tmp_path, scripted=False)
    trainer.reward = CompositeReward({"d": 1.0}, functions={"d": every_third_unscored})
    metrics = trainer.train_step()
    rows = store.query("SELECT group_id, reward, advantage FROM rollouts").to_pylist()
    unscored = [r for r in rows if r["reward"] is None]
    assert len(unscored) == metrics["rewards_none"] == 8 and all(r["advantage"] is None for r in unscored)
    for group in {r["group_id"] for r in rows}:
        scored = [r for r in rows if r["group_id"] == group and r["reward"] is not None]
        rewards = torch.tensor([r["reward"] for r in scored], dtype=torch.float64)
        expected = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
        assert [r["advantage"] for r in scored] == pytest.approx(expected.tolist(), abs=1e-9)
    assert metrics["batch_rows"] == 24 - 8
    statuses = store.query("SELECT status, count(*) AS n FROM consumed GROUP BY 1 ORDER BY 1").to_pylist()
    assert statuses == [{"status": "trained", "n": 16}, {"status": "unscored", "n": 8}]


def test_a_problem_drawn_twice_in_a_step_is_two_groups(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "s", n=3)  # fewer problems than prompts per step: draws repeat
    trainer = make_trainer(tiny_model_dir, store, tmp_path, prompts_per_step=6, group_size=4)
    trainer.train_step()
    groups = store.query("SELECT problem_id, group_id, count(*) AS n FROM rollouts GROUP BY 1, 2").to_pylist()
    assert len(groups) == 6 and all(g["n"] == 4 for g in groups), "one group of G per draw"
    assert len({g["problem_id"] for g in groups}) < 6


def test_the_curriculum_starts_at_its_first_problems(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "s")
    ids = store.query("SELECT id FROM problems WHERE split = 'train' ORDER BY prompt").column("id").to_pylist()
    path = tmp_path / "curriculum.json"
    path.write_text(json.dumps({"problem_ids": ids}))
    trainer = make_trainer(tiny_model_dir, store, tmp_path, curriculum=str(path))
    assert [p["id"] for p in trainer.pick_problems(0, "pick/0", 4)] == ids[:4], "step 0 takes the first ones"
    assert [p["id"] for p in trainer.pick_problems(1, "pick/0", 4)] == ids[4:8]


@pytest.mark.parametrize("mode", ["left", "skip"])
def test_max_prompt_length_is_enforced_and_counted(
    base_model: Path, model_kind: str, mode: str, tmp_path: Path
) -> None:
    store = arith_store(tmp_path / "s", chat=model_kind == "bpe")
    limit = 3  # shorter than every prompt
    trainer = make_trainer(base_model, store, tmp_path, max_prompt_length=limit, prompt_truncation=mode)
    metrics = trainer.train_step()
    rows = store.query("SELECT prompt_ids FROM rollouts").to_pylist()
    if mode == "left":
        assert metrics["prompts_truncated"] == 4 and all(len(r["prompt_ids"]) == limit for r in rows)
    else:
        assert metrics["prompts_skipped"] == 4 and rows == [] and metrics["batch_rows"] == 0


def test_lora_trains_the_adapter_and_engines_get_merged_weights(
    base_model: Path, model_kind: str, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from reasonloop.tasks.models.loading import is_adapter, load_causal_lm
    from reasonloop.trainers.policy import save_weights

    store = arith_store(tmp_path / "s", chat=model_kind == "bpe")
    trainer = make_trainer(base_model, store, tmp_path, lora_r=4, lr=1e-2, beta=0.1)
    base_before = {k: v.clone() for k, v in trainer.model.state_dict().items() if "lora_" not in k}
    path, metrics = trainer.train(2)
    assert metrics["kl"] > 0, "the reference is the base with the adapter disabled"
    after = trainer.model.state_dict()
    assert all(torch.equal(base_before[k], after[k]) for k in base_before), "only the adapter trains"
    assert is_adapter(path), "a LoRA checkpoint stores the adapter"
    merged = tmp_path / "merged"
    untouched = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    save_weights(trainer.model, merged, merged=True)
    assert all(torch.equal(untouched[k], v) for k, v in trainer.model.state_dict().items()), (
        "publishing changes nothing"
    )
    plain = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    ids = torch.tensor([trainer.encode([trainer.render(trainer.problems[0])])[0][0]])
    with torch.no_grad():
        expected = trainer.model(input_ids=ids).logits
        assert torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-4)
        reloaded = load_causal_lm(path, dtype=torch.float32)  # adapter folder -> merged for inference
        assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_update(tiny_model_dir: Path, tmp_path: Path) -> None:
    losses, grads = [], []
    for checkpointing in (False, True):
        store = arith_store(tmp_path / f"s{checkpointing}")
        trainer = make_trainer(tiny_model_dir, store, tmp_path / str(checkpointing), gradient_checkpointing=checkpointing,
                               lr=0.0, max_grad_norm=0.0)  # fmt: skip
        metrics = trainer.train_step()
        losses.append(metrics["loss"])
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_igrpo_puts_the_draft_in_as_an_assistant_turn(bpe_model_dir: Path, tmp_path: Path) -> None:
    store = arith_store(tmp_path / "s", chat=True)
    trainer = make_trainer(bpe_model_dir, store, tmp_path, algo="igrpo", group_size=4, igrpo_drafts=2)
    trainer.train_step()
    drafts = {r["id"]: r for r in store.query("SELECT id, completion FROM rollouts WHERE stage = 'draft'").to_pylist()}
    refines = store.query("SELECT prompt, parent_rollout_id FROM rollouts WHERE stage = 'refine'").to_pylist()
    assert refines
    for r in refines:
        draft = drafts[r["parent_rollout_id"]]["completion"]
        turn = f"{IM_START}assistant\n{draft}{IM_END}\n{IM_START}user\n{trainer.config.igrpo_refine_request}{IM_END}\n"
        assert r["prompt"].endswith(turn + f"{IM_START}assistant\n")


def test_evaluation_scores_each_problem_by_its_answer_type(sft_model: Path, model_kind: str, tmp_path: Path) -> None:
    from reasonloop.tasks.rewards.by_answer_type import score_by_answer_type
    from reasonloop.trainers.run import evaluate_model

    assert score_by_answer_type(["q"] * 4, ["#7", "the answer is 7.0", "#B", "#x"], ["7", "7", "b", "x"],
                                ["exact", "numeric", "choice", "rubric"]) == [1.0, 1.0, 1.0, None]  # fmt: skip
    store = arith_store(tmp_path / "s", chat=model_kind == "bpe")
    store.write("problems", [{"prompt": "Explain carrying.", "answer": "-", "answer_type": "rubric", "split": "heldout",
                              "source": "arith"}])  # fmt: skip
    result = evaluate_model(store, sft_model, split="heldout", limit=64, max_new_tokens=16, pass_k=2, pass_k_limit=8,
                            device="cpu")  # fmt: skip
    assert result["unscored"] == 1 and result["n"] == len(result["ids"]) >= 1
    assert 0.0 <= result["accuracy"] <= 1.0
