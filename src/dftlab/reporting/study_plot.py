"""The figures of the "When does DFT help?" studies: a grid of panels, a line per series through its
mean with a shaded band (the spread over seeds, or an interval), single points with error bars."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


@dataclass
class Series:
    x: Sequence[float]
    y: Sequence[float]  # in %
    lower: Sequence[float]  # the band, in %
    upper: Sequence[float]
    point: bool = False  # markers with error bars instead of a line and a band
    dashed: bool = False


@dataclass
class Panel:
    title: str
    ylabel: str
    series: dict[str, Series] = field(default_factory=dict)
    zero_line: bool = False  # a gap: draw y = 0


def plot_grid(
    grid: list[list[Panel]],
    path: Path,
    title: str,
    xlabel: str,
    xticks: Sequence[float],
    xticklabels: Sequence[str] | None = None,
    log_base: int | None = None,
) -> Path:
    """One row of panels per inner list; every panel shares the x axis' ticks."""
    n_rows, cols = len(grid), max(len(r) for r in grid)
    width, height = 5 * cols, 3.8 * n_rows + 0.7
    # a bare Figure on an Agg canvas: no pyplot state, no global backend switch in the caller's process
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, cols, squeeze=False)
    for i, row in enumerate(grid):
        for j in range(cols):
            ax = axes[i][j]
            if j >= len(row):
                ax.set_visible(False)
                continue
            panel = row[j]
            for label, s in panel.series.items():
                if s.point:
                    err = [[y - lo for y, lo in zip(s.y, s.lower)], [hi - y for y, hi in zip(s.y, s.upper)]]
                    ax.errorbar(s.x, s.y, yerr=err, fmt="*", markersize=10, capsize=3, label=label)
                    continue
                line = ax.plot(s.x, s.y, marker="o", markersize=4, linestyle="--" if s.dashed else "-", label=label)[0]
                ax.fill_between(s.x, s.lower, s.upper, color=line.get_color(), alpha=0.15, linewidth=0)
            if panel.zero_line:
                ax.axhline(0, color="gray", linewidth=1)
            if log_base:
                ax.set_xscale("log", base=log_base)
            ax.set_xticks(list(xticks), list(xticklabels or [f"{x:g}" for x in xticks]))
            ax.minorticks_off()
            ax.set_title(panel.title, fontsize=10)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(panel.ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    # fixed margins: a layout engine (constrained, tight) costs seconds a figure
    fig.subplots_adjust(
        left=0.8 / width, right=0.98, bottom=0.55 / height, top=1 - 0.8 / height, wspace=0.3, hspace=0.5
    )
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
