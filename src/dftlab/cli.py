"""What the entry points run (`train.py`, `eval.py`): the checks that need no model, then the
embedded base, resolved here, once, before the run is set up."""

from __future__ import annotations

from omegaconf import DictConfig

from dftlab import checks


def train(cfg: DictConfig) -> dict:
    """Check what needs no model (values, files, the hub, the GPU), find (or build) the model to
    start from, train; returns the run's summary. The heavy imports come after the first checks."""
    checks.inputs(cfg)
    from dftlab.config import validate

    validate(cfg)
    checks.environment(cfg)
    from dftlab.embedded_base import resolve_model
    from dftlab.run import run

    return run(cfg, resolve_model(cfg))


def evaluate(cfg: DictConfig) -> dict:
    """What `eval.py` runs: the model named on the command line checked first (a folder, the hub),
    then the evaluation (`dftlab.eval_run`)."""
    checks.run_id(cfg)
    if not (cfg.get("run") or cfg.get("ckpt")):
        checks.missing(cfg)
        checks.model_source(cfg)
    from dftlab.eval_run import evaluate_from_config
    from dftlab.run import quiet_logs

    quiet_logs()
    return evaluate_from_config(cfg)
