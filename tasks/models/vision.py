"""`reasonloop model init --vision`: a small LLaVA-style vision-language checkpoint, built offline.

The architecture users fine-tune (transformers' `LlavaForConditionalGeneration`): a CLIP vision
tower, a two-layer projector, and the BPE language model of tasks/models/bpe.py (Qwen2, ChatML,
two EOS ids, bf16 on disk) with an `<image>` token added. The folder holds a `LlavaProcessor`
(CLIP image processor + tokenizer + a chat template whose user turns may carry image parts), so

    AutoProcessor.from_pretrained(folder); AutoModelForImageTextToText.from_pretrained(folder)

load it. An image becomes (image_size / patch_size)^2 `<image>` tokens in the prompt (the CLS
feature is dropped: `vision_feature_select_strategy="default"`), replaced by projected patch
features inside the model; text tokens around them are what losses and logprobs cover.
Deterministic for a seed. The image size defaults to CoTZero's 48 px scenes.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from reasonloop.tasks.models.bpe import build_bpe_tokenizer, qwen2_config, save_chat_checkpoint
from reasonloop.tasks.models.tiny import SIZES, seeded

IMAGE_TOKEN = "<image>"
IMAGE_SIZE, PATCH_SIZE = 48, 8
# ChatML as tasks/models/bpe.py's, where a message's content may be a list of parts: an image part
# renders as the image token (the processor expands it to one token per patch), text as its text.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_processor(seed: int = 0, image_size: int = IMAGE_SIZE) -> LlavaProcessor:
    from transformers import CLIPImageProcessorPil  # the PIL backend: no torchvision needed

    tokenizer = build_bpe_tokenizer(seed)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    images = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return LlavaProcessor(
        image_processor=images, tokenizer=tokenizer, patch_size=PATCH_SIZE, vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN, num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )  # fmt: skip


def init_vision_model(out: str | Path, *, size: str = "tiny", seed: int = 0, image_size: int = IMAGE_SIZE) -> Path:
    """Write a LLaVA checkpoint (bf16 safetensors, processor, generation config) to `out`."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    spec = SIZES[size]
    processor = build_processor(seed, image_size)
    text = qwen2_config(processor.tokenizer, spec)
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vision = CLIPVisionConfig(
        hidden_size=spec.hidden // 2, intermediate_size=spec.hidden, num_hidden_layers=spec.layers,
        num_attention_heads=max(1, spec.heads // 2), image_size=image_size, patch_size=PATCH_SIZE,
        projection_dim=spec.hidden // 2,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_id, projector_hidden_act="gelu",
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=(image_size // PATCH_SIZE) ** 2, tie_word_embeddings=True,
    )  # fmt: skip
    model = seeded(LlavaForConditionalGeneration, config, seed)
    return save_chat_checkpoint(model, processor, out)
