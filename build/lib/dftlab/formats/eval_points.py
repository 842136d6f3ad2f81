"""Accuracy during training: `<run>/eval_progress/points.csv`, one row per (step, split, metric).

Written by `EvalDuringTraining` as each point is measured (a resumed run adds to it), read by the
comparison report.
"""

from __future__ import annotations

import csv
from pathlib import Path

DIR = "eval_progress"
POINTS = "points.csv"
PLOT = "accuracy_vs_step.png"
COLUMNS = ["step", "split", "metric", "value", "ci95_lo", "ci95_hi", "pass_at_k", "well_formed", "n", "k", "seconds"]


def append_points(path: Path, rows: list[list]) -> None:
    """Rows in the order of COLUMNS, added to `path` (its header written first when it is new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(COLUMNS)
        w.writerows(rows)


def read_points(path: Path) -> list[dict]:
    """The points of a `points.csv`, numbers parsed; a step measured twice (a resumed run measures
    the step it resumes at) keeps its latest measurement."""
    if not path.exists():
        return []
    latest = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            point = {
                "step": int(r["step"]), "split": r["split"], "metric": r["metric"], "value": float(r["value"]),
                "ci95_lo": float(r["ci95_lo"]), "ci95_hi": float(r["ci95_hi"]), "n": int(r["n"]), "k": int(r["k"]),
                "pass_at_k": float(r["pass_at_k"]) if r["pass_at_k"] else None,
                "well_formed": float(r["well_formed"]), "seconds": float(r["seconds"]),
            }
            latest[(point["step"], point["split"], point["metric"])] = point
    return list(latest.values())
