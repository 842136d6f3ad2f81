"""What both generation backends share: the tokens that end a completion and how it is decoded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Completion:
    """One generated completion: its text (as `decode` gives it), the token ids it was sampled as
    (through its end token, or through the token that completes a stop string), and whether it
    ended (an end token or a stop string) rather than running into `max_new_tokens`."""

    text: str
    ids: list[int]
    finished: bool


def stop_token_ids(generation_config, tokenizer) -> list[int]:
    """The tokenizer's EOS and the model's own end tokens (from its generation config: a chat model
    ends its turn with one, e.g. Qwen's `<|im_end|>`): generation stops at any of them, with
    either backend."""
    ids = [tokenizer.eos_token_id]
    model_eos = getattr(generation_config, "eos_token_id", None)
    ids += model_eos if isinstance(model_eos, list) else [model_eos]
    return list(dict.fromkeys(i for i in ids if i is not None))


def decode(tokenizer, ids: list[int], eos: list[int], stop: list[str] | None) -> str:
    """The text of generated ids up to the first end token, cut before the first stop string."""
    end = next((i for i, t in enumerate(ids) if t in eos), len(ids))
    text = tokenizer.decode(ids[:end], skip_special_tokens=True)
    for s in stop or []:
        if s in text:
            text = text[: text.index(s)]
    return text


def completion(tokenizer, ids: list[int], eos: list[int], stop: list[str] | None, finished: bool | None = None
               ) -> Completion:
    """`decode`'s text with the ids that produced it; `finished` is inferred when not given (an end
    token or a stop string in the ids)."""
    text = decode(tokenizer, ids, eos, stop)
    end = next((i + 1 for i, t in enumerate(ids) if t in eos), None)
    stopped = [s for s in stop or [] if s in tokenizer.decode(ids[: end or len(ids)], skip_special_tokens=True)]
    if stopped:  # the shortest prefix whose text holds a stop string
        end = next(k for k in range(1, len(ids) + 1)
                   if any(s in tokenizer.decode(ids[:k], skip_special_tokens=True) for s in stopped))
    kept = ids if end is None else ids[:end]
    return Completion(text, kept, (end is not None) if finished is None else finished)
