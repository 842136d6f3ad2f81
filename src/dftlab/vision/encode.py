"""Conversations with images, tokenised with their targets: the assistant's text only, never an image token.

The chat template renders a conversation once (`dftlab.data.chat.render`, which also gives the
character spans of the targets); each image placeholder the template writes (`<|image_pad|>`) is then
repeated as many times as the image processor makes tokens of that image, the spans shifted to match,
and the text tokenised with its offsets. Image tokens sit in user turns, so no target span holds one;
the spans are split around image tokens all the same (`train_on=all`), so none is ever a target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dftlab.data import chat
from dftlab.data.encode import Encoded, EncodeSettings, _cut
from dftlab.vision.tokenizer import IMAGE_TOKEN


class BadImage(ValueError):
    """An image that cannot be read (missing, not an image, truncated)."""


@dataclass
class VisionEncoded(Encoded):
    images: list[str] = field(default_factory=list)  # paths, in the order of their tokens


def image_token(tokenizer) -> str:
    return getattr(tokenizer, "image_token", None) or IMAGE_TOKEN


def image_refs(messages: list[dict]) -> list[str]:
    """The images of a conversation's content parts, in order."""
    return [part.get("image") or part.get("path") for m in messages if isinstance(m.get("content"), list)
            for part in m["content"] if isinstance(part, dict) and part.get("type") == "image"]


def open_image(ref: str):
    """An image as RGB (decoded now, so a truncated file fails here, not later)."""
    from PIL import Image

    try:
        with Image.open(ref) as img:
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:
        raise BadImage(f"{ref}: {type(err).__name__}: {err}") from None


def n_image_tokens(image_processor, size: tuple[int, int]) -> int:
    """Tokens of one image of `size` (width, height) in the language model's input."""
    width, height = size
    return image_processor.get_number_of_image_patches(height, width, {}) // image_processor.merge_size**2


def expand(text: str, spans: list[tuple[int, int]], counts: list[int], token: str):
    """`text` with its i-th `token` repeated `counts[i]` times, and the character spans moved to match."""
    at, starts = 0, []
    while (at := text.find(token, at)) >= 0:
        starts.append(at)
        at += len(token)
    if len(starts) != len(counts):
        raise ValueError(f"the chat template wrote {len(starts)} image placeholders for {len(counts)} images")
    pieces, last = [], 0
    for start, n in zip(starts, counts, strict=True):
        pieces += [text[last:start], token * n]
        last = start + len(token)
    pieces.append(text[last:])

    def moved(x: int) -> int:
        return x + sum(len(token) * (n - 1) for start, n in zip(starts, counts, strict=True) if start < x)

    return "".join(pieces), [(moved(a), moved(b)) for a, b in spans]


def without(spans: list[tuple[int, int]], ids: list[int], token_id: int) -> list[tuple[int, int]]:
    """Token spans split around the tokens equal to `token_id`."""
    out = []
    for a, b in spans:
        start = a
        for k in range(a, b + 1):
            if k == b or ids[k] == token_id:
                if k > start:
                    out.append((start, k))
                start = k + 1
    return out


def encode_with_images(tokenizer, example: dict, settings: EncodeSettings) -> VisionEncoded | None:
    """One conversation whose `image_sizes` (width, height) are known; None when truncation would cut an
    image or leave no target."""
    messages = example["messages"]
    rendered = chat.render(tokenizer, messages, example.get("tools"), settings.train_on, example.get("prompt_turns", 0))
    token = image_token(tokenizer)
    counts = [n_image_tokens(tokenizer.image_processor, tuple(s)) for s in example["image_sizes"]]
    text, spans = expand(rendered.text, rendered.spans, counts, token)
    ids, token_spans = chat.tokenize(tokenizer, chat.Rendered(text, spans))
    token_id = tokenizer.convert_tokens_to_ids(token)
    token_spans = without(token_spans, ids, token_id)
    image_end = max((k + 1 for k, t in enumerate(ids) if t == token_id), default=0)
    if image_end > settings.max_length or not token_spans:
        return None
    e = _cut(ids, token_spans, settings.max_length)
    if e is None:
        return None
    return VisionEncoded(e.input_ids, e.prompt_len, e.truncated, e.spans, images=[str(r) for r in image_refs(messages)])


def resolve(ref: str, base: Path | None) -> str:
    path = Path(ref).expanduser()
    return str(path if path.is_absolute() or base is None else base / path)
