"""Training rows from rejection samples: the accepted completions (RFT, or DFT on the same data)
or the preference pairs (DPO), beside the task they were sampled from, which keeps its validation
rows and its evaluation.

    data.task:
      _target_: dftlab.rl.sampled.SampledTask
      base_target: dftlab.data.game24_task.Game24Task   # the task sampled from: validation, evaluation
      train_rules: [...]     # ... and its own parameters, as in its data config (data=game24_rs inherits game24's)
      generate: [n=4]        # generate.yaml overrides: sampled on first use, cached by their key
      samples: null          # or a folder written by generate.py (or a JSONL file of such rows)
      rows: accepted         # accepted: {prompt, response}; pairs: {prompt, chosen, rejected}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hydra.utils import get_class

from dftlab.data.records import Records, read_jsonl
from dftlab.errors import ConfigError
from dftlab.rl.rejection import ACCEPTED, COUNTS, PAIRS
from dftlab.tasks import TrainTask

COLUMNS = {
    "accepted": {"prompt": "prompt", "response": "response"},
    "pairs": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
}
FILES = {"accepted": ACCEPTED, "pairs": PAIRS}


class SampledTask(TrainTask):
    name = "sampled"

    def __init__(self, base_target: str, samples: str | None = None, generate: list[str] | None = None,
                 rows: str = "accepted", sampled_bad_fraction: float = 0.01, **base_params):
        if rows not in COLUMNS:
            raise ConfigError(f"data.task.rows={rows!r}: choose accepted (prompt/response) or pairs")
        base = get_class(base_target)(**base_params)  # its parameters are already instantiated
        if not isinstance(base, TrainTask):
            raise ConfigError(f"data.task.base_target={base_target} is not a training task")
        self.base, self.samples, self.generate, self.rows = base, samples, list(generate or []), rows
        self.max_bad_fraction = sampled_bad_fraction
        self.chat_template = base.chat_template
        self._records: Records | None = None

    @property
    def eval_task(self):
        return self.base.eval_task

    def file(self) -> Path:
        """The JSONL of rows: `samples` (a file, or a folder written by generate.py), else the cached samples."""
        if self.samples is None:
            from dftlab.rl.generate_run import ensure_samples

            folder = ensure_samples(self.generate)
        else:
            folder = Path(self.samples).expanduser()
            if folder.is_file():
                return folder
            if not (folder / COUNTS).exists():
                raise ConfigError(f"data.task.samples={self.samples}: not a finished rejection-sampling folder (no "
                                  f"{COUNTS}; run generate.py, or resume it with the same run_id)")
        return folder / FILES[self.rows]

    @property
    def records(self) -> Records:
        if self._records is None:
            path = self.file()
            records = read_jsonl(path, COLUMNS[self.rows], "data.task.rows")
            if not records.rows and not records.skipped:
                what = ("no prompt had both a correct and an incorrect completion"
                        if self.rows == "pairs" else "no completion was correct")
                raise ConfigError(f"{path}: no {self.rows} rows ({what}): sample more per prompt (n), or from "
                                  f"another model")
            records.check(self.max_bad_fraction, "data.task.sampled_bad_fraction")
            self._records = records
        return self._records

    def sample_counts(self) -> dict:
        """The rejection sampling's counts (counts.json beside the rows) and where the rows are."""
        path = self.file()
        counts = path.parent / COUNTS
        return {"file": str(path), **(json.loads(counts.read_text()) if counts.exists() else {})}

    def train(self) -> list[dict]:
        return list(self.records.rows)

    def val(self) -> list[dict]:
        return self.base.val()

    def skipped(self) -> dict[str, int]:
        return dict(self.records.skipped)

    def fingerprint(self) -> str:
        path = self.file()
        stat = path.stat()
        spec = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, self.rows, self.base.fingerprint(),
                repr(self.base.val()[:3])]
        return hashlib.sha1(repr(spec).encode()).hexdigest()[:16]
