"""What `dftlab.checks` reads of the data and the tokenizer before the embedded base is resolved or
built (seconds, not minutes):

- `chat_template_of`: a tokenizer's chat template, read from its files (`tokenizer_config.json`,
  `chat_template.jinja`, a GGUF file's metadata) without loading it;
- `check_head`: for the embedded base (whose character tokenizer is known without building it), the
  first rows of the data encode, with few unknown tokens.

The tokenisation of the whole data repeats both exactly, before any model is built.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from omegaconf import DictConfig

from dftlab.errors import ConfigError

UNKNOWN = object()  # a template that cannot be read without loading the tokenizer (a hub name not cached)
HEAD_ROWS = 64


def _embedded(model: DictConfig) -> bool:
    from dftlab.models import EMBEDDED_BASE

    return not model.get("tokenizer") and model.get("name_or_path") in (None, EMBEDDED_BASE)


def _gguf_string(path: Path, key: str) -> str | None:
    """A string value of a GGUF file's metadata, read from its header alone (memory-mapped: nothing else is read)."""
    import mmap

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"GGUF":
            return None
        (n_kv,) = struct.unpack_from("<Q", m, 16)
        at = 24

        def skip(kind: int, at: int) -> int:
            if kind == 8:
                return at + 8 + struct.unpack_from("<Q", m, at)[0]
            if kind == 9:
                item, count = struct.unpack_from("<IQ", m, at)
                at += 12
                if item in sizes:
                    return at + sizes[item] * count
                for _ in range(count):
                    at = skip(item, at)
                return at
            return at + sizes[kind]

        for _ in range(n_kv):
            (n,) = struct.unpack_from("<Q", m, at)
            name = bytes(m[at + 8: at + 8 + n])
            at += 8 + n
            (kind,) = struct.unpack_from("<I", m, at)
            at += 4
            if name == key.encode() and kind == 8:
                (n,) = struct.unpack_from("<Q", m, at)
                return bytes(m[at + 8: at + 8 + n]).decode("utf-8")
            at = skip(kind, at)
    return None


def _template_in(folder: Path):
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text()).get("chat_template")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("chat_template")
    return UNKNOWN if not (folder / "config.json").is_file() else None


def chat_template_of(model: DictConfig):
    """The tokenizer's chat template read from its files: a string, None (it has none) or UNKNOWN."""
    if _embedded(model):
        # the character tokenizer of the embedded base and of scratch models has none; its vision-language
        # twin (model=vl_scratch, and the base of model=vl_base) has one
        return UNKNOWN if "vision_config" in (model.get("arch") or {}) or "image_processor" in model else None
    source = str(model.get("tokenizer") or model.name_or_path)
    folder = Path(source).expanduser()
    gguf = model.get("gguf_file")
    if gguf and not model.get("tokenizer"):
        path = folder / gguf
        return _gguf_string(path, "tokenizer.chat_template") if path.is_file() else UNKNOWN
    if folder.is_dir():
        return _template_in(folder)
    try:  # a hub name: only what is already in the local cache, never a download
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "tokenizer_config.json", revision=model.get("revision"))
    except Exception:
        return UNKNOWN
    return _template_in(Path(cached).parent) if isinstance(cached, str) else UNKNOWN


def _names_the_model(model: DictConfig) -> str:
    return f"model.name_or_path={model.get('name_or_path')}" + (f" (tokenizer {model.tokenizer})"
                                                                if model.get("tokenizer") else "")


def check_head(model: DictConfig, data: DictConfig) -> None:
    """The embedded base's character tokenizer on the data's first rows: they encode, with few unknown tokens."""
    task_cfg = data.get("task")
    if task_cfg is None or not _embedded(model) or "path" not in task_cfg:
        return
    from dftlab.config import instantiate
    from dftlab.data.encode import EncodeSettings, NeedsTemplate, encode_example
    from dftlab.data.tokenizer import char_tokenizer

    task = instantiate(task_cfg)
    tok = char_tokenizer()
    settings = EncodeSettings(int(data.max_length), bool(task.chat_template), task.train_on)
    tokens = unknown = 0
    for example in task.head(HEAD_ROWS):
        try:
            e = encode_example(tok, example, settings)
        except NeedsTemplate as err:
            raise ConfigError(f"{example.get('where')}: {err}, and data.task.chat_template=false; conversations are "
                              f"rendered by the tokenizer's chat template") from None
        except ValueError as err:  # per-token values that do not fit the targets
            raise ConfigError(f"{example.get('where')}: {err}") from None
        if e is not None:
            tokens += len(e.input_ids)
            unknown += sum(t == tok.unk_token_id for t in e.input_ids)
    limit = task.max_unk_fraction
    if tokens and unknown / tokens > limit:
        raise ConfigError(
            f"the tokenizer of {_names_the_model(model)} (the game's character tokenizer) encodes "
            f"{unknown / tokens:.1%} of the first {HEAD_ROWS} rows' tokens as <unk> (more than "
            f"data.task.max_unk_fraction={limit}): choose a model for this data, e.g. model=hf "
            f"model.name_or_path=<model> or model=smollm2-135m"
        )
