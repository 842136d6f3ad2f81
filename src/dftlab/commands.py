"""The console commands `dftlab-train` and `dftlab-eval` (and what `python train.py` / `python eval.py` run
in a checkout): Hydra apps over the packaged configs, with the same arguments, and the exit statuses
of `dftlab.entry` (2 for a configuration or data error, 0 after a stop signal, 130 after Ctrl-C).

Runs are written under the working directory's `logs/` (`paths.root_dir`, `$DFTLAB_ROOT`; a checkout's
train.py points it at the checkout). The embedded base and the tokenised data are cached in
`$DFTLAB_CACHE`, which an installed command defaults to the user's cache folder (`$XDG_CACHE_HOME/dftlab`,
else `~/.cache/dftlab`), so that the base is built once per machine, not once per working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dftlab import entry
from dftlab.config import CONFIG_DIR


def user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dftlab"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def train_app(cfg: DictConfig) -> float | None:
    from dftlab import cli

    return entry.run_task(cli.train, cfg).get("val_ce")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def eval_app(cfg: DictConfig) -> None:
    from dftlab import cli

    entry.run_task(cli.evaluate, cfg)


def _installed() -> None:
    if "DFTLAB_ROOT" not in os.environ:  # not a checkout's train.py: the base is cached per user
        os.environ.setdefault("DFTLAB_CACHE", str(user_cache()))


def train() -> None:
    """`dftlab-train`: `python train.py` for an installed package."""
    _installed()
    entry.main(train_app)


def evaluate() -> None:
    """`dftlab-eval`: `python eval.py` for an installed package."""
    _installed()
    entry.main(eval_app)
