"""Tokenisation with response-only targets whose masks come from lengths, never from token ids.

An example becomes `prompt_ids + response_ids + [eos]`; the targets are the response and the EOS,
so the model learns to stop even when the pad token equals EOS. Reference log-probabilities given
with the data (`ref_logp`, for `engine.reference=dataset`) are one per target token, in that order,
and are cut with the response.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase


@dataclass
class Encoded:
    input_ids: list[int]
    prompt_len: int  # positions [prompt_len, len(input_ids)) are targets
    truncated: bool = False  # part of the response was cut by max_length
    ref_logp: list[float] | None = None  # one reference log-probability per target token

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
    ref_logp: list[float] | None = None,
) -> Encoded | None:
    """Encode one example; None when no response token survives truncation to `max_length`.

    `ref_logp` must hold one finite value per token of the response and the EOS (ValueError otherwise)."""
    p = prompt_ids(tokenizer, prompt, chat_template)
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if ref_logp is not None:
        _check_ref_logp(ref_logp, len(r))
    ids = (p + r)[:max_length]
    if len(ids) <= len(p):
        return None
    e = Encoded(ids, len(p), truncated=len(ids) < len(p) + len(r))
    if ref_logp is not None:
        skip = max(len(p), 1) - len(p)  # with an empty prompt nothing predicts the first response token
        e.ref_logp = [float(x) for x in ref_logp[skip : skip + e.n_targets]]
    return e


def _check_ref_logp(values, n_targets: int) -> None:
    if not isinstance(values, list | tuple) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in values
    ):
        raise ValueError("ref_logp must be a list of finite numbers (one log-probability per target token)")
    if len(values) != n_targets:
        raise ValueError(
            f"ref_logp has {len(values)} values for {n_targets} target tokens (the response's tokens under this "
            f"tokenizer, then EOS): compute it with the model's tokenizer, one value per target token"
        )
