"""The Figure 3 analogue as one figure: a panel per swept axis (log-scale x at the grid's values),
a line per loss through the mean over seeds, the min-max band and each seed when there are several,
and the starting model's accuracy as a dashed line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from dftlab.reporting.ablation import Panel


def plot_panels(panels: list[Panel], path: Path, metric: str) -> Path:
    # a bare Figure on an Agg canvas: no pyplot state, no global backend switch in the caller's process
    fig = Figure(figsize=(5.5 * len(panels), 4.3))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    fig.subplots_adjust(left=0.09 / len(panels), right=0.98, bottom=0.14, top=0.88, wspace=0.25)
    for ax, panel in zip(axes, panels):
        xs = sorted({pt.x for points in panel.series.values() for pt in points})
        for loss, points in panel.series.items():
            x = [pt.x for pt in points]
            (line,) = ax.plot(x, [100 * pt.mean for pt in points], marker="o", label=loss)
            if any(len(pt.accs) > 1 for pt in points):
                ax.fill_between(x, [100 * min(pt.accs) for pt in points], [100 * max(pt.accs) for pt in points],
                                color=line.get_color(), alpha=0.15, linewidth=0)
                seeds = [(pt.x, 100 * a) for pt in points for a in pt.accs]
                ax.scatter(*zip(*seeds), color=line.get_color(), s=10, alpha=0.6)
        if panel.base is not None:
            ax.axhline(100 * panel.base, color="gray", linestyle="--", linewidth=1, label="starting model")
        ax.set_xscale("log", base=panel.axis.scale_base)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(panel.axis.label)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{panel.axis.label} ({panel.fixed})")
        ax.grid(alpha=0.3)
        ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
