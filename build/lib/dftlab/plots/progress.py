"""Accuracy against the optimizer step (Figure 1 of the DFT paper): one panel per group of curves,
each curve with a shaded band (a confidence interval, or +- one standard deviation over seeds)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


@dataclass
class Curve:
    steps: Sequence[int]
    values: Sequence[float]  # accuracy in [0, 1]
    lower: Sequence[float]  # the band
    upper: Sequence[float]


def plot_progress(panels: Mapping[str, Mapping[str, Curve]], path: Path, title: str, ylabel: str) -> Path:
    """`panels`: panel title -> curve label -> curve, one subplot per panel (at most 3 a row)."""
    cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / cols)
    # a bare Figure on an Agg canvas: no pyplot state, no global backend switch in the caller's process
    width, height = (8, 5) if len(panels) == 1 else (5 * cols, 3.6 * n_rows + 0.6)
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, cols, squeeze=False).ravel()
    for ax, (panel, curves) in zip(axes, panels.items()):
        for label, c in curves.items():
            line = ax.plot(c.steps, [100 * v for v in c.values], marker="o", markersize=3, label=label)[0]
            ax.fill_between(c.steps, [100 * v for v in c.lower], [100 * v for v in c.upper],
                            color=line.get_color(), alpha=0.1, linewidth=0)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    # fixed margins: a layout engine (constrained, tight) costs seconds a figure
    fig.subplots_adjust(left=0.1 if cols == 1 else 0.06, right=0.98, bottom=0.55 / height, top=1 - 0.8 / height,
                        wspace=0.28, hspace=0.45)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
