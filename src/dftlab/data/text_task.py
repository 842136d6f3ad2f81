"""Prompt/response training data from a local file (JSONL, JSON, Parquet) or a hub dataset.

    data.task.path: AI-MO/NuminaMath-CoT        # or ./data/train.jsonl, ./data/*.parquet
    data.task.columns: {prompt: problem, response: solution}

Evaluation at the end of the run is delegated to `eval_task` (for example the math benchmarks);
without one, the run reports validation cross-entropy only.
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path

from dftlab.data.fingerprint import content_digest
from dftlab.data.records import Records, read_dataset, read_json, read_jsonl
from dftlab.errors import ConfigError
from dftlab.tasks import TrainTask


class TextTask(TrainTask):
    name = "text"

    def __init__(
        self,
        path: str,
        columns: dict[str, str] | None = None,
        split: str = "train",
        subset: str | None = None,
        revision: str | None = None,
        max_rows: int | None = None,
        val_size: int = 256,
        chat_template: bool = True,
        max_bad_fraction: float = 0.01,
        eval_task=None,
        seed: int = 0,
    ):
        self.path, self.split, self.subset, self.revision = str(path), split, subset, revision
        self.columns = dict(columns or {"prompt": "prompt", "response": "response"})
        if set(self.columns) != {"prompt", "response"}:
            raise ConfigError(f"data.task.columns must map exactly prompt and response, got {sorted(self.columns)}")
        if not 0 <= max_bad_fraction <= 1:
            raise ConfigError(f"data.task.max_bad_fraction={max_bad_fraction} must be in [0, 1]")
        self.max_rows, self.val_size, self.seed = max_rows, val_size, seed
        self.chat_template, self.max_bad_fraction = chat_template, max_bad_fraction
        self.eval_task = eval_task  # what the end-of-run evaluation runs on (None: none)
        self._records: Records | None = None

    # --- reading ---------------------------------------------------------------------------

    def _local(self) -> Path | None:
        p = Path(self.path).expanduser()
        if p.exists():
            return p
        if self.path.startswith((".", "/", "~")) or self.path.endswith((".jsonl", ".json", ".parquet")):
            raise ConfigError(f"data.task.path={self.path!r}: no such file or directory")
        return None

    def _read(self) -> Records:
        local, key = self._local(), "data.task.columns"
        # the validation rows come out of the same read, so read a little more than max_rows
        limit = None if self.max_rows is None else self.max_rows + self.val_size
        if local is not None and local.suffix == ".jsonl":
            return read_jsonl(local, self.columns, key, limit)
        if local is not None and local.suffix == ".json":
            return read_json(local, self.columns, key, limit)
        import datasets

        kind = None if local is None else {".parquet": "parquet"}.get(local.suffix)
        if local is not None and kind is None and not local.is_dir():
            raise ConfigError(f"data.task.path={self.path!r}: use a .jsonl, .json or .parquet file or a dataset folder")
        quiet = logging.getLogger("datasets")  # its own copy of an error this raises in one line below
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            if local is None:
                rows = datasets.load_dataset(self.path, self.subset, split=self.split, revision=self.revision)
            elif kind is None:
                rows = datasets.load_from_disk(str(local))
                rows = rows[self.split] if isinstance(rows, datasets.DatasetDict) else rows
            else:
                rows = datasets.load_dataset(kind, data_files=str(local), split="train")
        except Exception as err:  # pyarrow's, datasets' and the hub's errors: one line naming the source
            cause = err.__cause__ or err
            what = "not readable as a dataset" if local is not None else "could not be loaded from the hub"
            raise ConfigError(f"data.task.path={self.path!r}: {what} ({type(cause).__name__}: "
                              f"{str(cause).splitlines()[0] if str(cause) else ''})") from None
        finally:
            quiet.setLevel(level)
        return read_dataset(rows, self.path, self.columns, key, limit)

    @property
    def records(self) -> Records:
        if self._records is None:
            self._records = self._read()
            self._records.check(self.max_bad_fraction, "data.task.max_bad_fraction")
            if len(self._records.rows) <= self.val_size:
                raise ConfigError(
                    f"{self.path}: {len(self._records.rows)} usable rows, "
                    f"not more than data.task.val_size={self.val_size}"
                )
        return self._records

    def _split_rows(self) -> tuple[list[dict], list[dict]]:
        rows = list(self.records.rows)
        held_out = set(random.Random(f"val:{self.seed}").sample(range(len(rows)), self.val_size))
        train = [r for i, r in enumerate(rows) if i not in held_out][: self.max_rows]
        return train, [r for i, r in enumerate(rows) if i in held_out]

    def train(self) -> list[dict]:
        return self._split_rows()[0]

    def val(self) -> list[dict]:
        return self._split_rows()[1]

    def skipped(self) -> dict[str, int]:
        return dict(self.records.skipped)

    def fingerprint(self) -> str:
        """What the tokenised cache depends on: the source (a local file's or folder's content), the columns."""
        local = self._local()
        stamp = content_digest(local) if local else self.revision
        spec = [self.path, stamp, self.split, self.subset, self.columns, self.max_rows, self.val_size, self.seed,
                self.chat_template, self.max_bad_fraction]
        return hashlib.sha1(repr(spec).encode()).hexdigest()[:16]

