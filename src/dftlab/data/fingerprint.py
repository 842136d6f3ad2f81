"""Content fingerprints: what the tokenisation cache and a resumed run's data check are keyed on.

A file's size and modification time say nothing certain about its content (an edit in place can keep
both), so a local source is hashed whole; a tokenizer by everything that maps text to ids.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from pathlib import Path

_BLOCK = 1 << 20


def content_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (their paths relative to it, then their bytes)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f is not path:
            h.update(f"\0{f.relative_to(path).as_posix()}\0".encode())
        with open(f, "rb") as stream:
            while block := stream.read(_BLOCK):
                h.update(block)
    return h.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """SHA-256 of what maps text to ids: the full tokenizer definition (vocabulary, merges, normalizer,
    pre-tokenizer) where the tokenizer has one, else its vocabulary; its special tokens; its chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    spec = [type(tokenizer).__name__, definition, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id,
            tokenizer.bos_token_id, sorted(tokenizer.get_added_vocab().items()),
            getattr(tokenizer, "chat_template", None)]
    return hashlib.sha256(json.dumps(spec, default=str).encode()).hexdigest()


def rows_digest(splits: dict[str, list]) -> str:
    """SHA-256 of tokenised splits (`Encoded` rows, or pairs of them with `chosen` / `rejected`, in order):
    what a run trains and validates on, exactly (the tokens, and which of them are targets)."""
    h = hashlib.sha256()
    for split in sorted(splits):
        h.update(f"\0{split}\0".encode())
        for row in splits[split]:
            sides = (row.chosen, row.rejected) if hasattr(row, "chosen") else (row,)
            for e in sides:
                h.update(array("q", [len(e.input_ids), e.prompt_len, int(e.truncated), *e.input_ids]).tobytes())
                spans = e.target_spans()
                if spans != [(max(e.prompt_len, 1), len(e.input_ids))]:  # several target ranges (conversations)
                    h.update(array("q", [-1, *(x for span in spans for x in span)]).tobytes())
    return h.hexdigest()
