"""Evaluate a model on a task's test splits: greedy accuracy, and Average@k with eval.samples.

    python eval.py run=logs/runs/<run>                          # a finished run: its export, its task
    python eval.py ckpt=logs/runs/<run>/checkpoints/last.ckpt   # a Lightning checkpoint
    python eval.py                                              # the embedded base (built if missing)
    python eval.py model.name_or_path=Qwen/Qwen2.5-Math-1.5B eval_task=math 'eval.samples={n: 16}'
"""

import os

import hydra
from omegaconf import DictConfig

import dftlab.config  # noqa: F401  (registers the config resolvers)
from dftlab import entry

os.environ.setdefault("DFTLAB_ROOT", os.path.dirname(os.path.abspath(__file__)))


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    from dftlab.cli import evaluate

    entry.run_task(evaluate, cfg)


if __name__ == "__main__":
    entry.main(main)
