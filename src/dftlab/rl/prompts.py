"""The training batches of an online rollout: prompts, not demonstrations.

`PromptDataModule` wraps a task's DataModule: validation, the tokenizer, the encoded training rows
(for the token histograms) and everything else are the wrapped module's; its training batches are
the task's training prompts, `data.batch_size` prompts per optimizer step (all ranks), cut into
micro-batches of `data.micro_batch_size` prompts. Every micro-batch of a step carries the rank's
whole share of the step, so that the rollout samples the whole share at once (and knows the step's
number of completion tokens before the first backward pass, for the exact normalisation), and each
step is repeated `ppo_epochs` times: that many optimizer steps on the same samples. The epoch's
last, partial step is dropped (its repeats would not line up with the accumulation).
"""

from __future__ import annotations

import lightning as L
import torch

from dftlab.data.datamodule import StepDataLoader
from dftlab.data.sampler import StepBatchSampler
from dftlab.errors import ConfigError


class RolloutSampler(StepBatchSampler):
    """Micro-batches of (row, (epoch, step, micro, repeat, micro-batches per step)) keys."""

    def __init__(self, n_rows: int, global_batch: int, micro_batch: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, seed: int = 0, repeats: int = 1):
        super().__init__([1] * n_rows, global_batch, micro_batch, rank, world_size, shuffle, seed)
        self.repeats = repeats
        if n_rows < global_batch:
            raise ConfigError(f"data.batch_size={global_batch} prompts per step, and the task has only {n_rows} "
                              f"training prompts")

    def micro_batches(self, epoch: int) -> list[list[tuple[int, tuple]]]:
        out = []
        for s, step in enumerate(self.steps(epoch)):
            if len(step) < self.global_batch:
                break
            share = step[self.rank :: self.world_size]
            for k in range(self.repeats):
                for m in range(self.accumulation):
                    out.append([(i, (epoch, s, m, k, self.accumulation)) for i in share])
        return out

    def __len__(self) -> int:
        return len(self.counts) // self.global_batch * self.repeats * self.accumulation


class PromptRows:
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, tuple]) -> tuple[int, dict, tuple]:
        i, tag = key
        return i, self.rows[i], tag


def collate_prompts(items: list[tuple[int, dict, tuple]]) -> dict:
    epoch, step, micro, repeat, n_micro = items[0][2]
    return {"prompt_rows": [row for _, row, _ in items], "row_ids": torch.tensor([i for i, _, _ in items]),
            "epoch": epoch, "step": step, "micro": micro, "repeat": repeat, "n_micro": n_micro}


class PromptDataModule(L.LightningDataModule):
    """`inner`'s data with prompt batches for training (see the module docstring)."""

    def __init__(self, inner, ppo_epochs: int = 1):
        super().__init__()
        self.inner, self.ppo_epochs = inner, ppo_epochs
        self.prompts: list[dict] | None = None

    def __getattr__(self, name: str):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def setup(self, stage: str | None = None) -> None:
        self.inner.trainer = self.trainer
        self.inner.setup(stage)
        if self.prompts is None:
            self.prompts = self.inner.task.train()

    def _progress(self) -> tuple[int, int]:
        return self.trainer.current_epoch, self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> StepDataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        plan = self.inner.plan(world)
        sampler = RolloutSampler(len(self.prompts), plan.global_batch, plan.micro, rank, world, True, self.inner.seed,
                                 self.ppo_epochs)
        return StepDataLoader(PromptRows(self.prompts), batch_sampler=sampler, collate_fn=collate_prompts,
                              progress=self._progress)

    def val_dataloader(self):
        return self.inner.val_dataloader()
