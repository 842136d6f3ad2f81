"""The embedded base model: built once by `python train.py experiment=base`, then cached.

DFT needs a model that already has a prior (from random weights p ~ 1/V and its weight is ~0), so
the default fine-tune starts from a small base pre-trained with plain NLL on the game's own base
corpus. Its cache key is a hash of everything that defines it (model, data, loss, optimizer,
steps, seed): change any of them and a new base is built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dftlab.config import compose_config
from dftlab.models import EMBEDDED_BASE
from dftlab.run import run

log = logging.getLogger(__name__)

_KEY_FIELDS = ("model", "data", "loss", "optim", "engine", "seed")


def base_config(cfg: DictConfig) -> DictConfig:
    return compose_config(["experiment=base", *cfg.model.get("base_overrides", [])])


def base_key(base_cfg: DictConfig) -> str:
    # resolved in place: a value may refer outside its own section (data.cache_dir -> paths)
    spec = {k: OmegaConf.to_container(OmegaConf.select(base_cfg, k), resolve=True) for k in _KEY_FIELDS[:-1]}
    spec["seed"] = base_cfg.seed
    spec["data"].pop("cache_dir", None)  # where tokenised data is cached does not define the base
    spec["steps"] = [base_cfg.trainer.max_steps, base_cfg.trainer.max_epochs]
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def ensure_base(cfg: DictConfig) -> Path:
    """The base model's directory (Hugging Face format), built first if it is missing.

    Under `trainer.fast_dev_run` a missing base is not built in full: a one-step stand-in is built
    in the run directory, so a smoke test stays fast on a fresh machine.
    """
    base_cfg = base_config(cfg)
    path = Path(cfg.paths.cache_dir) / f"base-{base_key(base_cfg)}"
    if (path / "config.json").exists():
        return path
    fast = bool(OmegaConf.select(cfg, "trainer.fast_dev_run", default=False))  # eval.yaml has no trainer
    if fast:
        build = Path(cfg.paths.output_dir) / "base-fast-dev-run"
    else:
        build = path.with_name(f".{path.name}.building-{os.getpid()}")
    OmegaConf.update(base_cfg, "paths.output_dir", str(build))
    OmegaConf.update(base_cfg, "paths.cache_dir", str(cfg.paths.cache_dir))
    if fast:
        OmegaConf.update(base_cfg, "trainer.fast_dev_run", True)
        OmegaConf.update(base_cfg, "eval.enabled", False)
        log.info("fast_dev_run: building a one-step stand-in for the missing base in %s", build)
        run(base_cfg)
        return build / "export"
    log.info("building the embedded base (once; see README) into %s", path)
    run(base_cfg)
    shutil.move(str(build / "export"), str(path))  # one rename: the cache never holds half a base
    shutil.move(str(build), str(path / "build"))
    return path


def resolve_model(cfg: DictConfig) -> DictConfig:
    """A resolved copy of `cfg.model` in which `embedded-base` is the base's directory (built first
    when it is missing)."""
    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    if model_cfg.name_or_path == EMBEDDED_BASE:
        model_cfg.name_or_path = str(ensure_base(cfg))
    return model_cfg
