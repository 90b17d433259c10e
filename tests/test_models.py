"""The tiny local model: loads offline with Auto* classes, exact character tokenizer, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasonloop.tasks.models.tiny import init_tiny_model


def test_loads_with_auto_classes(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    params = sum(p.numel() for p in model.parameters())
    assert 300_000 < params < 700_000, params
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.padding_side == "left"
    generation = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert generation["top_k"] == 0 and generation["top_p"] == 1.0 and generation["temperature"] == 1.0


@pytest.mark.parametrize("text", ["12+34=", "  two  spaces\nnew line\ttab ", "~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./", ""])
def test_tokenizer_round_trip_is_exact(tiny_model_dir: Path, text: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) == len(text) + 1, "one token per character, after <bos>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_left_padding_and_chat_template(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = tokenizer(["1+1=", "123+456="], padding=True)
    assert batch["input_ids"][0][:4] == [tokenizer.pad_token_id] * 4
    assert batch["attention_mask"][0] == [0] * 4 + [1] * 5
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+2="}], add_generation_prompt=True, tokenize=False
    )
    assert chat == "<|user|>2+2=<|end|><|assistant|>"
    ids = tokenizer(chat, add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 + 4, "role markers are single tokens"


def test_same_seed_same_weights(tmp_path: Path) -> None:
    a = init_tiny_model(tmp_path / "a", seed=3)
    b = init_tiny_model(tmp_path / "b", seed=3)
    c = init_tiny_model(tmp_path / "c", seed=4)
    weights = [(p / "model.safetensors").read_bytes() for p in (a, b, c)]
    assert weights[0] == weights[1] != weights[2]
    with pytest.raises(ValueError, match="tiny, small"):
        init_tiny_model(tmp_path / "d", size="huge")
