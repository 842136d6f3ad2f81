"""Preemption: on SIGTERM or SIGUSR1 (what SLURM sends before it stops a job), finish the current
optimizer step, save the last checkpoint, and stop cleanly; optionally requeue the SLURM job.

The checkpoint is written at an optimizer-step boundary, never inside an accumulation window, so
a resumed run continues exactly (`ckpt_path=last` in the same run directory).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess

import lightning as L
import torch

log = logging.getLogger(__name__)


class Preempted(SystemExit):
    """Raised after the checkpoint is saved: it ends `fit` at once, before anything else (end-of-epoch
    validation, other checkpoints) runs and marks the interrupted epoch as finished."""


class Preemption(L.Callback):
    def __init__(self, signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1"), requeue: bool = False):
        self.signals = [getattr(signal, name) for name in signals]
        self.requeue = requeue
        self.requested = False
        self.saved = False
        self._previous: dict[int, object] = {}
        self._last_step = -1

    def _handler(self, signum, frame) -> None:
        log.warning("received %s: saving a checkpoint at the end of this optimizer step", signal.Signals(signum).name)
        self.requested = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step
        # replaces Lightning's own SIGTERM notifier, which stops inside an accumulation window
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handler)

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
        if not requested:
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
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
