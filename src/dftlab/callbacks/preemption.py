"""Preemption: on SIGTERM, SIGUSR1 (what SLURM sends before it stops a job) or SIGINT, finish the
current optimizer step, save the last checkpoint, and stop cleanly; optionally requeue the SLURM job.

The checkpoint is written at an optimizer-step boundary, never inside an accumulation window, so
a resumed run continues exactly (`ckpt_path=last` in the same run directory). A signal that arrives
during a pass between steps (evaluation during training, token histograms) stops that pass at its
next batch (`dftlab.stopping`); the callback running it calls `stop_from_callback`.
"""

from __future__ import annotations

import logging
import os
import subprocess
from contextlib import ExitStack

import lightning as L
import torch

from dftlab import stopping

log = logging.getLogger(__name__)


class Preempted(SystemExit):
    """Raised after the checkpoint is saved: it ends `fit` at once, before anything else (end-of-epoch
    validation, other checkpoints) runs and marks the interrupted epoch as finished."""


class Preemption(L.Callback):
    def __init__(self, signals: tuple[str, ...] = stopping.DEFAULT_SIGNALS, requeue: bool = False):
        self.signals = list(signals)
        self.requeue = requeue
        self._asked = False  # a stop asked for without a signal (tests)
        self.saved = False
        self._handlers = ExitStack()
        self._last_step = -1

    @property
    def requested(self) -> bool:
        return self._asked or stopping.requested() is not None

    @requested.setter
    def requested(self, value: bool) -> None:
        self._asked = value

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step
        # replaces Lightning's own SIGTERM notifier, which stops inside an accumulation window
        if self.signals:
            self._handlers.enter_context(stopping.on_signals(self.signals))
        if self.requested:  # arrived while the run was being set up: nothing new to save
            raise Preempted(0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Saved where Lightning's own checkpoints are (its restart logic assumes it), stopped when the
        # next batch starts: in between, Lightning logs the finished step.
        if trainer.global_step == self._last_step:
            return  # in the middle of an optimizer step: its micro-batches are not all done
        self._last_step = trainer.global_step
        requested = self.requested
        if trainer.world_size > 1:  # any rank's signal stops every rank at the same step
            flag = torch.tensor(float(requested), device=pl_module.device)
            requested = bool(trainer.strategy.reduce(flag, reduce_op="max").item())
        if requested:
            self.save(trainer)

    def save(self, trainer) -> None:
        """Save `last.ckpt` now (at a step boundary); the next batch is not trained."""
        if self.saved:
            return
        path = os.path.join(trainer.default_root_dir, "checkpoints", "last.ckpt")
        trainer.save_checkpoint(path, weights_only=False)  # everything: optimizer, loops, data position
        log.warning("preempted at step %d: checkpoint saved to %s", trainer.global_step, path)
        if self.requeue and trainer.is_global_zero and os.environ.get("SLURM_JOB_ID"):
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)
        self.saved = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.saved:  # this batch is not trained: the resumed run reads it again
            raise Preempted(0)

    def teardown(self, trainer, pl_module, stage) -> None:
        self._handlers.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._handlers.close()  # a fit that ends by an exception (Preempted too) calls no teardown


def stop_from_callback(trainer, hook: str) -> None:
    """A pass run by a callback was stopped by a signal (`stopping.StopRequested`) in `hook`.

    - `on_train_batch_end`: the step is finished: save it; the next batch start stops the run.
    - `on_train_end`: training is finished: save that state, and stop.
    - `on_train_start`, `on_fit_end`: nothing was trained since the checkpoint the run started
      from (or since step 0): stop without saving.
    The resumed run measures the interrupted point again (the callbacks skip the points on disk).
    """
    preemption = next((cb for cb in trainer.callbacks if isinstance(cb, Preemption)), None)
    if preemption is not None and hook in ("on_train_batch_end", "on_train_end"):
        preemption.save(trainer)
        if hook == "on_train_batch_end":
            return
    raise Preempted(0)
