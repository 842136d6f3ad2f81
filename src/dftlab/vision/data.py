"""The data module for conversations with images: tokenised in memory (images are read per batch, not
cached), one example per row (no packing: image positions are per example)."""

from __future__ import annotations

import logging
from collections import Counter

from dftlab.data.datamodule import DataModule, EncodedDataset
from dftlab.data.encode import EncodeSettings
from dftlab.data.tokenized import SPLITS
from dftlab.errors import ConfigError
from dftlab.vision.collate import collate_with_images
from dftlab.vision.encode import encode_with_images

log = logging.getLogger(__name__)


class VisionDataModule(DataModule):
    """`DataModule` for a task whose examples hold images (`messages` with image parts and their
    `image_sizes`): the same batch plan, sampler and resume; its own encoding and collation."""

    def __init__(self, task, **kwargs):
        super().__init__(task, **kwargs)
        if self.pack_length is not None:
            raise ConfigError("data.packing=true: examples with images are not packed; set data.packing=false")

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            raise RuntimeError("DataModule.tokenizer must be set before setup()")
        if "train" in self.datasets:
            return
        if getattr(self.tokenizer, "image_processor", None) is None:
            raise ConfigError(f"data.task ({type(self.task).__name__}) holds images, and the model "
                              f"{self.tokenizer.name_or_path or ''} is not a vision-language model (no vision_config)")
        settings = EncodeSettings(self.max_length, True, self.task.train_on)
        for split in SPLITS:
            rows = self.task.train() if split == "train" else self.task.val()
            encoded, counts = [], Counter()
            for example in rows:
                e = encode_with_images(self.tokenizer, example, settings)
                if e is None:
                    counts["truncated_away"] += 1
                    continue
                if e.truncated:
                    counts["truncated_partly"] += 1
                    if self.truncation == "drop":
                        continue
                encoded.append(e)
            if not encoded:
                raise ConfigError(f"the {split} split is empty after tokenisation ({dict(counts)}): "
                                  f"raise data.max_length={self.max_length}")
            if counts:
                log.warning("%s split: %s (max_length=%d, truncation=%s)", split, dict(counts), self.max_length,
                            self.truncation)
            self.datasets[split] = EncodedDataset(encoded)
            self.skipped[split] = dict(counts)
        if source := self.task.skipped():
            self.skipped["source"] = source

    def collate_fn(self, items):
        return collate_with_images(items, self.tokenizer)
