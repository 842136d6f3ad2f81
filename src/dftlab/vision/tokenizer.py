"""A character tokenizer with the chat and image tokens of a Qwen2-VL-style model, built locally: the tiny
vision-language model of the embedded visual task needs no download."""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from dftlab.data.tokenizer import GAME_CHARS, SPECIAL, char_backend

IMAGE_TOKEN = "<|image_pad|>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", IMAGE_TOKEN, "<|video_pad|>")
CHARS = GAME_CHARS + "abcdefghijklmnopqrstuvwxyz"  # role names and the rule's words

# Qwen2-VL's template in brief: a user turn's content is a string, or parts (`image` and `text`)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def vision_char_tokenizer(chars: str = CHARS) -> PreTrainedTokenizerFast:
    """One token per character, the special tokens of `dftlab.data.tokenizer`, then the chat and image
    tokens; `<|im_end|>` ends a turn and is EOS."""
    return PreTrainedTokenizerFast(
        tokenizer_object=char_backend(chars, CHAT_TOKENS),
        pad_token=SPECIAL["pad"], bos_token=SPECIAL["bos"], unk_token=SPECIAL["unk"],
        eos_token="<|im_end|>", additional_special_tokens=list(CHAT_TOKENS), chat_template=CHAT_TEMPLATE,
    )
