"""What the entry points run (`train.py`, `eval.py`): the embedded base is resolved here, once,
before the run is set up."""

from __future__ import annotations

from omegaconf import DictConfig

from dftlab.config import validate
from dftlab.data.guards import check as check_data
from dftlab.embedded_base import resolve_model
from dftlab.run import run


def train(cfg: DictConfig) -> dict:
    """Validate, find (or build) the model to start from, train; returns the run's summary."""
    validate(cfg)
    check_data(cfg)  # before the embedded base is built: minutes on a fresh machine
    return run(cfg, resolve_model(cfg))
