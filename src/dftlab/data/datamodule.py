"""The LightningDataModule: a task's examples, tokenised, in one batch per optimizer step."""

from __future__ import annotations

import math
from collections import Counter

import lightning as L
from torch.utils.data import DataLoader

from dftlab.data.collate import collate
from dftlab.data.encode import Encoded, encode
from dftlab.data.sampler import EMPTY, StepBatchSampler
from dftlab.errors import ConfigError


class EncodedDataset:
    """Indexed by the sampler's (row, step tokens) keys."""

    def __init__(self, rows: list[Encoded]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Encoded | None, int]:
        i, step_tokens = key
        return i, (None if i == EMPTY else self.rows[i]), step_tokens


class DataModule(L.LightningDataModule):
    """`batch_size` is the global batch of one optimizer step (all ranks, all micro-batches).

    `micro_batch_size` is what one forward/backward pass holds: a memory setting only (null: a
    rank's whole share of the step, no accumulation). The number of micro-batches per step follows
    from the two and the number of ranks.
    """

    def __init__(
        self,
        task,
        batch_size: int = 32,
        micro_batch_size: int | None = None,
        max_length: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        tokenizer=None,
    ):
        super().__init__()
        self.task = task
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.max_length, self.num_workers, self.seed = max_length, num_workers, seed
        self.tokenizer = tokenizer
        self.datasets: dict[str, EncodedDataset] = {}
        self.skipped: dict[str, Counter] = {}

    def micro(self, world_size: int) -> int:
        """Rows per forward/backward pass; an impossible combination says which numbers to change."""
        per_rank, rem = divmod(self.batch_size, world_size)
        if rem or not per_rank:
            raise ConfigError(
                f"data.batch_size={self.batch_size} (the global batch) does not divide over "
                f"{world_size} ranks: make it a multiple of {world_size}"
            )
        micro = self.micro_batch_size or per_rank
        if per_rank % micro:
            raise ConfigError(
                f"data.batch_size={self.batch_size} over {world_size} rank(s) is {per_rank} rows a rank, "
                f"not a multiple of data.micro_batch_size={micro}: choose a micro-batch that divides {per_rank}"
            )
        return micro

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each rank."""
        return self.batch_size // world_size // self.micro(world_size)

    def _encode(self, split: str, rows: list[dict[str, str]]) -> EncodedDataset:
        kept, skipped = [], Counter()
        for row in rows:
            e = encode(self.tokenizer, row["prompt"], row["response"], self.max_length, self.task.chat_template)
            if e is None:
                skipped["truncated_away"] += 1
            else:
                skipped["truncated_partly"] += e.truncated
                kept.append(e)
        if not kept:
            raise ConfigError(f"the {split} split of data.task is empty after tokenisation ({dict(skipped)})")
        self.skipped[split] = skipped
        return EncodedDataset(kept)

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            raise RuntimeError("DataModule.tokenizer must be set before setup()")
        if "train" not in self.datasets:
            self.datasets["train"] = self._encode("train", self.task.train())
            self.datasets["val"] = self._encode("val", self.task.val())

    def collate_fn(self, items):
        return collate(items, pad_id=self.tokenizer.pad_token_id)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, split: str, global_batch: int, shuffle: bool) -> DataLoader:
        rank, world = self._world()
        counts = [e.n_targets for e in self.datasets[split].rows]
        sampler = StepBatchSampler(counts, global_batch, self.micro(world), rank, world, shuffle, self.seed)
        return DataLoader(
            self.datasets[split],
            batch_sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        world = self._world()[1]
        return self._loader("val", self.micro(world) * world, shuffle=False)

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.datasets["train"]) / self.batch_size)
