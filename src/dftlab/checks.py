"""Checks that need no model, made before the embedded base is found or built: a mistake fails in
seconds, not after minutes of building, with one line naming the key or the file.

One function per check, each raising `ConfigError`. `values` (ranges, finiteness; pure) and
`types` are part of `config.validate`; `cli.train` runs `inputs` (required values, files, the hub:
nothing heavy imported, so a mistake there fails in about a second), then `config.validate`, then
`environment` (the GPU, the architecture, chat templates), all before anything is built. A new
check is a function here, called from one of these.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import socket
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, ListConfig, OmegaConf

from dftlab.errors import ConfigError, printable, safe_name

# --- values ----------------------------------------------------------------------------------

WHOLE, NUMBER = "a whole number", "a number"

# key: (kind, whether null is allowed, the test, what is allowed); keys absent from a config are skipped
RANGES = {
    "seed": (WHOLE, False, lambda v: 0 <= v < 2**32, "0 <= seed < 2**32"),
    "optim.lr": (NUMBER, False, lambda v: v > 0, "the learning rate must be > 0"),
    "optim.eps": (NUMBER, False, lambda v: v > 0, "must be > 0"),
    "optim.weight_decay": (NUMBER, False, lambda v: v >= 0, "need >= 0"),
    "optim.warmup_ratio": (NUMBER, False, lambda v: 0 <= v < 1, "need 0 <= warmup_ratio < 1"),
    "optim.min_lr_ratio": (NUMBER, False, lambda v: 0 <= v <= 1, "need 0 <= min_lr_ratio <= 1 (of optim.lr)"),
    "optim.grad_clip": (NUMBER, True, lambda v: v > 0, "null or > 0"),
    "data.batch_size": (WHOLE, False, lambda v: v >= 1, "the global batch must be >= 1"),
    "data.micro_batch_size": (WHOLE, True, lambda v: v >= 1, "must be >= 1 (or null: no accumulation)"),
    "data.max_length": (WHOLE, False, lambda v: v >= 2, "must be >= 2"),
    "data.pack_length": (WHOLE, True, lambda v: v >= 2, "null or >= 2"),
    "data.num_workers": (WHOLE, False, lambda v: v >= 0, "need >= 0"),
    "data.task.val_size": (WHOLE, False, lambda v: v >= 1, "the validation split needs at least 1 row"),
    "data.task.max_rows": (WHOLE, True, lambda v: v >= 1, "null (all) or >= 1"),
    "data.task.max_bad_fraction": (NUMBER, False, lambda v: 0 <= v <= 1, "a fraction in [0, 1]"),
    "data.task.n_train": (WHOLE, True, lambda v: v >= 1, "null (all) or >= 1"),
    "data.task.n_val": (WHOLE, False, lambda v: v >= 1, "the validation split needs at least 1 problem"),
    "data.task.n_test": (WHOLE, False, lambda v: v >= 1, "need >= 1"),
    "trainer.max_steps": (WHOLE, False, lambda v: v == -1 or v >= 1, "-1 (no limit) or >= 1"),
    "trainer.max_epochs": (WHOLE, True, lambda v: v == -1 or v >= 1, "-1 (no limit) or >= 1"),
    "trainer.val_check_interval": (NUMBER, True, lambda v: v > 0, "null, a fraction of an epoch, or steps"),
    "trainer.check_val_every_n_epoch": (WHOLE, True, lambda v: v >= 1, "null or >= 1"),
    "trainer.log_every_n_steps": (WHOLE, False, lambda v: v >= 1, "need >= 1"),
    "trainer.num_nodes": (WHOLE, False, lambda v: v >= 1, "need >= 1"),
    "model.lora.r": (WHOLE, False, lambda v: v >= 0, "the adapters' rank, 0 (no LoRA) or more"),
    "model.lora.alpha": (NUMBER, False, lambda v: v > 0, "must be > 0"),
    "model.lora.dropout": (NUMBER, False, lambda v: 0 <= v < 1, "need 0 <= dropout < 1"),
    "eval.max_problems": (WHOLE, True, lambda v: v >= 1, "null (all) or >= 1"),
    "eval.batch_size": (WHOLE, False, lambda v: v >= 1, "need >= 1"),
    "callbacks.model_checkpoint.every_n_train_steps": (WHOLE, True, lambda v: v >= 0, "null or >= 0"),
    "callbacks.model_checkpoint.save_top_k": (WHOLE, False, lambda v: v >= -1, "-1 (all) or >= 0"),
}


def _is_number(value, kind: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return kind == NUMBER or isinstance(value, int)


def _refuse(key: str, value, allowed: str):
    raise ConfigError(f"{key}={printable(repr(value))} is not allowed: {allowed}")


def number(key: str, value, kind: str = NUMBER, null: bool = False, test=None, allowed: str = "") -> None:
    """One numeric setting: its type (Hydra gives `optim.lr=abc` as a string), finiteness, range."""
    if value is None:
        if not null:
            _refuse(key, value, f"{kind} is needed ({allowed})")
        return
    if not _is_number(value, kind):
        _refuse(key, value, f"{kind}{' or null' if null else ''} ({allowed})" if allowed else kind)
    if not math.isfinite(value):
        _refuse(key, value, f"must be finite ({allowed})" if allowed else "must be finite")
    if test is not None and not test(value):
        _refuse(key, value, allowed)


def ranges(cfg: DictConfig) -> None:
    """The settings of `RANGES`, and `optim.betas`."""
    for key, (kind, null, test, allowed) in RANGES.items():
        if OmegaConf.select(cfg, key, default="<absent>", throw_on_missing=False) != "<absent>":
            number(key, OmegaConf.select(cfg, key), kind, null, test, allowed)
    betas = OmegaConf.select(cfg, "optim.betas")
    if betas is not None:
        ok = isinstance(betas, ListConfig) and len(betas) == 2 and all(_is_number(b, NUMBER) for b in betas)
        if not (ok and all(0 <= b < 1 for b in betas)):
            _refuse("optim.betas", OmegaConf.to_container(betas) if isinstance(betas, ListConfig) else betas,
                    "two values in [0, 1)")


def _leaves(cfg: DictConfig):
    """(dotted key, value) of every leaf, interpolations unresolved (`${...}` strings)."""

    def walk(node, prefix: str):
        for k, v in node.items() if isinstance(node, dict) else enumerate(node):
            key = f"{prefix}.{k}" if isinstance(node, dict) else f"{prefix}[{k}]"
            if isinstance(v, (dict, list)):
                yield from walk(v, key)
            else:
                yield key.lstrip("."), v

    return walk(OmegaConf.to_container(cfg, resolve=False), "")


def finite(cfg: DictConfig) -> None:
    """No setting anywhere is inf or nan (`loss.alpha=inf` would train with a loss of 0)."""
    for key, v in _leaves(cfg):
        if isinstance(v, float) and not math.isfinite(v):
            _refuse(key, v, "must be finite")


def _target_signature(node: DictConfig) -> inspect.Signature | None:
    from hydra.utils import get_object

    target = node.get("_target_")
    try:
        if target == "dftlab.losses.build_loss":  # a loss's parameters are its member's
            from dftlab.losses import REGISTRY

            return inspect.signature(REGISTRY[node.name].__init__) if node.get("name") in REGISTRY else None
        return inspect.signature(get_object(target))
    except (ImportError, AttributeError, TypeError, ValueError):
        return None  # an unknown target is reported when it is built


def _arguments(signature: inspect.Signature | None, node: DictConfig) -> set[str] | None:
    """The keys a `_target_` node may have (None: any, for a target that takes **kwargs)."""
    if signature is None or node.get("_target_") == "dftlab.losses.build_loss":  # a loss names its own
        return None
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def types(cfg: DictConfig) -> None:
    """Every key of a `_target_` object (a task, a callback...) is one of its arguments (`debug=tiny
    data=jsonl` would give TextTask the game's `n_train`), and every argument whose default is a
    number or a boolean gets one: Hydra gives `loss.gamma=abc` as a string."""

    def walk(node: DictConfig, prefix: str) -> None:
        signature = _target_signature(node) if "_target_" in node else None
        allowed = _arguments(signature, node)
        for k in node:
            key = f"{prefix}{k}"
            if allowed is not None and not str(k).startswith("_") and k not in allowed:
                raise ConfigError(f"{key} is not an argument of {node._target_}; its arguments are: "
                                  f"{', '.join(sorted(a for a in allowed if a not in ('self', 'args')))}")
            v = node._get_node(k)._value() if not OmegaConf.is_missing(node, k) else None
            if isinstance(node._get_node(k), DictConfig):
                walk(node[k], f"{key}.")
                continue
            if signature is None or k not in signature.parameters or OmegaConf.is_interpolation(node, k):
                continue
            default = signature.parameters[k].default
            if isinstance(default, bool):
                if v is not None and not isinstance(v, bool):
                    _refuse(key, v, "true or false")
            elif isinstance(default, (int, float)) and v is not None:
                number(key, v, WHOLE if isinstance(default, int) else NUMBER)

    walk(cfg, "")


def missing(cfg: DictConfig) -> None:
    """A required value left out (`???` in its config, e.g. `data=jsonl` without `data.task.path`)."""
    keys = [key for key, v in _leaves(cfg) if v == "???"]
    if keys:
        raise ConfigError(f"{keys[0]} is required: give it on the command line ({keys[0]}=...)"
                          + (f"; also missing: {', '.join(keys[1:])}" if keys[1:] else ""))


def run_id(cfg: DictConfig) -> None:
    if cfg.get("run_id") is not None:
        safe_name(cfg.run_id)


def values(cfg: DictConfig) -> None:
    """What `config.validate` checks of every value, before its range checks of combinations (a
    required value left out is the entry points' check, `missing`: a config may be composed first and
    completed later)."""
    run_id(cfg)
    finite(cfg)
    ranges(cfg)


# --- the environment: files, the GPU, the hub -------------------------------------------------

LOCAL_MARKS = (".", "/", "~")
EMBEDDED_BASE = "embedded-base"  # dftlab.models.EMBEDDED_BASE, not imported from there: it imports torch
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def looks_local(path: str) -> bool:
    """A model or tokenizer path the user means as a folder (hub names are `owner/name`; data paths:
    `data.sources.local_files`)."""
    return str(path).startswith(LOCAL_MARKS) or Path(str(path)).expanduser().exists()


@cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached (never when HF_HUB_OFFLINE is set)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_error(key: str, name: str, what: str) -> ConfigError:
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{host} cannot be reached"
    return ConfigError(
        f"{key}={name!r}: this {what} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and the "
        f"hub is unreachable ({why}): download it where there is a network (`hf download {name}`), or give a "
        f"local copy: {key}=/path/to/it"
    )


def hub_model_cached(name: str, revision: str | None, filename: str = "config.json") -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, filename, revision=revision), str)


def hub_dataset_cached(name: str) -> bool:
    """Whether `datasets` can load this hub dataset offline: its files in the hub cache, or its
    prepared copy in the datasets cache."""
    from datasets import config as datasets_config
    from huggingface_hub import constants

    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}"
    prepared = Path(datasets_config.HF_DATASETS_CACHE) / name.replace("/", "___")
    return hub.is_dir() or prepared.is_dir()


def _model_dir(key: str, path: Path, cfg: DictConfig, need_tokenizer: bool) -> None:
    if not path.is_dir():
        raise ConfigError(f"{key}={str(path)!r}: not a directory (a Hugging Face model folder is needed)")
    gguf = cfg.get("gguf_file")
    if gguf:
        if not (path / gguf).is_file():
            raise ConfigError(f"model.gguf_file={gguf!r}: no such file in {path}")
        return
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(f"{key}={str(path)!r}: no config.json in it, so it is not a Hugging Face model folder "
                          f"(one written by save_pretrained, or a hub snapshot)")
    try:
        json.loads(config.read_text())
    except (ValueError, OSError) as err:
        raise ConfigError(f"{config}: not readable as JSON ({err})") from None
    if need_tokenizer and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(f"{key}={str(path)!r}: no tokenizer files in it ({', '.join(TOKENIZER_FILES)}): "
                          f"give one with model.tokenizer=<folder or hub name>")


def model_architecture(cfg: DictConfig) -> None:
    """A local model whose config.json names an architecture this transformers does not have
    (imports transformers: after the checks that need nothing)."""
    model = cfg.get("model")
    name = None if model is None else model.get("name_or_path")
    config = Path(str(name)).expanduser() / "config.json"
    if name is None or model.get("gguf_file") or model.get("trust_remote_code") or not config.is_file():
        return
    model_type = json.loads(config.read_text()).get("model_type")
    import transformers
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ConfigError(
            f"{config}: model_type {printable(repr(model_type))} is not an architecture this transformers "
            f"({transformers.__version__}) knows; a newer transformers may, or (for a model whose code you trust) "
            f"model.trust_remote_code=true"
        )


def model_source(cfg: DictConfig) -> None:
    """`model.name_or_path` and `model.tokenizer`: a local folder that holds a model (and a known
    architecture), or a hub name that is cached or reachable."""
    model = cfg.get("model")
    if model is None:
        return
    name, tokenizer = model.get("name_or_path"), model.get("tokenizer")
    if name not in (None, EMBEDDED_BASE):
        if looks_local(name):
            path = Path(str(name)).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"model.name_or_path={name!r}: no such directory")
            _model_dir("model.name_or_path", path, model, need_tokenizer=tokenizer is None)
        elif not hub_model_cached(name, model.get("revision"), model.get("gguf_file") or "config.json"):
            if not hub_reachable():
                raise _offline_error("model.name_or_path", name, "model")
    if tokenizer is not None:
        if looks_local(tokenizer):
            if not Path(str(tokenizer)).expanduser().is_dir():
                raise ConfigError(f"model.tokenizer={tokenizer!r}: no such directory")
        elif not hub_model_cached(tokenizer, None, "tokenizer_config.json") and not hub_reachable():
            raise _offline_error("model.tokenizer", tokenizer, "tokenizer")


def data_source(cfg: DictConfig) -> None:
    """`data.task.path`: set; local files (a file, a glob, a folder) that exist, or a hub dataset that
    is cached or reachable."""
    task = OmegaConf.select(cfg, "data.task", default=None)
    if not isinstance(task, DictConfig) or "path" not in task:
        return
    path = task.path
    if path in (None, ""):
        raise ConfigError("data.task.path is not set: give data.task.path=<a file, a glob, a folder or a hub dataset>")
    from dftlab.data.sources import local_files

    if local_files(str(path)) is None and not hub_dataset_cached(str(path)) and not hub_reachable():
        raise _offline_error("data.task.path", str(path), "dataset")


def accelerator(cfg: DictConfig) -> None:
    """A GPU trainer on a machine where torch sees no GPU (or fewer than asked for)."""
    trainer = cfg.get("trainer")
    if trainer is None or str(trainer.get("accelerator")) not in ("gpu", "cuda"):
        return
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ConfigError(
            f"trainer.accelerator={trainer.accelerator}: torch sees no CUDA GPU on this machine"
            f"{f' (CUDA_VISIBLE_DEVICES={visible!r})' if visible is not None else ''}"
            f"{'' if torch.version.cuda else ' (this torch is a CPU build)'}: use trainer=cpu, or run on a GPU machine"
        )
    devices = trainer.get("devices")
    if isinstance(devices, int) and devices > available:
        raise ConfigError(f"trainer.devices={devices}: only {available} GPU(s) visible on this machine")


def chat_template(cfg: DictConfig, tasks) -> None:
    """A task that puts its prompts in the chat template, with a tokenizer that has none (the
    character tokenizer of the embedded base and of `model=scratch` has none)."""
    needs = [(key, t) for key, t in tasks if t is not None and getattr(t, "chat_template", False)]
    model = cfg.get("model")
    if not needs or model is None:
        return
    from dftlab.data.guards import chat_template_of

    source = model.get("tokenizer") or model.get("name_or_path")
    if not chat_template_of(model):  # None or "": none; UNKNOWN (not readable from files) is checked once loaded
        key, task = needs[0]
        what = "the character tokenizer of the embedded base" if source in (None, EMBEDDED_BASE) else repr(source)
        setting = f"{key}.chat_template=false (prompts as plain text) or " if key == "data.task" else ""
        raise ConfigError(f"{key}: {task.name} puts its prompts in the tokenizer's chat template, and {what} has "
                          f"none: set {setting}a model whose tokenizer has one (model.name_or_path or model.tokenizer)")


def tokenizer_chat_template(task, tokenizer, key: str, label: str) -> None:
    """The same, once the tokenizer is loaded (a template inside a GGUF file, or a hub tokenizer
    that was not cached)."""
    if getattr(task, "chat_template", False) and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{key}: {task.name} puts its prompts in the tokenizer's chat template, and the tokenizer "
                          f"of {label} has none")


def train_tasks(cfg: DictConfig) -> list:
    """The data's task and its evaluation task, built (cheap: they read their files later), so that
    their own checks run now. [(key, task)]"""
    from dftlab.config import instantiate

    task = instantiate(cfg.data.task)
    return [("data.task", task), ("data.task.eval_task", getattr(task, "eval_task", None))]


def inputs(cfg: DictConfig) -> None:
    """What `cli.train` checks first, before anything heavy is imported: required values, every
    single value, the data and model files, the hub."""
    missing(cfg)
    values(cfg)
    data_source(cfg)
    model_source(cfg)


def data_rows(tasks) -> None:
    """A local data file read now, so that its bad rows (or a corrupt file) are refused before the
    base is built (a hub dataset is read when the run starts)."""
    for key, task in tasks:
        path = getattr(task, "path", None)
        if key == "data.task" and path and Path(str(path)).expanduser().exists():
            task.skipped()


def environment(cfg: DictConfig, tasks=None) -> None:
    """What `cli.train` checks after `config.validate`, before the model is resolved (the embedded
    base possibly built): the GPU, the architecture, the chat template, the embedded base's
    tokenizer on the first rows, a local data file's rows."""
    from dftlab.data.guards import check_head

    accelerator(cfg)
    model_architecture(cfg)
    tasks = train_tasks(cfg) if tasks is None else tasks
    chat_template(cfg, tasks)
    check_head(cfg.model, cfg.data)  # before the whole file is read: a tokenizer that cannot read it says so first
    data_rows(tasks)
