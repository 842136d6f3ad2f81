"""Histograms of p(target token): the bins, the summary numbers, and their files in a run directory.

Written by `TokenHistograms` during training, read back by `dftlab.reporting.histograms`. One
evaluation point is `<run>/token_probs/<name>.npz` (and a `.csv` of the same counts), where the name
is `before` for the model that training starts from and `step_XXXXXX` for later points.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

DIR = "token_probs"
BEFORE = "before"
FINAL = "final"  # not a file: the point with the highest step

# Figure 2 of the DFT paper
PAPER_EDGES = np.array([0.0, 1e-4, 1e-3, 1e-2] + [k / 10 for k in range(1, 11)])


def fine_edges(n_bins: int, p_min: float) -> np.ndarray:
    """Log-spaced over [p_min, 1], with the first bin stretched down to 0 to hold everything below."""
    edges = np.logspace(np.log10(p_min), 0.0, n_bins + 1)
    edges[0] = 0.0
    return edges


def point_name(step: int) -> str:
    return BEFORE if step == 0 else f"step_{step:06d}"


def paper_bin_labels() -> list[str]:
    def short(v: float) -> str:
        return "0" if v == 0 else f"1e{round(np.log10(v))}" if v < 0.01 else f"{v:g}"

    return [f"{short(lo)}-{short(hi)}" for lo, hi in pairwise(PAPER_EDGES)]


@dataclass
class ProbHistogram:
    """One evaluation point: counts of target tokens per bin, and summary numbers of their p."""

    step: int
    paper_counts: np.ndarray
    fine_edges: np.ndarray
    fine_counts: np.ndarray
    summary: dict[str, float]

    @property
    def name(self) -> str:
        return point_name(self.step)

    def log10_fine_edges(self) -> np.ndarray:
        """The fine edges as log10 p, starting at log10 p_min (the first bin also holds every p below)."""
        logs = np.log10(self.fine_edges[1:])
        return np.concatenate([[2 * logs[0] - logs[1]], logs])

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.npz"
        np.savez(
            path,
            step=self.step,
            paper_edges=PAPER_EDGES,
            paper_counts=self.paper_counts,
            fine_edges=self.fine_edges,
            fine_counts=self.fine_counts,
            summary_names=np.array(list(self.summary)),
            summary_values=np.array(list(self.summary.values()), dtype=np.float64),
        )
        with open(directory / f"{self.name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["binning", "lower", "upper", "count"])
            for binning, edges, counts in (
                ("paper", PAPER_EDGES, self.paper_counts),
                ("fine", self.fine_edges, self.fine_counts),
            ):
                for lo, hi, n in zip(edges[:-1], edges[1:], counts):
                    w.writerow([binning, f"{lo:.6g}", f"{hi:.6g}", int(n)])
        return path

    @classmethod
    def load(cls, path: Path) -> ProbHistogram:
        with np.load(path) as z:
            return cls(
                step=int(z["step"]),
                paper_counts=z["paper_counts"],
                fine_edges=z["fine_edges"],
                fine_counts=z["fine_counts"],
                summary=dict(zip(z["summary_names"].tolist(), z["summary_values"].tolist())),
            )


def load_point(run_dir: Path | str, name: str = FINAL) -> ProbHistogram:
    """A run's evaluation point by name (`before`, `step_000100`), or `final`: its highest step."""
    directory = Path(run_dir) / DIR
    if name != FINAL:
        path = directory / f"{name}.npz"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such histogram (points: {', '.join(_points(directory)) or 'none'})")
        return ProbHistogram.load(path)
    steps = [p for p in _points(directory) if re.fullmatch(r"step_\d+", p)]
    if not steps:
        raise FileNotFoundError(f"{directory}: no step_*.npz; was the run trained with the token_histograms callback?")
    return ProbHistogram.load(directory / f"{max(steps, key=lambda p: int(p[5:]))}.npz")


def _points(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.npz"))
