"""Micro-batches that know the size of their optimizer step.

The loss of an optimizer step is the sum of per-token losses over every target token of every
micro-batch on every rank, divided by the number of those tokens. Lightning's gradient
accumulation averages per-micro-batch means instead, which is wrong for token losses. Every
example's number of target tokens is known once it is tokenised, so this sampler, which decides
every step's examples for all ranks, attaches the step's global count to each of its
micro-batches: the module scales once, exactly, with no extra communication.

A step's examples are dealt to ranks round-robin (no padding, no repeats) and each rank's share is
cut into micro-batches. Every rank yields the same number of micro-batches per step, so the
collectives of distributed training stay in lockstep; a rank whose share runs out first (the
epoch's last, partial step) yields empty micro-batches, which carry no targets.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler

from dftlab.settings import BatchPlan

EMPTY = -1  # row index of an empty micro-batch's placeholder


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields micro-batches as lists of (row index, target tokens in the whole step)."""

    def __init__(
        self,
        target_counts: list[int],
        global_batch: int,
        micro_batch: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ):
        self.plan = BatchPlan(global_batch, world_size, micro_batch)  # refuses a step that does not split
        self.counts = target_counts
        self.global_batch, self.micro_batch = global_batch, micro_batch
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed = shuffle, seed
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, micro-batches already trained)

    @property
    def accumulation(self) -> int:
        return self.plan.accumulation

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, done: int) -> None:
        """Skip the first `done` micro-batches of `epoch` (once), as a resumed run must."""
        self._resume = (epoch, done)

    def steps(self, epoch: int) -> list[list[int]]:
        """The row indices of every optimizer step of `epoch`, all ranks together."""
        n = len(self.counts)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        return [order[i : i + self.global_batch] for i in range(0, n, self.global_batch)]

    def micro_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        out = []
        for step in self.steps(epoch):
            tokens = sum(self.counts[i] for i in step)
            share = step[self.rank :: self.world_size]
            n_micro = math.ceil(math.ceil(len(step) / self.world_size) / self.micro_batch)
            for m in range(n_micro):
                rows = share[m * self.micro_batch : (m + 1) * self.micro_batch] or [EMPTY]
                out.append([(i, tokens) for i in rows])
        return out

    def __len__(self) -> int:
        n, g = len(self.counts), self.global_batch
        full, last = divmod(n, g)
        per_rank_last = math.ceil(last / self.world_size)
        return full * self.accumulation + math.ceil(per_rank_last / self.micro_batch)

    def __iter__(self):
        batches = self.micro_batches(self.epoch)
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
            self._resume = None
        yield from batches[start:]
