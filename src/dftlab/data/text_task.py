"""Training data from a local file (JSON lines, JSON, CSV, Parquet; `.gz`, `.zst`) or a hub dataset, in
any format of `formats.py` (conversations, prompt/completion, prompt/response, alpaca, sharegpt, text).

    data.task.path: AI-MO/NuminaMath-CoT        # or ./data/train.jsonl, ./data/*.parquet, chat.jsonl.zst
    data.task.columns: {prompt: problem, response: solution}
    data.task.format: auto                      # or messages, prompt_completion, text, ...

`streaming: true` reads the source once, row by row (a hub dataset is not downloaded whole), with the
first `val_size` usable rows as validation; the tokenised rows go to disk, so the data may be larger
than memory. Evaluation at the end of the run is delegated to `eval_task` (for example the math
benchmarks); without one, the run reports validation cross-entropy only.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from functools import cached_property

from dftlab.data.chat import TRAIN_ON
from dftlab.data.records import Records, examples, read
from dftlab.data.sources import Source
from dftlab.errors import ConfigError
from dftlab.tasks import TrainTask


class TextTask(TrainTask):
    name = "text"

    def __init__(
        self,
        path: str,
        columns: dict[str, str] | None = None,
        format: str = "auto",
        split: str = "train",
        subset: str | None = None,
        revision: str | None = None,
        streaming: bool = False,
        max_rows: int | None = None,
        val_size: int = 256,
        chat_template: bool = True,
        train_on: str = "assistant",
        max_bad_fraction: float = 0.01,
        max_unk_fraction: float = 0.01,
        eval_task=None,
        seed: int = 0,
    ):
        self.path, self.split, self.subset, self.revision = str(path), split, subset, revision
        self.columns = dict(columns or {})
        self.format, self.streaming = format, streaming
        for key, value in (("max_bad_fraction", max_bad_fraction), ("max_unk_fraction", max_unk_fraction)):
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"data.task.{key}={value} must be in [0, 1]")
        if train_on not in TRAIN_ON:
            raise ConfigError(f"data.task.train_on={train_on!r}: choose one of {', '.join(TRAIN_ON)}")
        if not isinstance(val_size, int) or val_size < 1:
            raise ConfigError(f"data.task.val_size={val_size!r} must be a positive integer")
        self.max_rows, self.val_size, self.seed = max_rows, val_size, seed
        self.chat_template, self.train_on = chat_template, train_on
        self.max_bad_fraction, self.max_unk_fraction = max_bad_fraction, max_unk_fraction
        self.eval_task = eval_task  # what the end-of-run evaluation runs on (None: none)
        self._stream_records: Records | None = None

    # --- reading ---------------------------------------------------------------------------

    @cached_property
    def source(self) -> Source:
        return Source(self.path, self.split, self.subset, self.revision, self.streaming)

    def _examples(self, records: Records) -> Iterator[dict]:
        source = self.source
        return examples(records, source.rows(), self.format, self.columns, source.columns())

    def head(self, n: int) -> list[dict]:
        """The first `n` usable examples (for start-up checks), read without reading the rest."""
        source = self.source
        return read(self.path, source.rows(), self.format, self.columns, source.columns(), max_rows=n).rows

    @cached_property
    def records(self) -> Records:
        if self.streaming:
            raise RuntimeError("streaming data is read once, by train(); it has no records in memory")
        # the validation rows come out of the same read, so read a little more than max_rows
        limit = None if self.max_rows is None else self.max_rows + self.val_size
        source = self.source
        records = read(self.path, source.rows(), self.format, self.columns, source.columns(), limit)
        records.check(self.max_bad_fraction, "data.task.max_bad_fraction")
        if len(records.rows) <= self.val_size:
            raise ConfigError(
                f"{self.path}: {len(records.rows)} usable rows, not more than data.task.val_size={self.val_size}"
            )
        return records

    def _split_rows(self) -> tuple[list[dict], list[dict]]:
        rows = self.records.rows
        held_out = set(random.Random(f"val:{self.seed}").sample(range(len(rows)), self.val_size))
        train = [r for i, r in enumerate(rows) if i not in held_out][: self.max_rows]
        return train, [r for i, r in enumerate(rows) if i in held_out]

    def _stream_train(self) -> Iterator[dict]:
        records = self._stream_records = Records(self.path)
        kept = 0
        for i, example in enumerate(self._examples(records)):
            if i < self.val_size:
                continue
            if self.max_rows is not None and kept >= self.max_rows:
                break
            kept += 1
            yield example
        records.check(self.max_bad_fraction, "data.task.max_bad_fraction")
        if not kept:
            raise ConfigError(f"{self.path}: no usable rows after the first data.task.val_size={self.val_size}")

    def train(self):
        return self._stream_train() if self.streaming else self._split_rows()[0]

    def val(self) -> list[dict]:
        return self.head(self.val_size) if self.streaming else self._split_rows()[1]

    def skipped(self) -> dict[str, int]:
        if self.streaming:
            return dict(self._stream_records.skipped) if self._stream_records is not None else {}
        return dict(self.records.skipped)

    @cached_property
    def _fingerprint(self) -> str:
        # the content of local files (a hash of their bytes), a hub dataset's name and revision
        content = self.source.content_hash() or f"hub:{self.revision}"
        spec = [self.path, content, self.split, self.subset, self.format, sorted(self.columns.items()), self.max_rows,
                self.val_size, self.seed, self.streaming, self.chat_template, self.train_on, self.max_bad_fraction]
        return hashlib.sha256(repr(spec).encode()).hexdigest()[:16]

    def fingerprint(self) -> str:
        """What the tokenised cache depends on: the data's content, how it is read and split."""
        return self._fingerprint
