"""Learning-rate schedules: callables of (optimizer, total optimizer steps), built by `optim.schedule`."""

from __future__ import annotations

import math

import torch

from dftlab.errors import ConfigError


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_ratio: float = 0.1,
    min_lr_ratio: float = 0.0,
    warmup_from_zero: bool = False,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_ratio` of the steps, then cosine decay to `min_lr_ratio` of the
    peak; `min_lr_ratio=1` is constant after warm-up. The first step is at 1 / (warmup + 1) of the
    peak, or, with `warmup_from_zero`, at lr 0 (step / warmup, as Hugging Face's cosine schedule and
    the public DFT code: its first update only moves the optimizer's moments)."""
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup if warmup_from_zero else (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def planned_steps(trainer) -> int:
    """The optimizer steps the run will take (the schedule's length), from the trainer's bounds and its
    data module's epoch, as Lightning's `estimated_stepping_batches` counts them.

    Not that property itself: it sets up the training loader when the optimizer is configured, which is
    before a resumed run's checkpoint is restored, and Lightning loads the saved position in the epoch
    into a loader only when it sets the loader up after the restore; the resumed epoch would start again
    from its first batch."""
    datamodule = trainer.datamodule
    if trainer.max_epochs == -1 or not hasattr(datamodule, "micro_batches_per_epoch"):
        total = trainer.estimated_stepping_batches  # -1 epochs: max_steps, without touching the data
    else:
        batches, limit = datamodule.micro_batches_per_epoch(), trainer.limit_train_batches
        batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
        total = math.ceil(batches / trainer.accumulate_grad_batches) * max(trainer.max_epochs, 1)
        if trainer.max_steps != -1:
            total = min(total, trainer.max_steps)
    if total == float("inf"):
        raise ConfigError("trainer.max_steps=-1 and trainer.max_epochs=-1: the run has no end, and the learning-rate "
                          "schedule needs its length; set one of them")
    return max(1, int(total))
