"""What the entry points run (`train.py`, `eval.py`): the embedded base is resolved here, once,
before the run is set up."""

from __future__ import annotations

from omegaconf import DictConfig

from dftlab import checks
from dftlab.config import validate
from dftlab.embedded_base import resolve_model
from dftlab.run import run


def train(cfg: DictConfig) -> dict:
    """Validate, check what needs no model (files, the GPU, the hub), find (or build) the model to
    start from, train; returns the run's summary."""
    validate(cfg)
    checks.environment(cfg)
    return run(cfg, resolve_model(cfg))
