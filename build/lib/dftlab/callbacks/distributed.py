"""Collectives that callbacks share."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


def gather_uneven(trainer: L.Trainer, values: Tensor) -> Tensor:
    """Every rank's 1-D `values`, concatenated in rank order: shares differ in length, all_gather
    needs one shape, so each share is padded to the longest and cut back after the gather."""
    if trainer.world_size == 1:
        return values
    sizes = trainer.strategy.all_gather(torch.tensor([values.numel()], device=values.device)).flatten().tolist()
    padded = values.new_zeros(max(sizes))
    padded[: values.numel()] = values
    gathered = trainer.strategy.all_gather(padded)
    return torch.cat([row[:n] for row, n in zip(gathered, sizes)])
