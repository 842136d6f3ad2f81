"""Tokenisation with targets whose masks come from lengths and character spans, never from token ids.

A pair without a chat template becomes `prompt_ids + response_ids + [eos]`; the targets are the
response and the EOS, so the model learns to stop even when the pad token equals EOS. With the chat
template, a pair is a conversation of one user and one assistant turn, and a conversation is
rendered once by the template (`chat.py`): the targets are the assistant turns chosen by
`train_on`, each ended by the template's end-of-turn token. A document (`text`) is all targets.

Per-target-token values given with the data (`ref_logp`, for `engine.reference=dataset`) are one per
target token before truncation, in order (a pair: the response's tokens, then EOS; a conversation:
each target turn's tokens with its end-of-turn token), and are cut with the targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from dftlab.data import chat

# per-target-token values a row may carry (one value per target token, in order): they follow the
# targets through truncation into `Encoded.fields`, and collate places them at the targets' positions
TOKEN_FIELDS = ("ref_logp",)


@dataclass
class Encoded:
    input_ids: list[int]
    prompt_len: int  # the first target position; the targets are [prompt_len, len(input_ids)) unless `spans`
    truncated: bool = False  # part of the targets was cut by max_length
    spans: list[tuple[int, int]] | None = None  # target token ranges [a, b), for several turns
    fields: dict[str, list[float]] = field(default_factory=dict)  # TOKEN_FIELDS, one value per target token

    def target_spans(self) -> list[tuple[int, int]]:
        """Target token ranges; position 0 is never a target (nothing predicts it)."""
        spans = self.spans if self.spans is not None else [(self.prompt_len, len(self.input_ids))]
        return [(max(a, 1), b) for a, b in spans if b > max(a, 1)]

    @property
    def n_targets(self) -> int:
        return sum(b - a for a, b in self.target_spans())

    @property
    def ref_logp(self) -> list[float] | None:
        return self.fields.get("ref_logp")


@dataclass(frozen=True)
class EncodeSettings:
    max_length: int
    chat_template: bool = False
    train_on: str = "assistant"


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt, chat_template: bool) -> list[int]:
    """The ids a generation starts from: a prompt string, or a list of messages (always templated)."""
    if chat_template or isinstance(prompt, list):
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False))
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
    """Encode one pair; None when no response token survives truncation to `max_length`.

    `ref_logp` must hold one finite value per target token (ValueError otherwise)."""
    return _pair(tokenizer, prompt, response, max_length, chat_template, {"ref_logp": ref_logp})


def _pair(tokenizer, prompt: str, response: str, max_length: int, chat_template: bool, fields: dict,
          train_on: str = "assistant") -> Encoded | None:
    if chat_template:
        return encode_conversation(tokenizer, [{"role": "user", "content": prompt},
                                               {"role": "assistant", "content": response}], max_length,
                                   train_on=train_on, fields=fields)
    p = prompt_ids(tokenizer, prompt, False)
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if train_on == "all":  # the prompt's tokens are targets too, as long as a response token survives
        e = _cut(p + r, [(0, len(p) + len(r))], max_length, fields)
        return e if len(p) < max_length else None
    full = [(len(p), len(p) + len(r))]
    fields = _checked(fields, full)
    ids = (p + r)[:max_length]
    if len(ids) <= len(p):
        return None
    return _attach(Encoded(ids, len(p), truncated=len(ids) < len(p) + len(r)), full, fields)


def _checked(fields: dict, full: list[tuple[int, int]]) -> dict[str, list[float]]:
    """The given per-target-token fields, each checked against the targets before truncation (`full`)."""
    n = sum(b - a for a, b in full)
    out = {}
    for name, values in fields.items():
        if values is None:
            continue
        if not isinstance(values, list | tuple) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in values
        ):
            raise ValueError(f"{name} must be a list of finite numbers (one log-probability per target token)")
        if len(values) != n:
            raise ValueError(
                f"{name} has {len(values)} values for {n} target tokens (the response's tokens under this tokenizer, "
                f"then EOS; or each assistant turn's tokens with its end-of-turn token): compute it with the model's "
                f"tokenizer, one value per target token"
            )
        out[name] = [float(x) for x in values]
    return out


def _attach(e: Encoded | None, full: list[tuple[int, int]], fields: dict[str, list[float]]) -> Encoded | None:
    """Each field's values of the targets `e` kept (position 0 and what truncation cut are not targets)."""
    if e is None:
        return None
    for name, values in fields.items():
        kept, offset = [], 0
        for a, b in full:
            lo, hi = max(a, 1), min(b, len(e.input_ids))
            if hi > lo:
                kept += values[offset + lo - a : offset + hi - a]
            offset += b - a
        e.fields[name] = kept
    return e


def _cut(ids: list[int], spans: list[tuple[int, int]], max_length: int, fields: dict | None = None) -> Encoded | None:
    fields = _checked(fields or {}, spans)
    kept = [(a, min(b, max_length)) for a, b in spans if a < max_length]
    e = Encoded(ids[:max_length], kept[0][0] if kept else 0, spans=kept)
    if not e.target_spans():
        return None
    e.truncated = e.n_targets < Encoded(ids, spans[0][0], spans=spans).n_targets
    return _attach(e, spans, fields)


def encode_conversation(tokenizer, messages: list[dict], max_length: int, tools=None, train_on: str = "assistant",
                        prompt_turns: int = 0, fields: dict | None = None) -> Encoded | None:
    """A conversation rendered once by the chat template; None when truncation leaves no target."""
    rendered = chat.render(tokenizer, messages, tools, train_on, prompt_turns)
    ids, spans = chat.tokenize(tokenizer, rendered)
    return _cut(ids, spans, max_length, fields) if spans else None


def encode_text(tokenizer, text: str, max_length: int, fields: dict | None = None) -> Encoded | None:
    """A document for language modelling: every token a target, ended by EOS."""
    ids = prompt_ids(tokenizer, text, False) + [tokenizer.eos_token_id]
    return _cut(ids, [(0, len(ids))], max_length, fields)


class NeedsTemplate(ValueError):
    """A conversation that only a chat template can render (data.task.chat_template=false)."""


def encode_example(tokenizer, example: dict, settings: EncodeSettings) -> Encoded | None:
    """One example of `formats.py` (a pair, a conversation or a document), with its per-token fields
    (ValueError for values that do not fit the targets)."""
    fields = {name: example[name] for name in TOKEN_FIELDS if example.get(name) is not None}
    if "text" in example:
        return encode_text(tokenizer, example["text"], settings.max_length, fields)
    if "messages" in example:
        messages = example["messages"]
        if settings.chat_template:
            return encode_conversation(tokenizer, messages, settings.max_length, example.get("tools"),
                                       settings.train_on, example.get("prompt_turns", 0), fields)
        if [m["role"] for m in messages] != ["user", "assistant"] or example.get("tools"):
            raise NeedsTemplate(f"a conversation of {len(messages)} messages")
        prompt, response = messages[0]["content"], messages[1]["content"]
    else:
        prompt, response = example["prompt"], example["response"]
    return _pair(tokenizer, prompt, response, settings.max_length, settings.chat_template, fields, settings.train_on)
