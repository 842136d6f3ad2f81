"""Fine-tune a causal LM with a token-weighted loss.

    python train.py loss=dft                      # the embedded default: CPU, offline, minutes
    python train.py -m loss=sft,dft optim.lr=1e-3,3e-3
"""

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

import dftlab.config  # noqa: F401  (registers the config resolvers)

os.environ.setdefault("DFTLAB_ROOT", os.path.dirname(os.path.abspath(__file__)))
log = logging.getLogger("dftlab")


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from dftlab.cli import train
    from dftlab.errors import ConfigError

    try:
        summary = train(cfg)
    except (ConfigError, FileNotFoundError) as err:
        log.error("%s", err)
        sys.exit(2)
    return summary.get("val_ce")


if __name__ == "__main__":
    main()
