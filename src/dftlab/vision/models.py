"""Vision-language models through transformers' image-text-to-text classes, keyed on the model's config:
a config with a `vision_config` is one. Loaded from a hub name or a local directory, or built from
`model.arch` with fresh weights and the locally built tokenizer (`vision.tokenizer`).

The tokenizer carries the model's image processor as `tokenizer.image_processor` (a PIL / numpy one:
no torchvision), so that everything that is handed a tokenizer (data, export, generation) has it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
)

from dftlab.errors import ConfigError
from dftlab.vision.tokenizer import IMAGE_TOKEN, vision_char_tokenizer

TOKEN_IDS = {"image_token_id": IMAGE_TOKEN, "video_token_id": "<|video_pad|>",
             "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
VISION_TOWERS = ("visual", "vision_tower", "vision_model")  # where image-text-to-text models keep theirs


def is_vision_config(config) -> bool:
    return getattr(config, "vision_config", None) is not None


def model_config(cfg):
    """The architecture config of a `model` config (None for a GGUF file, whose models are text only)."""
    from dftlab.models import _source

    if cfg.get("name_or_path") is None:
        return AutoConfig.for_model(**OmegaConf.to_container(cfg.arch, resolve=True)) if cfg.get("arch") else None
    if cfg.get("gguf_file"):
        return None
    source = _source(cfg)
    return AutoConfig.from_pretrained(source["pretrained_model_name_or_path"], revision=source.get("revision"),
                                      trust_remote_code=source["trust_remote_code"])


def is_vision(cfg) -> bool:
    return is_vision_config(model_config(cfg))


def auto_class(path) -> type:
    """The Auto class that loads the model saved at `path`."""
    vision = is_vision_config(AutoConfig.from_pretrained(str(path)))
    return AutoModelForImageTextToText if vision else AutoModelForCausalLM


def _image_processor_class(model_type: str):
    from transformers.models.auto import image_processing_auto

    names = image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or {}
    name = names.get("pil") if isinstance(names, dict) else None
    if name is None:
        raise ConfigError(f"model.arch.model_type={model_type}: transformers has no PIL image processor for it")
    import transformers

    return getattr(transformers, name)


def _chat_template_file(path: Path) -> str | None:
    """A processor's chat template saved beside the tokenizer (`chat_template.json` or `.jinja`)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return None


def load_vision_tokenizer(cfg):
    """The tokenizer with `image_processor` set; `model.image_processor` overrides its settings
    (e.g. `max_pixels`, which bounds the image tokens of one image)."""
    from dftlab.models import _source

    overrides = OmegaConf.to_container(cfg.image_processor, resolve=True) if cfg.get("image_processor") else {}
    if cfg.get("name_or_path") is None:
        tok = vision_char_tokenizer()
        processor = _image_processor_class(cfg.arch.model_type)(**overrides)
    else:
        source = _source(cfg)
        tok = AutoTokenizer.from_pretrained(**source)
        processor = AutoImageProcessor.from_pretrained(**source, backend="pil", **overrides)
        local = Path(source["pretrained_model_name_or_path"])
        if tok.chat_template is None and local.is_dir():
            tok.chat_template = _chat_template_file(local)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.image_processor = processor
    return tok


def vision_tower(model: nn.Module) -> nn.Module:
    base = model.base_model
    for name in VISION_TOWERS:
        if hasattr(base, name):
            return getattr(base, name)
    raise ConfigError(f"{type(model).__name__}: no vision tower found (looked for {', '.join(VISION_TOWERS)})")


def lora_targets(model: nn.Module, vision: bool) -> list[str]:
    """Full names of the linear layers LoRA adapts: the language model's, and the vision tower's when asked."""
    parts = [model.get_decoder()] + ([vision_tower(model)] if vision else [])
    names = {id(m): n for n, m in model.named_modules()}
    return [f"{names[id(part)]}.{n}" for part in parts for n, m in part.named_modules() if isinstance(m, nn.Linear)]


def load_vision_lm(cfg, tokenizer=None) -> nn.Module:
    """An image-text-to-text model in train mode, as `dftlab.models.load_causal_lm` gives a causal LM."""
    from dftlab.models import _dtype, _source, apply_lora

    attn = cfg.get("attn_implementation")
    if cfg.get("name_or_path") is None:
        arch = OmegaConf.to_container(cfg.arch, resolve=True)
        if tokenizer is not None:
            text = arch.setdefault("text_config", {})
            text.setdefault("vocab_size", len(tokenizer))
            for name in ("pad", "bos", "eos"):
                text.setdefault(f"{name}_token_id", getattr(tokenizer, f"{name}_token_id"))
            for key, token in TOKEN_IDS.items():
                arch.setdefault(key, tokenizer.convert_tokens_to_ids(token))
        model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(**arch), attn_implementation=attn)
        dtype = _dtype(cfg.get("dtype"))
        if dtype != "auto":
            model = model.to(dtype)
    else:
        model = AutoModelForImageTextToText.from_pretrained(**_source(cfg), dtype=_dtype(cfg.get("dtype")),
                                                            attn_implementation=attn)
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    lora = OmegaConf.create(OmegaConf.to_container(cfg.get("lora") or {}, resolve=True))
    if lora.get("r"):
        if lora.get("target_modules", "all-linear") == "all-linear":
            lora.target_modules = lora_targets(model, bool(lora.get("vision", False)))
        lora.pop("vision", None)
        model = apply_lora(model, lora)
    return model.train()


def media_inputs(batch: dict) -> dict[str, torch.Tensor]:
    """The image inputs of a batch, as the model's forward takes them."""
    return {k: batch[k] for k in ("pixel_values", "image_grid_thw", "mm_token_type_ids") if k in batch}
