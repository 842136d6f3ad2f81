"""A character-level tokenizer built locally and saved in Hugging Face format.

It is a `PreTrainedTokenizerFast`, so the embedded task runs through the same code path
(`AutoTokenizer.from_pretrained`, `save_pretrained`, `decode`) as a real model's tokenizer.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}
GAME_CHARS = "0123456789AJQK=,|:;+-*/ \n"


def char_backend(chars: str, tokens: tuple[str, ...] = ()) -> Tokenizer:
    """The tokenizers model: the special tokens (ids 0-3), then `tokens`, then one per character of `chars`."""
    vocab = {tok: i for i, tok in enumerate([*SPECIAL.values(), *tokens])}
    for ch in dict.fromkeys(chars):
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL["unk"]))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return backend


def char_tokenizer(chars: str = GAME_CHARS) -> PreTrainedTokenizerFast:
    """One token per character of `chars`, plus <pad>, <s>, </s> and <unk> (ids 0-3)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=char_backend(chars),
        **{f"{k}_token": v for k, v in SPECIAL.items()},
    )
