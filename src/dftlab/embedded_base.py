"""The embedded base model: built once by `python train.py experiment=base`, then cached.

DFT needs a model that already has a prior (from random weights p ~ 1/V and its weight is ~0), so
the default fine-tune starts from a small base pre-trained with plain NLL on the game's own base
corpus. Its cache key is a hash of everything that defines it (model, data, loss, optimizer,
steps, seed): change any of them and a new base is built.

The build is an ordinary run in `<cache>/.base-<key>.build/`, a directory named by the key: stopped
by a signal (it saves its checkpoint) or killed, it is resumed from its last checkpoint by the next
command that needs the base, with the same steps and the same final weights. A lock
(`<cache>/.base-<key>.lock`, `dftlab.locks`) lets one process build while another that needs the same
base waits for it.
Once built, the export becomes `base-<key>/` in one rename and the build's run directory moves
inside it (`base-<key>/build/`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dftlab import locks
from dftlab.config import compose_config
from dftlab.models import EMBEDDED_BASE
from dftlab.run import run
from dftlab.stopping import StopRequested

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
    """The base model's directory (Hugging Face format), built (or its build resumed) first if it is
    missing.

    Under `trainer.fast_dev_run` a missing base is not built in full: a one-step stand-in is built
    in the run directory, so a smoke test stays fast on a fresh machine.
    """
    base_cfg = base_config(cfg)
    key = base_key(base_cfg)
    cache = Path(cfg.paths.cache_dir)
    path = cache / f"base-{key}"
    if (path / "config.json").exists():
        return path
    OmegaConf.update(base_cfg, "paths.cache_dir", str(cache))
    if OmegaConf.select(cfg, "trainer.fast_dev_run", default=False):  # eval.yaml has no trainer
        build = Path(cfg.paths.output_dir) / "base-fast-dev-run"
        OmegaConf.update(base_cfg, "paths.output_dir", str(build))
        OmegaConf.update(base_cfg, "trainer.fast_dev_run", True)
        OmegaConf.update(base_cfg, "eval.enabled", False)
        log.info("fast_dev_run: building a one-step stand-in for the missing base in %s", build)
        run(base_cfg)
        return build / "export"
    cache.mkdir(parents=True, exist_ok=True)
    with locks.exclusive(cache, f"the embedded base {path} is being built", name=f".base-{key}.lock", wait=True):
        if (path / "config.json").exists():  # built by the process this one waited for
            return path
        remove_abandoned(cache)
        build = cache / f".base-{key}.build"
        last = build / "checkpoints" / "last.ckpt"
        shutil.rmtree(build / "export", ignore_errors=True)  # half written when the build was killed
        OmegaConf.update(base_cfg, "paths.output_dir", str(build))
        OmegaConf.update(base_cfg, "ckpt_path", str(last) if last.exists() else None)
        if last.exists():
            log.info("resuming the build of the embedded base from %s", last)
        else:
            log.info("building the embedded base (once; see README) into %s", path)
        summary = run(base_cfg, resume_hint="run the same command again to resume the build of the embedded base")
        if summary.get("preempted"):
            raise StopRequested(summary["stopped_by"])
        shutil.move(str(build / "export"), str(path))  # one rename: the cache never holds half a base
        shutil.move(str(build), str(path / "build"))
    return path


def remove_abandoned(cache: Path) -> None:
    """Builds of earlier versions, named by the process that ran them (`.base-<key>.building-<pid>`),
    whose process has ended: they cannot be resumed."""
    for old in cache.glob(".base-*.building-*"):
        match = re.fullmatch(r"\.base-\w+\.building-(\d+)", old.name)
        if match and not locks.pid_alive(int(match.group(1))):
            log.info("removing %s, left by an interrupted build", old)
            shutil.rmtree(old, ignore_errors=True)


def resolve_model(cfg: DictConfig) -> DictConfig:
    """A resolved copy of `cfg.model` in which `embedded-base` is the base's directory (built first
    when it is missing)."""
    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    if model_cfg.name_or_path == EMBEDDED_BASE:
        model_cfg.name_or_path = str(ensure_base(cfg))
    return model_cfg
