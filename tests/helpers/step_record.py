"""A record of every optimizer step (its loss, learning rate and rows), for comparing a resumed run with
an uninterrupted one. Added to a run from the command line:

    +callbacks.record._target_=tests.helpers.step_record.StepRecord +callbacks.record.path=<file>

Each rank appends one JSON line per step to `<file>.rank<r>`, written as soon as the step ends (a killed
process keeps what it had recorded).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class StepRecord(L.Callback):
    def __init__(self, path: str):
        self.path = path
        self.rows: list[int] = []
        self.last_step = -1

    def on_train_start(self, trainer, pl_module):
        self.last_step = trainer.global_step  # a resumed run: the checkpoint's step is not this process's

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rows += [int(r) for r in batch["row_ids"] if r >= 0]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = trainer.callback_metrics
        if trainer.global_step == self.last_step or "train/loss" not in metrics:
            return  # inside an optimizer step: its micro-batches are not all done
        self.last_step = trainer.global_step
        line = {"step": trainer.global_step, "epoch": trainer.current_epoch, "loss": float(metrics["train/loss"]),
                "lr": float(metrics["train/lr"]), "rows": self.rows}
        self.rows = []
        with open(f"{self.path}.rank{trainer.global_rank}", "a") as f:
            f.write(json.dumps(line) + "\n")


def read(path: str | Path, rank: int = 0) -> dict[int, dict]:
    """Step -> its record (the last one written for that step)."""
    lines = Path(f"{path}.rank{rank}").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines)}


def largest_difference(full: dict[int, dict], resumed: dict[int, dict]) -> float:
    """The largest loss difference over the resumed steps; they must also have the same rows and lr."""
    assert resumed and set(resumed) <= set(full), (sorted(resumed), sorted(full))
    for step, r in resumed.items():
        assert r["rows"] == full[step]["rows"], f"step {step}: other rows than the uninterrupted run's"
        assert r["lr"] == full[step]["lr"], f"step {step}: lr {r['lr']} != {full[step]['lr']}"
    largest = max(abs(r["loss"] - full[step]["loss"]) for step, r in resumed.items())
    print(f"resumed steps {min(resumed)}-{max(resumed)}: largest loss difference {largest:.3g}")
    return largest
