"""Loading any Hugging Face causal LM and its tokenizer: from a hub name, a local path, a GGUF
file, or built from an architecture config (the small scratch model of the embedded task)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from dftlab.data.tokenizer import char_tokenizer
from dftlab.errors import ConfigError


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`module` in eval mode for the block, then every submodule as it was: not all in train mode,
    so that a frozen reference model or a part kept in eval mode stays there."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.training = training


EMBEDDED_BASE = "embedded-base"  # model.name_or_path of the embedded base (resolved by `dftlab.embedded_base`)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(name: str | None):
    if name in (None, "auto"):
        return "auto"
    if name not in DTYPES:
        raise ConfigError(f"model.dtype={name!r}: choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def _source(cfg) -> dict:
    """Keyword arguments shared by the model and tokenizer loaders."""
    path = cfg.name_or_path
    local = Path(str(path)).expanduser()
    if str(path).startswith((".", "/", "~")) and not local.exists():
        raise FileNotFoundError(f"model.name_or_path={path!r}: no such directory")
    kwargs = {"pretrained_model_name_or_path": str(local) if local.exists() else path}
    kwargs["trust_remote_code"] = bool(cfg.get("trust_remote_code", False))
    for key in ("revision", "gguf_file"):
        if cfg.get(key):
            kwargs[key] = cfg[key]
    return kwargs


def _vision(cfg) -> bool:
    """Whether the model is a vision-language one (its config has a `vision_config`): `dftlab.vision` loads it."""
    from dftlab.vision.models import is_vision

    try:
        return is_vision(cfg)
    except OSError:  # no config to read: the text loader reports what is missing
        return False


def load_tokenizer(cfg) -> PreTrainedTokenizerBase:
    if not cfg.get("tokenizer") and _vision(cfg):
        from dftlab.vision.models import load_vision_tokenizer

        return load_vision_tokenizer(cfg)
    if cfg.get("tokenizer"):
        tok = AutoTokenizer.from_pretrained(cfg.tokenizer, trust_remote_code=bool(cfg.get("trust_remote_code")))
    elif cfg.name_or_path is None:
        tok = char_tokenizer()
    else:
        tok = AutoTokenizer.from_pretrained(**_source(cfg))
    if tok.pad_token_id is None:  # Llama-style tokenizers have none; masks come from lengths anyway
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(cfg, tokenizer: PreTrainedTokenizerBase | None = None) -> torch.nn.Module:
    """A causal LM in train mode; built from `cfg.arch` (fresh weights) when `name_or_path` is null. A
    vision-language model (keyed on its config) is loaded by `dftlab.vision.models.load_vision_lm`."""
    if _vision(cfg):
        from dftlab.vision.models import load_vision_lm

        return load_vision_lm(cfg, tokenizer)
    attn = cfg.get("attn_implementation")
    if cfg.name_or_path is None:
        if not cfg.get("arch"):
            raise ConfigError("model.name_or_path is null and model.arch is empty: give one of them")
        arch = dict(cfg.arch)
        if tokenizer is not None:
            arch.setdefault("vocab_size", len(tokenizer))
            for name in ("pad", "bos", "eos"):
                arch.setdefault(f"{name}_token_id", getattr(tokenizer, f"{name}_token_id"))
        config = AutoConfig.for_model(**arch)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
        dtype = _dtype(cfg.get("dtype"))
        if dtype != "auto":
            model = model.to(dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            **_source(cfg), dtype=_dtype(cfg.get("dtype")), attn_implementation=attn
        )
        if cfg.get("gguf_file"):
            # GGUF weights are de-quantized to plain tensors on load: nothing stays quantized, and the export (a
            # plain safetensors model) would otherwise be refused as "quantized with gguf"
            model.hf_quantizer = None
            if getattr(model.config, "quantization_config", None) is not None:
                del model.config.quantization_config
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    lora = cfg.get("lora") or {}
    if lora.get("r"):
        model = apply_lora(model, lora)
    return model.train()


def apply_lora(model: torch.nn.Module, lora) -> torch.nn.Module:
    """LoRA adapters (peft) on the linear layers; the output layer and embeddings stay frozen."""
    from peft import LoraConfig, get_peft_model

    if lora.r < 0 or lora.alpha <= 0:
        raise ConfigError(f"model.lora: r={lora.r} and alpha={lora.alpha} must be positive (r=0 turns LoRA off)")
    targets = lora.get("target_modules", "all-linear")
    config = LoraConfig(
        r=int(lora.r),
        lora_alpha=float(lora.alpha),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
