"""A character-level tokenizer built with the `tokenizers` library, saved in Hugging Face format.

One token per character (printable ASCII, space, newline, tab), so decode(encode(text)) == text
exactly, spaces and newlines included; special tokens for padding, sequence ends and chat roles.
Left padding, so batched generation continues right after each prompt.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CHARACTERS = "\n\t" + "".join(chr(c) for c in range(32, 127))

# Roles are single tokens; a turn ends with <|end|>; generation starts after <|assistant|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    specials = [PAD, BOS, EOS, UNK, *ROLE_TOKENS]
    vocab = {token: i for i, token in enumerate(specials)}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    # BPE without merges splits any text into its characters; no pre-tokenizer or normalizer
    # touches whitespace, and the Fuse decoder joins tokens back without separators.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    core.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
