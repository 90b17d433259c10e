"""Images in the loop: the store's media (content-addressed, validated, quarantined, exported), the
offline LLaVA model, engines with images (transformers for real, vLLM and OpenAI against their
fakes), and SFT + GRPO on image questions through the store."""

from __future__ import annotations

import base64
import io
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from reasonloop.schemas.common import row_id
from reasonloop.storage import ReplayStore
from reasonloop.storage.media import MediaError, MediaLimits, MediaStore
from reasonloop.tasks.engines import SamplingParams, make_engine
from reasonloop.tasks.engines.base import ImagePrompt
from reasonloop.tasks.recipes.cotzero import CoTZeroConfig, generate
from reasonloop.tasks.recipes.cotzero_scene import render, sample_scene


def png(seed: int) -> bytes:
    return render(sample_scene(random.Random(seed)))


def pil(seed: int) -> Image.Image:
    return Image.open(io.BytesIO(png(seed))).convert("RGB")


def test_media_store_is_content_addressed_validated_and_checks_what_it_reads(tmp_path: Path) -> None:
    media = MediaStore(tmp_path, limits=MediaLimits(max_bytes=4000))
    ref = media.put(png(0))
    assert media.put(png(0)) == ref and len(list(media.refs())) == 1, "the same bytes are one file"
    assert media.get(ref) == png(0) and media.open_image(ref).size == (48, 48)
    assert not any(p.name.startswith(".tmp-") for p in media.dir.rglob("*")), "no temp file left"
    with pytest.raises(MediaError, match="does not decode"):
        media.put(png(1)[:200])  # truncated
    with pytest.raises(MediaError, match="does not decode"):
        media.put(b"not an image at all")
    with pytest.raises(MediaError, match="over the 4000-byte limit"):
        media.put(b"\x89PNG" + bytes(5000))
    with pytest.raises(ValueError, match="not a media reference"):
        media.path("media:sha256:../../etc/passwd")
    media.path(ref).write_bytes(png(2))  # damaged on disk
    with pytest.raises(MediaError, match="damaged on disk"):
        media.get(ref)


