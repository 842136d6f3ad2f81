"""Fine-tune a causal LM with a token-weighted loss.

    python train.py loss=dft                      # the embedded default: CPU, offline, minutes
    python train.py -m loss=sft,dft optim.lr=1e-3,3e-3
"""

import os

import hydra
from omegaconf import DictConfig

import dftlab.config  # noqa: F401  (registers the config resolvers)
from dftlab import entry

os.environ.setdefault("DFTLAB_ROOT", os.path.dirname(os.path.abspath(__file__)))


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from dftlab.cli import train

    return entry.run_task(train, cfg).get("val_ce")


if __name__ == "__main__":
    entry.main(main)
