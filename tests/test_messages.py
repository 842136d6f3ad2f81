"""What a user is told: one escaped line and status 2 for a mistake; W&B under fast_dev_run; the
progress bar of a run bounded by steps; a non-finite validation loss; the base build's first point."""

import logging
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from dftlab import entry
from dftlab.callbacks.progress import RichStepsBar
from dftlab.config import compose_config
from dftlab.errors import ConfigError
from dftlab.formats.eval_points import DIR, POINTS, read_points
from dftlab.run import build_trainer, run
from tests.conftest import fast_cfg


def test_a_mistake_is_one_escaped_line_and_status_2(caplog, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def task(cfg):
        raise ConfigError("data.task.columns.prompt='q\x1b[2J' is not a column of x.jsonl")

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as done:
        entry.run_task(task, None)
    assert done.value.code == 2
    assert caplog.messages == ["data.task.columns.prompt='q\\x1b[2J' is not a column of x.jsonl"]
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the traceback, for whoever wants it
    with pytest.raises(ConfigError):
        entry.run_task(task, None)


def test_fast_dev_run_says_that_wandb_is_off(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        build_trainer(fast_cfg(tmp_path, "logger=wandb", "trainer.fast_dev_run=true"))
    assert sum("nothing goes to W&B" in m and "trainer.max_steps=2" in m for m in caplog.messages) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_trainer(fast_cfg(tmp_path, "trainer.fast_dev_run=true"))
    assert not any("W&B" in m for m in caplog.messages)


@pytest.mark.parametrize("max_epochs, max_steps, expected", [(-1, 800, "Epoch 2 (to step 800)"), (3, -1, "Epoch 2/2")])
def test_the_progress_bar_of_a_run_bounded_by_steps(max_epochs, max_steps, expected):
    bar = RichStepsBar()
    bar._trainer = SimpleNamespace(max_epochs=max_epochs, max_steps=max_steps)
    assert bar._get_train_description(2).strip() == expected


def test_the_base_build_does_not_measure_its_random_start(run_dir):
    assert compose_config(["experiment=base"]).callbacks.eval_during_training.at_start is False
    run(fast_cfg(run_dir, "callbacks.eval_during_training.at_start=false",
                 "callbacks.eval_during_training.every_n_steps=1", "eval.enabled=false"))
    assert sorted({p["step"] for p in read_points(run_dir / DIR / POINTS)}) == [1, 2]


class PoisonTheLastStep(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == trainer.max_steps:
            with torch.no_grad():
                next(pl_module.policy.lm.parameters()).fill_(float("nan"))


def test_a_non_finite_validation_loss_is_reported_as_such(run_dir, caplog, monkeypatch):
    """The validation sums keep NaN (they dropped it, and reported 0)."""
    from dftlab import run as run_module

    original = run_module.build_trainer
    monkeypatch.setattr(run_module, "build_trainer", lambda cfg, extra=(): original(cfg, [*extra, PoisonTheLastStep()]))
    with caplog.at_level(logging.ERROR):
        summary = run(fast_cfg(run_dir, "eval.enabled=false", "~callbacks.token_histograms",
                               "~callbacks.eval_during_training"))
    assert math.isnan(summary["val_ce"])
    assert any("validation cross-entropy is nan" in m for m in caplog.messages)
