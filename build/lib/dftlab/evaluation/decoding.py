"""What both generation backends share: the tokens that end a completion and how it is decoded."""

from __future__ import annotations


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
