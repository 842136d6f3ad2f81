"""Training data of conversations with images, from a local file or a hub dataset (`dftlab.data.sources`).

A row is a conversation (`messages`, or ShareGPT's `conversations`) whose user turns hold images, either
as content parts, `{"type": "image", "image": "img/1.png"}` beside `{"type": "text", "text": ...}`, or as
`<image>` markers in the text with the row's `images` list (LLaMA-Factory's layout). Relative paths are
read from `image_dir` (null: the data file's folder). Images stored in the rows (a dataset's image
column: decoded images or `{"bytes": ...}`) are written once to `image_cache` as PNG files.

Every image is opened when the data is read: one that fails is counted as `bad_image` and its row
skipped, naming the file and line and the image; more than `max_bad_fraction` bad rows refuse the run.
"""

from __future__ import annotations

import hashlib
import io
from functools import cached_property
from pathlib import Path

from dftlab.data.formats import ROLES, SHAREGPT_ROLES, Bad
from dftlab.data.records import Records
from dftlab.data.sources import looks_local
from dftlab.data.text_task import TextTask
from dftlab.errors import ConfigError
from dftlab.vision.encode import BadImage, image_refs, open_image, resolve

MARKER = "<image>"


def _stored(ref, cache: Path | None) -> str | None:
    """A path for an image held in the row itself (PIL image or `{"bytes": ...}`); None for a path."""
    data = ref.get("bytes") if isinstance(ref, dict) else None
    if data is None and hasattr(ref, "save"):
        buffer = io.BytesIO()
        ref.save(buffer, format="PNG")
        data = buffer.getvalue()
    if data is None:
        return ref.get("path") if isinstance(ref, dict) else None
    if cache is None:
        raise ConfigError("the data holds images in its rows: set data.task.image_cache to a folder to keep them in")
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{hashlib.sha256(data).hexdigest()[:20]}.png"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def _image(ref, base: Path | None, cache: Path | None) -> str:
    stored = _stored(ref, cache)
    if stored is not None:
        return resolve(stored, base)
    if not isinstance(ref, str) or not ref:
        raise Bad("bad_image")
    return resolve(ref, base)


def _parts(content, images: list, used: int, base, cache) -> tuple[object, int]:
    """A message's content with its images as parts; `used`: how many of the row's `images` it took."""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("image", "text"):
                raise Bad("bad_message")
            if part["type"] == "image":
                parts.append({"type": "image", "image": _image(part.get("image") or part.get("path"), base, cache)})
            elif isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            else:
                raise Bad("not_text")
        return parts, used
    if not isinstance(content, str):
        raise Bad("not_text")
    if MARKER not in content:
        return content, used
    pieces = content.split(MARKER)
    if used + len(pieces) - 1 > len(images):
        raise Bad("image_count")
    parts = []
    for k, text in enumerate(pieces):
        if k:
            parts.append({"type": "image", "image": _image(images[used], base, cache)})
            used += 1
        if text:
            parts.append({"type": "text", "text": text})
    return parts, used


def normalise(row: dict, base: Path | None, cache: Path | None) -> dict:
    """A row as `{"messages": [...], "image_sizes": [...]}` with image parts; raises `Bad` or `BadImage`."""
    turns = row.get("messages", row.get("conversations"))
    if not isinstance(turns, list) or not turns:
        raise Bad("missing_field")
    images = row.get("images") or []
    images = [images] if isinstance(images, (str, dict)) or hasattr(images, "save") else list(images)
    messages, used = [], 0
    for m in turns:
        if not isinstance(m, dict):
            raise Bad("bad_message")
        role = m.get("role", SHAREGPT_ROLES.get(m.get("from")))
        if role not in ROLES:
            raise Bad("unknown_role")
        content, used = _parts(m.get("content", m.get("value")), images, used, base, cache)
        if role == "assistant" and not (isinstance(content, str) and content.strip()):
            raise Bad("empty_response" if isinstance(content, str) else "not_text")  # targets are text
        messages.append({"role": role, "content": content})
    if used != len(images):
        raise Bad("image_count")  # the row lists images its <image> markers do not place, or too few
    if not any(m["role"] == "assistant" for m in messages):
        raise Bad("no_assistant_turn")
    sizes = [open_image(ref).size for ref in image_refs(messages)]
    return {"messages": messages, "image_sizes": sizes}


class ImageTextTask(TextTask):
    """`TextTask`'s reading, splitting and evaluation for conversations with images (no streaming)."""

    name = "image_text"

    def __init__(self, path: str, image_dir: str | None = None, image_cache: str | None = None, **kwargs):
        if kwargs.get("streaming"):
            raise ConfigError("data.task.streaming=true is not supported for data with images")
        kwargs.setdefault("format", "messages")
        super().__init__(path, **kwargs)
        self.image_dir, self.image_cache = image_dir, image_cache

    def _base(self) -> Path | None:
        if self.image_dir:
            return Path(self.image_dir).expanduser()
        return Path(self.path).expanduser().parent if looks_local(self.path) else None

    def _read(self, limit: int | None) -> Records:
        records, base = Records(self.path), self._base()
        cache = Path(self.image_cache).expanduser() if self.image_cache else None
        for where, row in self.source.rows():
            if isinstance(row, str):
                records.skip(row, where)
                continue
            try:
                example = normalise(row, base, cache)
            except Bad as bad:
                records.skip(bad.reason, where)
                continue
            except BadImage as err:
                records.skip("bad_image", f"{where} ({err})")
                continue
            example["where"] = where
            records.n_good += 1
            records.rows.append(example)
            if limit is not None and len(records.rows) >= limit:
                break
        return records

    def head(self, n: int) -> list[dict]:
        return self._read(n).rows

    @cached_property
    def records(self) -> Records:
        records = self._read(None if self.max_rows is None else self.max_rows + self.val_size)
        records.check(self.max_bad_fraction, "data.task.max_bad_fraction")
        if len(records.rows) <= self.val_size:
            raise ConfigError(
                f"{self.path}: {len(records.rows)} usable rows, not more than data.task.val_size={self.val_size}"
            )
        return records
