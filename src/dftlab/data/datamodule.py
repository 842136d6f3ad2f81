"""The LightningDataModule: a task's examples, tokenised, in one batch per optimizer step."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from dftlab.data.collate import collate
from dftlab.data.encode import Encoded, encode
from dftlab.data.fingerprint import rows_digest, tokenizer_digest
from dftlab.data.sampler import EMPTY, StepBatchSampler
from dftlab.errors import ConfigError
from dftlab.settings import BatchPlan
from dftlab.tasks import TrainTask

log = logging.getLogger(__name__)


class EncodedDataset:
    """Indexed by the sampler's (row, step tokens) keys."""

    def __init__(self, rows: list[Encoded]):
        self.rows = rows

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

    def _encode(self, split: str, rows: list[dict[str, str]]) -> tuple[list[Encoded], dict[str, int]]:
        kept, counts = [], Counter()
        with_ref = ["ref_logp" in row for row in rows]
        if any(with_ref) and not all(with_ref):
            where = rows[with_ref.index(False)].get("where", f"{split} row {with_ref.index(False)}")
            raise ConfigError(f"{where}: no ref_logp field, while other rows have one: give it to every row or none")
        for row in rows:
            try:
                e = encode(self.tokenizer, row["prompt"], row["response"], self.max_length, self.task.chat_template,
                           ref_logp=row.get("ref_logp"))
            except ValueError as err:
                raise ConfigError(f"{row.get('where', split)}: {err}") from None
            if e is None:
                counts["truncated_away"] += 1
            elif e.truncated:
                counts["truncated_partly"] += 1  # reported in the run summary, whichever the policy
                if self.truncation == "keep":
                    kept.append(e)
            else:
                kept.append(e)
        if not kept:
            raise ConfigError(
                f"the {split} split is empty after tokenisation ({dict(counts)}): "
                f"raise data.max_length={self.max_length}"
            )
        return kept, dict(counts)

    def _cache_path(self, fingerprint: str | None) -> Path | None:
        if self.cache_dir is None or fingerprint is None:
            return None
        spec = [fingerprint, tokenizer_digest(self.tokenizer), self.max_length, self.truncation]
        return Path(self.cache_dir) / "tokenized" / f"{hashlib.sha1(repr(spec).encode()).hexdigest()[:16]}.pt"

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            raise RuntimeError("DataModule.tokenizer must be set before setup()")
        if "train" in self.datasets:
            return
        self.source = self.task.fingerprint()  # what was read, even if the source changes later
        cache = self._cache_path(self.source)
        if cache is not None and cache.exists():
            state = torch.load(cache, weights_only=True)
            encoded = {split: [Encoded(*row) for row in rows] for split, rows in state["rows"].items()}
            self.skipped = state["skipped"]
        else:
            encoded = {}
            for split, rows in (("train", self.task.train()), ("val", self.task.val())):
                encoded[split], self.skipped[split] = self._encode(split, rows)
            if source := self.task.skipped():
                self.skipped["source"] = source
            if cache is not None:
                self._save_cache(cache, encoded)
        self._check_cut(encoded)
        self.datasets = {split: EncodedDataset(rows) for split, rows in encoded.items()}

    def _check_cut(self, encoded: dict[str, list[Encoded]]) -> None:
        """Rows cut away by `max_length` (and, with `truncation: drop`, rows cut at all) count toward
        the task's bad-row limit (`max_bad_fraction`, 1% when the task has none), with its bad source rows."""
        limit = getattr(self.task, "max_bad_fraction", 0.01)
        counts = {s: self.skipped.get(s, {}) for s in encoded}
        cut = sum(c.get("truncated_away", 0) + (c.get("truncated_partly", 0) if self.truncation == "drop" else 0)
                  for c in counts.values())
        source = sum(self.skipped.get("source", {}).values())
        total = sum(len(rows) for rows in encoded.values()) + cut + source
        if cut and (cut + source) / total > limit:
            key = f" or data.task.max_bad_fraction={limit}" if hasattr(self.task, "max_bad_fraction") else ""
            how = "cut away or cut" if self.truncation == "drop" else "cut away"
            more = f" and {source} more are bad" if source else ""
            raise ConfigError(
                f"{cut} of {total} rows are dropped for data.max_length={self.max_length} (truncation="
                f"{self.truncation}: {how}){more}: more than {limit:.0%} of the data; raise data.max_length{key}"
            )
        for split, c in counts.items():
            if c:
                log.warning("%s split: %s (max_length=%d, truncation=%s)", split, c, self.max_length, self.truncation)

    def identity(self) -> dict[str, str | None]:
        """What the run trains on, for a resume to compare: the tokenised rows, and, to name what
        changed, the task's source (its `fingerprint`) and the tokenizer."""
        self.setup()
        rows = {split: d.rows for split, d in self.datasets.items()}
        return {"rows": rows_digest(rows), "source": self.source,
                "tokenizer": tokenizer_digest(self.tokenizer)}

    def _save_cache(self, path: Path, encoded: dict[str, list[Encoded]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = {split: [(e.input_ids, e.prompt_len, e.truncated, e.ref_logp) for e in es]
                for split, es in encoded.items()}
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"rows": rows, "skipped": self.skipped}, tmp)
        os.replace(tmp, path)  # other ranks may be writing the same file

    def collate_fn(self, items):
        return collate(items, pad_id=self.tokenizer.pad_token_id, pack_length=self.pack_length)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _sampler(self, split: str, global_batch: int, shuffle: bool) -> StepBatchSampler:
        rank, world = self._world()
        counts = [e.n_targets for e in self.datasets[split].rows]
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
