"""Rejection sampling: n completions of every training prompt, graded, written as training data.

    python generate.py                                  # the embedded base on the game: n=4, temperature 1.0
    python generate.py run=logs/runs/<run> n=8          # a finished run's export (or ckpt=..., model=hf ...)
    python generate.py sampling=qwen2.5-math-1.5b_numina   # the DFT paper's: Qwen2.5-Math-1.5B on NuminaMath
    python generate.py run_id=<id>                      # resume an interrupted one (finished shards are kept)

Writes accepted.jsonl (RFT / DFT data), pairs.jsonl (DPO data) and counts.json to logs/samples/<run_id>.
"""

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

import dftlab.config  # noqa: F401  (registers the config resolvers)

os.environ.setdefault("DFTLAB_ROOT", os.path.dirname(os.path.abspath(__file__)))
log = logging.getLogger("dftlab")


@hydra.main(version_base="1.3", config_path="configs", config_name="generate")
def main(cfg: DictConfig) -> None:
    from dftlab.errors import ConfigError
    from dftlab.rl.generate_run import generate_from_config
    from dftlab.run import quiet_logs

    quiet_logs()
    try:
        generate_from_config(cfg)
    except (ConfigError, FileNotFoundError) as err:
        log.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
