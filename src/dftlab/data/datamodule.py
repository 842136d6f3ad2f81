"""The LightningDataModule: a task's examples, tokenised, in one batch per optimizer step."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import lightning as L
from torch.utils.data import DataLoader

from dftlab.data import tokenized
from dftlab.data.collate import collate
from dftlab.data.encode import Encoded, EncodeSettings
from dftlab.data.fingerprint import rows_digest, tokenizer_digest
from dftlab.data.sampler import EMPTY, StepBatchSampler
from dftlab.errors import ConfigError
from dftlab.settings import BatchPlan
from dftlab.tasks import TrainTask

log = logging.getLogger(__name__)


class EncodedDataset:
    """Indexed by the sampler's (row, step tokens) keys."""

    def __init__(self, rows: Sequence[Encoded]):
        self.rows = rows  # a list, or `tokenized.EncodedRows` (Arrow, read on access)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, Encoded | None, int]:
        i, step_tokens = key
        return i, (None if i == EMPTY else self.rows[i]), step_tokens


class StepDataLoader(DataLoader):
    """A DataLoader whose position inside the epoch goes into checkpoints (Lightning saves the state
    of loaders that have `state_dict`), so that a resumed run continues with the next micro-batch."""

    def __init__(self, *args, progress: Callable[[], tuple[int, int]], **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = progress
        self.restored = False  # whether a checkpoint's position was loaded (checked when training starts)

    def __iter__(self):
        # Lightning sets the epoch on `sampler` and `batch_sampler.sampler` only, not on a batch sampler
        self.batch_sampler.set_epoch(self.progress()[0])
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        epoch, done = self.progress()
        return {"epoch": epoch, "micro_batches_done": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(state["epoch"], state["micro_batches_done"])
        self.restored = True


class DataModule(L.LightningDataModule):
    """`batch_size` is the global batch of one optimizer step (all ranks, all micro-batches).

    `micro_batch_size` is what one forward/backward pass holds: a memory setting only (null: a
    rank's whole share of the step, no accumulation). The number of micro-batches per step follows
    from the two and the number of ranks.
    """

    TRUNCATION = ("keep", "drop")

    def __init__(
        self,
        task,
        batch_size: int = 32,
        micro_batch_size: int | None = None,
        max_length: int = 128,
        truncation: str = "keep",
        packing: bool = False,
        pack_length: int | None = None,
        num_workers: int = 0,
        num_proc: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        tokenizer=None,
    ):
        super().__init__()
        if not isinstance(task, TrainTask):
            raise ConfigError(f"data.task ({type(task).__name__}) is not a training task: it needs train() and val()")
        if truncation not in self.TRUNCATION:
            raise ConfigError(f"data.truncation={truncation!r}: choose keep (train on the kept part) or drop")
        self.task = task
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.max_length, self.truncation, self.num_workers, self.seed = max_length, truncation, num_workers, seed
        self.num_proc = num_proc  # tokenisation worker processes (datasets.map)
        self.cache_dir = cache_dir
        # padding-free rows of at most pack_length tokens (bounded: attention grows with its square)
        self.pack_length = (pack_length or max_length) if packing else None
        if self.pack_length is not None and self.pack_length < max_length:
            raise ConfigError(f"data.pack_length={pack_length} must be at least data.max_length={max_length}")
        self.tokenizer = tokenizer
        self.datasets: dict[str, EncodedDataset] = {}
        self.skipped: dict[str, dict[str, int]] = {}
        self.source: str | None = None  # the task's fingerprint when its rows were read

    def plan(self, world_size: int) -> BatchPlan:
        """How a step's global batch splits over `world_size` ranks and into micro-batches; an
        impossible combination says which numbers to change."""
        return BatchPlan(self.batch_size, world_size, self.micro_batch_size)

    def settings(self) -> EncodeSettings:
        return EncodeSettings(self.max_length, self.task.chat_template, self.task.train_on)

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            raise RuntimeError("DataModule.tokenizer must be set before setup()")
        if "train" in self.datasets:
            return
        self.source = self.task.fingerprint()  # what was read, even if the source changes later
        rows, self.skipped = tokenized.build(self.task, self.tokenizer, self.settings(), self.truncation,
                                             self.num_proc, self.cache_dir,
                                             model=self.tokenizer.name_or_path or "the model")
        self.datasets = {split: EncodedDataset(r) for split, r in rows.items()}

    def _encode(self, split: str, rows: list[dict]) -> tuple[Sequence[Encoded], dict[str, int]]:
        """Rows tokenised outside `setup`'s cached splits (for a subclass's own splits)."""
        return tokenized.encode_split(split, rows, self.tokenizer, self.settings(), self.truncation, self.num_proc)

    def identity(self) -> dict[str, str | None]:
        """What the run trains on, for a resume to compare: the tokenised rows, and, to name what
        changed, the task's source (its `fingerprint`) and the tokenizer."""
        self.setup()
        rows = {split: d.rows for split, d in self.datasets.items()}
        return {"rows": rows_digest(rows), "source": self.source,
                "tokenizer": tokenizer_digest(self.tokenizer)}

    def collate_fn(self, items):
        return collate(items, pad_id=self.tokenizer.pad_token_id, pack_length=self.pack_length)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _sampler(self, split: str, global_batch: int, shuffle: bool) -> StepBatchSampler:
        rank, world = self._world()
        rows = self.datasets[split].rows
        counts = rows.n_targets() if hasattr(rows, "n_targets") else [e.n_targets for e in rows]
        return StepBatchSampler(counts, global_batch, self.plan(world).micro, rank, world, shuffle, self.seed)

    def _progress(self) -> tuple[int, int]:
        """(epoch, micro-batches of it already trained), read when a checkpoint is written."""
        return self.trainer.current_epoch, self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        return StepDataLoader(
            self.datasets["train"],
            batch_sampler=self._sampler("train", self.batch_size, shuffle=True),
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            progress=self._progress,
        )

    def val_dataloader(self) -> DataLoader:
        world = self._world()[1]
        return DataLoader(
            self.datasets["val"],
            batch_sampler=self._sampler("val", self.plan(world).micro * world, shuffle=False),
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
        )

    def micro_batches_per_epoch(self) -> int:
        """This rank's micro-batches in one epoch (known without setting up the loader)."""
        return len(self._sampler("train", self.batch_size, shuffle=True))

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.datasets["train"]) / self.batch_size)