def test_a_crash_mid_put_leaves_no_image_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reasonloop.storage.media as media_module

    def crash(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(media_module, "publish", crash)
    media = MediaStore(tmp_path)
    with pytest.raises(OSError):
        media.put(png(0))
    assert list(media.refs()) == [] and not media.exists(media_module.media_ref(png(0)))


def test_problem_rows_take_images_and_quarantine_bad_ones_with_their_reason(store: ReplayStore) -> None:
    rows = [
        {"prompt": "Q: Is there a red circle?\n", "answer": "yes", "answer_type": "exact", "image": png(0)},
        {"prompt": "Q: Is there a red circle?\n", "answer": "yes", "answer_type": "exact",
         "image": base64.b64encode(png(1)).decode()},  # the same question about another image
        {"prompt": "Q: broken\n", "answer": "no", "answer_type": "exact", "image": png(2)[:100]},
        {"prompt": "Q: missing\n", "answer": "no", "answer_type": "exact", "media_ref": "media:sha256:" + "0" * 64},
        {"prompt": "Q: a path\n", "answer": "no", "answer_type": "exact", "media_ref": "/etc/passwd"},
        {"prompt": "12+34=", "answer": "46", "answer_type": "exact"},
    ]  # fmt: skip
    result = store.write("problems", rows)
    assert (result.committed, result.rejected) == (3, 3)
    reasons = store.query("SELECT reason, raw FROM rejected ORDER BY reason").to_pylist()
    assert [r["reason"].split(":")[0] for r in reasons] == [
        "image does not decode", "media_ref must be a media", "the store holds no image media"]  # fmt: skip
    kept = json.loads(next(r["raw"] for r in reasons if "decode" in r["reason"]))
    assert base64.b64decode(kept["image"]) == png(2)[:100], "the quarantined row keeps its image"
    stored = store.query("SELECT prompt, media_ref, id FROM problems ORDER BY prompt").to_pylist()
    assert len({r["media_ref"] for r in stored if r["media_ref"]}) == 2
    text = next(r for r in stored if r["prompt"] == "12+34=")
    assert text["id"] == row_id("problems", ("12+34=", "46", "exact", "user")), "rows without images keep their ids"
    again = store.write("problems", rows[:2] + rows[5:])
    assert again.committed == 0 and again.duplicates == 3


def test_arrow_batches_with_unknown_images_are_quarantined_too(store: ReplayStore) -> None:
    import pyarrow as pa

    ref = store.media.put(png(0))
    table = pa.table({"prompt": ["a", "b"], "answer": ["yes", "no"], "answer_type": ["exact", "exact"],
                      "media_ref": [ref, "media:sha256:" + "1" * 64]})  # fmt: skip
    result = store.write("problems", table)
    assert (result.committed, result.rejected) == (1, 1)


def test_export_carries_the_rows_images(store: ReplayStore, tmp_path: Path) -> None:
    data = generate(CoTZeroConfig(scenes=5, mode="image"))
    store.write("problems", data.problem_rows())
    store.write("sft_samples", data.samples)
    store.export("problems", tmp_path / "out")
    copied = MediaStore(tmp_path / "out")
    assert set(copied.refs()) == set(data.images) and all(copied.get(r) == b for r, b in data.images.items())


def test_vision_model_loads_with_the_auto_classes_and_the_cli_builds_it(vlm_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from typer.testing import CliRunner

    from reasonloop.flows.cli import app

    processor = AutoProcessor.from_pretrained(vlm_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(vlm_model_dir)
    assert type(model).__name__ == "LlavaForConditionalGeneration" and model.dtype == torch.bfloat16
    turns = ImagePrompt("Q: hi\n", (pil(0),)).messages()
    text = processor.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    encoded = processor(text=[text], images=[pil(0)], return_tensors="pt")
    image_id = model.config.image_token_id
    assert int((encoded["input_ids"] == image_id).sum()) == (48 // 8) ** 2
    assert model.generation_config.eos_token_id == processor.tokenizer.convert_tokens_to_ids(
        ["<|endoftext|>", "<|im_end|>"]
    )
    result = CliRunner().invoke(app, ["model", "init", "--vision", "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "v" / "processor_config.json").exists()


def forward_logprobs(model, prompt_ids: list[int], pixels: torch.Tensor, completion: list[int]) -> torch.Tensor:
    """The engine's computation spelled out: the prompt with its image, then the completion tokens
    one at a time on the cache (no images), at T = 1."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids]), pixel_values=pixels, cache=cache, use_cache=True).logits
        out, last = [], logits[0, -1]
        for token in completion:
            out.append(last.float().log_softmax(-1)[token])
            last = model(input_ids=torch.tensor([[token]]), cache=cache, use_cache=True).logits[0, -1]
    return torch.stack(out)


def test_transformers_engine_samples_image_prompts_with_exact_logprobs(vlm_model_dir: Path) -> None:
    engine = make_engine("transformers", model=vlm_model_dir, dtype="float32")
    question = "Q: Is there a red circle?\n"
    prompts = [ImagePrompt(question, (pil(0),)), ImagePrompt(question, (pil(1),)), "plain text"]
    out = engine.generate(prompts, 2, SamplingParams(max_new_tokens=6, seed=0))
    assert [c.prompt_index for c in out] == [0, 0, 1, 1, 2, 2]
    assert out[0].prompt_ids == out[2].prompt_ids and len(out[0].prompt_ids) > 36 > len(out[4].prompt_ids)
    for c in out[:4]:
        from reasonloop.tasks.engines.transformers_engine import image_inputs

        ids, pixels = image_inputs(engine.processor, prompts[c.prompt_index])
        ref = forward_logprobs(engine.model, ids, pixels, c.token_ids)
        assert torch.allclose(ref, torch.tensor(c.logprobs), atol=1e-5), "each prompt scored with its own image"
    greedy = engine.generate(prompts[:2], 1, SamplingParams(temperature=0, max_new_tokens=6))
    assert greedy[0].logprobs != greedy[1].logprobs, "two images, two different predictions"


def test_training_logprobs_match_the_engine_on_image_prompts(vlm_model_dir: Path) -> None:
    from reasonloop.trainers.images import ImageInputs
    from reasonloop.trainers.logprobs import batched_logprobs, completion_logprobs

    engine = make_engine("transformers", model=vlm_model_dir, dtype="float32")
    images = ImageInputs(engine.processor, media=None)
    prompts = [images.encode(ImagePrompt("Q: one\n", (pil(i),))) for i in range(3)]
    assert torch.equal(
        prompts[0].pixel_values, engine.processor.image_processor(images=[pil(0)], return_tensors="pt")["pixel_values"]
    )
    image_id = engine.model.config.image_token_id
    completions = [[71, 6, 29], [image_id, 12, 13, 14], [55]]  # a completion may hold the image token as text
    scored = completion_logprobs(engine.model, prompts, completions, pad_id=engine.pad_id)
    for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ref = forward_logprobs(engine.model, list(p), p.pixel_values, c)
        assert torch.allclose(scored.logprobs[b, : len(c)], ref, atol=1e-5)
        assert scored.mask[b].sum() == len(c), "only completion (text) tokens are scored"
    batched = batched_logprobs(engine.model, prompts, completions, pad_id=engine.pad_id, temperature=1.0, micro_batch=2)
    assert torch.allclose(batched.logprobs, scored.logprobs, atol=1e-5)


def test_vllm_engine_sends_images_as_multi_modal_data(fake_vllm, vlm_model_dir: Path) -> None:
    engine = make_engine("vllm", model=str(vlm_model_dir))
    prompts = [ImagePrompt("Q: a\n", (pil(0),)), [5, 6, 7]]
    requests = [engine.request(p) for p in prompts]
    assert requests[0]["multi_modal_data"]["image"] is prompts[0].images[0]
    assert requests[0]["prompt"].count("<image>") == 1 and requests[1] == {"prompt_token_ids": [5, 6, 7]}
    out = engine.generate(prompts, 2, SamplingParams(max_new_tokens=5, seed=0))
    assert len(out) == 4 and out[0].prompt_ids.count(engine.llm._engine.model.config.image_token_id) == 36
    reference = make_engine("transformers", model=vlm_model_dir, dtype="float32")
    ids = reference.encode(prompts[0])
    assert out[0].prompt_ids == ids, "vLLM's processor expands the placeholder as the trainer's does"


def test_openai_engine_sends_images_as_data_uris() -> None:
    from tests.procs.fake_openai import FakeOpenAI

    with FakeOpenAI() as server:
        engine = make_engine("openai", base_url=server.url, model="m", backoff_s=0.01, timeout_s=5.0)
        prompt = ImagePrompt("what?", (pil(0), pil(1)), token_ids=(1, 2, 3))
        out = engine.generate([prompt], 2, SamplingParams(max_new_tokens=8, seed=1))
        (request,) = server.requests
    parts = request["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(parts[1]["image_url"]["url"].split(",")[1]))).size == (48, 48)
    assert out[0].text == "what?+2img->0" and out[0].prompt_ids == [1, 2, 3]


def test_sft_and_grpo_on_image_questions_through_the_store(vlm_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoProcessor

    from reasonloop.storage.samplers import sft_rows
    from reasonloop.trainers.config import SFTConfig, TrainConfig
    from reasonloop.trainers.policy import load_policy
    from reasonloop.trainers.rl import RLTrainer
    from reasonloop.trainers.run import image_inputs_for
    from reasonloop.trainers.sft import run_sft

    store = ReplayStore(tmp_path / "store")
    data = generate(CoTZeroConfig(scenes=12, mode="image", seed=0))
    store.write("problems", data.problem_rows())
    store.write("sft_samples", data.samples)
    config = SFTConfig(steps=8, batch_size=4, lr=3e-3, seed=0)
    policy = load_policy(vlm_model_dir, config)
    history = run_sft(config, model=policy.model, tokenizer=policy.tokenizer, samples=sft_rows(store, "train", "cotzero"),
                      compute_dtype=policy.compute_dtype, images=image_inputs_for(policy, store))  # fmt: skip
    assert history[-1]["loss"] < history[0]["loss"]
    train = TrainConfig(steps=2, prompts_per_step=2, group_size=3, max_completion_length=12, source="cotzero",
                        rewards="ccvr", seed=0, lr=1e-4, dtype="float32")  # fmt: skip
    policy = load_policy(vlm_model_dir, train)
    trainer = RLTrainer(train, model=policy.model, tokenizer=policy.tokenizer, store=store, run_id="vlm",
                        output_dir=tmp_path / "rl", compute_dtype=policy.compute_dtype, processor=policy.processor)  # fmt: skip
    final, _ = trainer.train(2)
    rows = store.query("SELECT prompt_ids FROM rollouts WHERE run_id = 'vlm'").to_pylist()
    image_id = policy.model.config.image_token_id
    assert len(rows) == 12 and all(r["prompt_ids"].count(image_id) == 36 for r in rows)
    gaps = store.query("SELECT metrics['mismatch/logprob_abs_diff_max'] AS m FROM train_metrics WHERE run_id = 'vlm'")
    assert max(gaps.column("m").to_pylist()) < 1e-4, "the update scores what the engine sampled, image included"
    assert type(AutoProcessor.from_pretrained(final)).__name__ == "LlavaProcessor"
    problem = trainer.problems[0]
    trainer.config = replace(train, max_prompt_length=40)  # shorter than the image's 36 tokens + the question
    metrics: dict[str, float] = {}
    _, _, kept = trainer.encode([trainer.render(problem)], metrics)
    assert kept == [False] and metrics == {"prompts_skipped": 1.0}, "an image prompt is skipped, never cut"
    text_policy = load_policy(vlm_model_dir, train)
    with pytest.raises(ValueError, match="takes no images"):  # no processor: a text-only run on image rows
        RLTrainer(train, model=text_policy.model, tokenizer=text_policy.tokenizer, store=store, run_id="x",
                  output_dir=tmp_path / "x").train(1)  # fmt: skip
