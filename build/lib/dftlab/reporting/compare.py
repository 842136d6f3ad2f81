"""The loss comparison from a multirun of `experiment=compare`: the DFT paper's Table 1 and Figure 1
in miniature.

    python -m dftlab.reporting.compare logs/multiruns/<date>_compare --out logs/compare/table

Rows: the base model, then each fine-tune (a run's `run_name`, by default its loss) in the order
the multirun ran them; columns: the test splits and their mean. A cell is the mean +- standard
deviation over seeds, and the 95% Wilson interval of all the problems (and samples) of all seeds
pooled. One table for greedy accuracy, one for Average@k. Writes `<out>.md` (and prints it),
`<out>.csv`, and from the evaluation-during-training points `<out>_progress.png` (one curve per
row, mean +- std over seeds, one panel per split) and `<out>_progress.csv`.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from dftlab.evaluation.stats import wilson
from dftlab.formats.eval_points import DIR, POINTS, read_points
from dftlab.plots.progress import Curve, plot_progress
from dftlab.reporting.runs import Run, find_runs

BASE = "base"
MEAN = "mean"


@dataclass
class Cell:
    values: list[float]  # one accuracy per seed (per measurement)
    hits: float  # correct samples, all seeds pooled
    total: int

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def ci(self) -> tuple[float, float]:
        return wilson(self.hits, self.total)

    def markdown(self) -> str:
        spread = f" ± {100 * self.std:.1f}" if self.std is not None else ""
        lo, hi = self.ci
        return f"{100 * self.mean:.1f}{spread} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _job_order(run: Run) -> tuple:
    """Hydra names a multirun's job folders `<job number>_<overrides>`: their order is the sweep's."""
    head = run.path.name.split("_", 1)[0]
    return (0, int(head), str(run.path)) if head.isdigit() else (1, 0, str(run.path))


def load(root: Path) -> list[Run]:
    runs = sorted((r for r in find_runs(root) if r.summary.get("eval")), key=_job_order)
    if not runs:
        raise SystemExit(f"{root}: no finished run with an evaluation (summary.json with `eval`) under it")
    seen: dict[tuple, Path] = {}
    for r in runs:
        key = (r.get("run_name"), r.get("seed"))
        if key in seen:
            raise SystemExit(f"{seen[key]} and {r.path} are both run_name={key[0]}, seed={key[1]}: give runs "
                             f"that differ in more than the seed distinct run_name values")
        seen[key] = r.path
    return runs


def _measurements(runs: list[Run], mode: str) -> dict[str, list[dict]]:
    """Row label -> one `{split: row}` per seed; the base's identical measurements (every
    fine-tune of one base shares its cached evaluation) count once."""
    out: dict[str, list[dict]] = defaultdict(list)
    base_seen = set()
    for r in runs:
        ev = r.summary["eval"] if mode == "greedy" else r.summary["eval"].get("sampled")
        if not ev:
            continue
        base = ev.get("base") or {}
        if base and (key := json.dumps(base, sort_keys=True)) not in base_seen:
            base_seen.add(key)
            out[BASE].append(base)
        out[r.get("run_name")].append(ev["finetuned"])
    return dict(sorted(out.items(), key=lambda kv: kv[0] != BASE))  # the base first, then run order


def cells(measurements: list[dict], k: int) -> dict[str, Cell]:
    """Split -> cell, and the mean over splits (per seed, then over seeds; pooled over all)."""
    splits = list(measurements[0])
    out = {}
    for split in splits:
        rows = [m[split] for m in measurements if split in m]
        out[split] = Cell([r["acc"] for r in rows], sum(r["acc"] * r["n"] * k for r in rows),
                          sum(r["n"] * k for r in rows))
    out[MEAN] = Cell(
        [statistics.fmean(m[s]["acc"] for s in splits) for m in measurements],
        sum(c.hits for c in out.values()),
        sum(c.total for c in out.values()),
    )
    return out


def table(runs: list[Run], mode: str) -> tuple[dict[str, dict[str, Cell]], int]:
    """Row -> column -> cell, and k (1 for greedy)."""
    k = 1 if mode == "greedy" else runs[0].summary["eval"]["sampled"]["k"]
    return {label: cells(m, k) for label, m in _measurements(runs, mode).items()}, k


def markdown(grid: dict[str, dict[str, Cell]], title: str) -> str:
    columns = list(next(iter(grid.values())))
    lines = [f"### {title}", "", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, row in grid.items():
        n = len(next(iter(row.values())).values)
        name = label if label == BASE and n == 1 else f"{label} ({n} seed{'s' if n > 1 else ''})"
        lines.append(f"| {name} | " + " | ".join(row[c].markdown() if c in row else "-" for c in columns) + " |")
    return "\n".join(lines)


def wall_time_s(runs: list[Run]) -> float:
    """From the first run's start (its config.yaml) to the last run's end (its summary.json)."""
    start = min((r.path / "config.yaml").stat().st_mtime for r in runs)
    end = max((r.path / "summary.json").stat().st_mtime for r in runs)
    return end - start


def progress(runs: list[Run]) -> tuple[dict[str, dict[str, Curve]], list[list], str]:
    """Panel (split, and the mean) -> row -> curve (mean +- std over seeds), the CSV rows, the metric."""
    values: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    metric = ""
    for r in runs:
        points = read_points(r.path / DIR / POINTS)
        by_step: dict[int, list[float]] = defaultdict(list)
        for p in points:
            values[(p["split"], r.get("run_name"), p["step"])].append(p["value"])
            by_step[p["step"]].append(p["value"])
            metric = p["metric"]
        for step, vals in by_step.items():
            values[(MEAN, r.get("run_name"), step)].append(statistics.fmean(vals))
    panels: dict[str, dict[str, Curve]] = {}
    csv_rows = []
    for split in dict.fromkeys(s for s, _, _ in values):
        panels[split] = {}
        for label in dict.fromkeys(lbl for s, lbl, _ in values if s == split):
            steps = sorted(step for s, lbl, step in values if s == split and lbl == label)
            mean = [statistics.fmean(values[(split, label, st)]) for st in steps]
            std = [statistics.stdev(values[(split, label, st)]) if len(values[(split, label, st)]) > 1 else 0.0
                   for st in steps]
            panels[split][label] = Curve(steps, mean, [m - s for m, s in zip(mean, std)],
                                         [m + s for m, s in zip(mean, std)])
            csv_rows += [[label, split, st, len(values[(split, label, st)]), m, s]
                         for st, m, s in zip(steps, mean, std)]
    return panels, csv_rows, metric


def _with(prefix: Path, suffix: str) -> Path:
    return prefix.with_name(prefix.name + suffix)


def write(root: Path, out: Path) -> str:
    """Write every output; returns the markdown."""
    runs = load(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    seeds = len({r.get("seed") for r in runs})
    parts, csv_rows = [], []
    for mode in ("greedy", "sampled"):
        grid, k = table(runs, mode)
        if not grid:
            continue
        s = runs[0].summary["eval"].get("sampled") or {}
        title = ("Greedy accuracy (%)" if mode == "greedy"
                 else f"Average@{k} (%), temperature {s.get('temperature', 1.0):g}, top_p {s.get('top_p', 1.0):g}")
        parts.append(markdown(grid, title))
        name = "greedy" if mode == "greedy" else f"avg@{k}"
        for label, row in grid.items():
            for column, c in row.items():
                csv_rows.append([name, label, column, len(c.values), c.mean, c.std, *c.ci, c.total])
    n = next(iter(runs[0].summary["eval"]["finetuned"].values()))["n"]
    parts.append(
        f"Each cell: mean ± standard deviation over seeds [95% Wilson interval of all problems and samples of all "
        f"seeds pooled], in %; {n} problems a split; `{MEAN}`: the mean over splits. The base row is one "
        f"measurement when every fine-tune starts from the same base. "
        f"{len(runs)} runs ({seeds} seed{'s' if seeds > 1 else ''}) from "
        f"`{root}`; wall time from the first run's start to the last run's end: {wall_time_s(runs) / 60:.1f} min."
    )
    text = "\n\n".join(parts) + "\n"
    _with(out, ".md").write_text(text)
    with open(_with(out, ".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mode", "row", "column", "seeds", "mean", "std", "ci95_lo", "ci95_hi", "samples"])
        w.writerows(csv_rows)
    panels, progress_rows, metric = progress(runs)
    if panels:
        what = "greedy accuracy" if metric == "acc" else metric.replace("avg@", "Average@")
        plot_progress(panels, _with(out, "_progress.png"),
                      f"{what} during training, mean ± std over {seeds} seed{'s' if seeds > 1 else ''}", "accuracy (%)")
        with open(_with(out, "_progress.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["row", "split", "step", "seeds", "mean", "std"])
            w.writerows(progress_rows)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dftlab.reporting.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a multirun directory (or any folder of finished runs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output prefix: <out>.md, <out>.csv, <out>_progress.png (default: <root>/compare)")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        raise SystemExit(f"{args.root}: no such directory")
    sys.stdout.write(write(args.root, args.out or args.root / "compare"))


if __name__ == "__main__":
    main()
