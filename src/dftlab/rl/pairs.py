"""Preference pairs as training batches (DPO): both responses of a pair in one micro-batch, each
target token told its pair (`pair_id`) and side (`pair_side`: +1 chosen, -1 rejected), and one
optimizer step's loss averaged over its pairs (the loss's `unit`).

The training rows are {prompt, chosen, rejected} (`dftlab.rl.sampled.SampledTask` with `rows:
pairs`); the validation rows are the task's own {prompt, response}, so validation cross-entropy is
measured on the same data as for every other loss. A pair with a side cut away entirely by
`max_length` is skipped and counted (`truncated_away`); one cut partly is counted
(`truncated_partly`) and kept or dropped by `truncation`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import torch

from dftlab.data.collate import collate
from dftlab.data.datamodule import DataModule, EncodedDataset
from dftlab.data.encode import Encoded, encode
from dftlab.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class EncodedPair:
    chosen: Encoded
    rejected: Encoded

    @property
    def n_targets(self) -> int:
        return self.chosen.n_targets + self.rejected.n_targets


class PairDataModule(DataModule):
    """A DataModule whose training rows are preference pairs (see the module docstring)."""

    token_fields = ("pair_id", "pair_side")
    unit = "pair"

    def _encode_pairs(self, rows: list[dict]) -> tuple[list[EncodedPair], dict[str, int]]:
        kept, counts = [], Counter()
        for row in rows:
            sides = [encode(self.tokenizer, row["prompt"], row[k], self.max_length, self.task.chat_template)
                     for k in ("chosen", "rejected")]
            if None in sides:
                counts["truncated_away"] += 1
                continue
            if any(e.truncated for e in sides):
                counts["truncated_partly"] += 1
                if self.truncation == "drop":
                    continue
            kept.append(EncodedPair(*sides))
        if counts:
            log.warning("train pairs: %s (max_length=%d, truncation=%s)", dict(counts), self.max_length,
                        self.truncation)
        if not kept:
            raise ConfigError(f"no training pair left after tokenisation ({dict(counts)}): raise "
                              f"data.max_length={self.max_length}")
        return kept, dict(counts)

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            raise RuntimeError("PairDataModule.tokenizer must be set before setup()")
        if "train" in self.datasets:
            return
        rows = self.task.train()
        if missing := [k for k in ("prompt", "chosen", "rejected") if rows and k not in rows[0]]:
            raise ConfigError(f"data.task ({type(self.task).__name__}) gives rows without {missing}: a pairwise loss "
                              f"trains on preference pairs (data.task.rows=pairs)")
        train, self.skipped["train"] = self._encode_pairs(rows)
        val, self.skipped["val"] = self._encode("val", self.task.val())
        if source := self.task.skipped():
            self.skipped["source"] = source
        self.datasets = {"train": EncodedDataset(train), "val": EncodedDataset(val)}

    def _sampler(self, split: str, global_batch: int, shuffle: bool):
        sampler = super()._sampler(split, global_batch, shuffle)
        if split == "train":  # a step's loss is the mean over its pairs
            sampler.counts = [1] * len(sampler.counts)
        return sampler

    def collate_fn(self, items):
        if not any(isinstance(e, EncodedPair) for _, e, _ in items):
            return super().collate_fn(items)  # validation rows, or an empty micro-batch
        flat = [(i, e, n) for i, pair, n in items for e in (pair.chosen, pair.rejected)]
        batch = collate(flat, pad_id=self.tokenizer.pad_token_id, pack_length=self.pack_length)
        # example 2k is pair k's chosen response, 2k + 1 its rejected one (padding: ids past the pairs)
        batch["pair_id"] = batch["seq_ids"] // 2
        batch["pair_side"] = 1.0 - 2.0 * (batch["seq_ids"] % 2).to(torch.float32)
        return batch
