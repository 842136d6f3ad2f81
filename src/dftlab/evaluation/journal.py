"""Completions of finished generate batches, kept as each batch ends, so that an evaluation stopped
by a signal resumes where it stopped instead of generating everything again.

One JSONL file per generation (a model, its prompts and the decoding settings: their hash is the
file's name), one line per finished batch: `{"batch": b, "completions": [[completion, ...], ...]}`, each
completion as `{"text", "ids", "finished"}`. A line cut by a crash is ignored (that batch is generated again).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from dftlab.evaluation.decoding import Completion


class Journal:
    """The finished batches of the generations of one model (`model`: what identifies its weights,
    e.g. an export and the step it was taken at), under `folder`."""

    def __init__(self, folder: Path, model: str):
        self.folder, self.model = Path(folder), model
        self._file: Path | None = None

    def batches(self, prompts: list[str], settings) -> dict[int, list[list[Completion]]]:
        """The batches already finished for these prompts and settings; later `add`s go to their file."""
        spec = json.dumps([self.model, prompts, settings], sort_keys=True, default=str)
        self._file = self.folder / f"{hashlib.sha1(spec.encode()).hexdigest()[:16]}.jsonl"
        done = {}
        if self._file.exists():
            for line in self._file.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                done[entry["batch"]] = [[Completion(**c) for c in outs] for outs in entry["completions"]]
        return done

    def add(self, batch: int, completions: list[list[Completion]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self._file, "a", encoding="utf-8") as f:
            kept = [[asdict(c) for c in outs] for outs in completions]
            f.write(json.dumps({"batch": batch, "completions": kept}) + "\n")

    def clear(self) -> None:
        """Remove every kept batch (the evaluation is complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)
