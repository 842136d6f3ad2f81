"""The Figure 2 analogue: token-probability histograms of finished runs, overlaid, with a table.

    python -m dftlab.reporting.histograms RUN_DIR:before SFT_RUN DFT_RUN --out fig2.png --labels base SFT DFT

A run is a run directory trained with the `token_histograms` callback; `RUN_DIR` alone is its last
point, `RUN_DIR:before` the model it started from (the base model), `RUN_DIR:step_000100` any other.
The summary table is printed and written as markdown beside the figure (`fig2.md`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dftlab.formats.token_probs import FINAL, ProbHistogram, load_point
from dftlab.plots.histograms import plot_histograms

# summary name: (heading, format); p to six places, where a confident model's median differs from 1
COLUMNS = {
    "n_tokens": ("tokens", ".0f"),
    "frac_above_0.9": ("p > 0.9", ".4f"),
    "frac_below_0.01": ("p < 0.01", ".4f"),
    "mean": ("mean p", ".6f"),
    "median": ("median p", ".6f"),
    "entropy_mean": ("entropy (nats)", ".4f"),
}


def parse_run(spec: str) -> tuple[Path, str]:
    """`RUN_DIR` or `RUN_DIR:POINT` (a point name has no slash, so a path's own colons are safe)."""
    path, sep, point = spec.rpartition(":")
    if sep and path and "/" not in point:
        return Path(path), point
    return Path(spec), FINAL


def markdown_table(rows: list[tuple[str, ProbHistogram]]) -> str:
    lines = [
        "| run | point | " + " | ".join(heading for heading, _ in COLUMNS.values()) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for label, h in rows:
        cells = [format(h.summary[key], fmt) for key, (_, fmt) in COLUMNS.items()]
        lines.append(f"| {label} | {h.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR[:POINT]")
    parser.add_argument("--out", required=True, type=Path, help="the figure (.png); the table goes beside it (.md)")
    parser.add_argument("--labels", nargs="+", help="one per run (default: the run directory's name, and the point)")
    parser.add_argument("--title", default="p(target token) on the training data")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"{len(args.labels)} labels for {len(args.runs)} runs")
    specs = [parse_run(s) for s in args.runs]
    labels = args.labels or [p.resolve().name + ("" if point == FINAL else f":{point}") for p, point in specs]
    try:
        rows = [(label, load_point(path, point)) for label, (path, point) in zip(labels, specs)]
    except FileNotFoundError as err:
        parser.error(str(err))
    plot_histograms(rows, args.out, args.title)
    table = markdown_table(rows)
    args.out.with_suffix(".md").write_text(f"# {args.title}\n\n![]({args.out.name})\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
