"""One figure for one or several token-probability histograms: the paper's bins as grouped bars
(log-scale counts, as in Figure 2 of the DFT paper) beside the fine log-spaced bins as steps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dftlab.formats.token_probs import ProbHistogram, paper_bin_labels


def plot_histograms(series: Sequence[tuple[str, ProbHistogram]], path: Path, title: str) -> Path:
    # A bare Figure on an Agg canvas: no pyplot state, no global backend switch in the caller's process
    fig = Figure(figsize=(13, 5))
    FigureCanvasAgg(fig)
    bars, steps = fig.subplots(1, 2, width_ratios=[3, 2])
    # fixed margins: a layout engine (constrained, tight) costs seconds a figure
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.22, top=0.9, wspace=0.18)
    labels = paper_bin_labels()
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    for k, (label, h) in enumerate(series):
        bars.bar(x + (k - (len(series) - 1) / 2) * width, h.paper_counts, width, label=label)
        steps.stairs(h.fine_counts, 10.0 ** h.log10_fine_edges(), label=label)
    bars.set_yscale("log")
    bars.set_ylim(bottom=0.5)  # a bin holding one token stays visible on the log scale
    bars.set_xticks(x, labels, rotation=45, ha="right")
    bars.set_xlabel("p(target token), the paper's bins")
    bars.set_ylabel("target tokens")
    bars.legend()
    steps.set_xscale("log")
    steps.set_yscale("log")
    steps.set_ylim(bottom=0.5)
    steps.set_xlabel("p(target token), log-spaced bins (the first holds all below)")
    steps.set_ylabel("target tokens")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
