"""Tokenisation with targets whose masks come from lengths and character spans, never from token ids.

A pair without a chat template becomes `prompt_ids + response_ids + [eos]`; the targets are the
response and the EOS, so the model learns to stop even when the pad token equals EOS. With the chat
template, a pair is a conversation of one user and one assistant turn, and a conversation is
rendered once by the template (`chat.py`): the targets are the assistant turns chosen by
`train_on`, each ended by the template's end-of-turn token. A document (`text`) is all targets.
"""

from __future__ import annotations

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
) -> Encoded | None:
    """Encode one pair; None when no response token survives truncation to `max_length`."""
    if chat_template:
        return encode_conversation(tokenizer, [{"role": "user", "content": prompt},
                                               {"role": "assistant", "content": response}], max_length)
    p = prompt_ids(tokenizer, prompt, False)
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p + r)[:max_length]
    if len(ids) <= len(p):
        return None
    return Encoded(ids, len(p), truncated=len(ids) < len(p) + len(r))


def _cut(ids: list[int], spans: list[tuple[int, int]], max_length: int) -> Encoded | None:
    kept = [(a, min(b, max_length)) for a, b in spans if a < max_length]
    e = Encoded(ids[:max_length], kept[0][0] if kept else 0, spans=kept)
    if not e.target_spans():
        return None
    e.truncated = e.n_targets < Encoded(ids, spans[0][0], spans=spans).n_targets
    return e


def encode_conversation(tokenizer, messages: list[dict], max_length: int, tools=None, train_on: str = "assistant",
                        prompt_turns: int = 0) -> Encoded | None:
    """A conversation rendered once by the chat template; None when truncation leaves no target."""
    rendered = chat.render(tokenizer, messages, tools, train_on, prompt_turns)
    ids, spans = chat.tokenize(tokenizer, rendered)
    return _cut(ids, spans, max_length) if spans else None


def encode_text(tokenizer, text: str, max_length: int) -> Encoded | None:
    """A document for language modelling: every token a target, ended by EOS."""
    ids = prompt_ids(tokenizer, text, False) + [tokenizer.eos_token_id]
    return _cut(ids, [(0, len(ids))], max_length)


class NeedsTemplate(ValueError):
    """A conversation that only a chat template can render (data.task.chat_template=false)."""


def encode_example(tokenizer, example: dict, settings: EncodeSettings) -> Encoded | None:
    """One example of `formats.py` (a pair, a conversation or a document), with its per-token fields."""
    if "text" in example:
        e = encode_text(tokenizer, example["text"], settings.max_length)
    elif "messages" in example:
        messages = example["messages"]
        if not settings.chat_template:
            pair = [m["role"] for m in messages] == ["user", "assistant"] and not example.get("tools")
            if not pair:
                raise NeedsTemplate(f"a conversation of {len(messages)} messages")
            e = encode(tokenizer, messages[0]["content"], messages[1]["content"], settings.max_length)
        else:
            e = encode_conversation(tokenizer, messages, settings.max_length, example.get("tools"), settings.train_on,
                                    example.get("prompt_turns", 0))
    else:
        if settings.chat_template:
            e = encode_conversation(tokenizer, [{"role": "user", "content": example["prompt"]},
                                                {"role": "assistant", "content": example["response"]}],
                                    settings.max_length, train_on=settings.train_on)
        else:
            e = encode(tokenizer, example["prompt"], example["response"], settings.max_length)
            if e is not None and settings.train_on == "all":
                e.spans, e.prompt_len = [(0, len(e.input_ids))], 0
    if e is not None:
        for name in TOKEN_FIELDS:
            if example.get(name) is not None:
                e.fields[name] = list(example[name])[: e.n_targets]
    return e
