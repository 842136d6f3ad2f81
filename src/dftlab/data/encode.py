"""Tokenisation with response-only targets whose masks come from lengths, never from token ids.

An example becomes `prompt_ids + response_ids + [eos]`; the targets are the response and the EOS,
so the model learns to stop even when the pad token equals EOS.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase


@dataclass
class Encoded:
    input_ids: list[int]
    prompt_len: int  # positions [prompt_len, len(input_ids)) are targets
    truncated: bool = False  # part of the response was cut by max_length

    @property
    def n_targets(self) -> int:
        return len(self.input_ids) - max(self.prompt_len, 1)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, chat_template: bool) -> list[int]:
    if chat_template:
        return list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True,
                return_dict=False,
            )
        )
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if _adds_bos(tokenizer) else []) + ids


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer itself puts BOS before a text (Llama-style tokenizers do)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def encode(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    max_length: int,
    chat_template: bool = False,
) -> Encoded | None:
    """Encode one example; None when no response token survives truncation to `max_length`."""
    p = prompt_ids(tokenizer, prompt, chat_template)
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p + r)[:max_length]
    if len(ids) <= len(p):
        return None
    return Encoded(ids, len(p), truncated=len(ids) < len(p) + len(r))
