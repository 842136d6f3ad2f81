"""The Figure 3 analogue: accuracy against learning rate and against global batch size, one line per
loss, from finished runs (run directories, multirun directories, or W&B runs).

    python -m dftlab.reporting.ablation logs/multiruns/<lr sweep> logs/multiruns/<batch sweep> --out fig3
    python -m dftlab.reporting.ablation --wandb ENTITY/dftlab --group lr_cpu --group batch_size_cpu --out fig3

Writes `<out>.png` (one panel per swept axis, log-scale x; with several seeds per point the mean,
its min-max band and each seed), `<out>.csv` (one row per point and loss), `<out>_runs.csv` (one
row per run) and `<out>.md` (the tables, with the figure). The accuracy is the headline metric
(greedy accuracy averaged over the test splits) or, with `--split NAME`, that split's.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dftlab.evaluation.report import HEADLINE
from dftlab.reporting.runs import Run, find_runs


@dataclass(frozen=True)
class Result:
    """One finished run, reduced to what the figure needs."""

    run: str
    loss: str
    lr: float
    batch_size: int
    seed: int | None
    steps: int | None
    acc: float
    base_acc: float | None


@dataclass
class Point:
    x: float
    accs: list[float]  # one per seed

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accs)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accs) if len(self.accs) > 1 else 0.0


@dataclass(frozen=True)
class Axis:
    key: str  # a Result field
    label: str
    scale_base: int  # of the log-scale x axis


AXES = (Axis("lr", "learning rate", 10), Axis("batch_size", "global batch size", 2))


@dataclass
class Panel:
    axis: Axis
    fixed: str  # what the other axis is held at, e.g. "global batch size 32"
    series: dict[str, list[Point]] = field(default_factory=dict)  # loss -> points by x
    base: float | None = None  # the starting model's accuracy (mean over the panel's runs)


def metric_name(split: str | None) -> str:
    return f"{split}/acc" if split else HEADLINE


def _local_accuracy(run: Run, split: str | None) -> tuple[float, float | None]:
    """(fine-tuned, base) accuracy from a run's summary."""
    ev = run.summary["eval"]
    tuned, base = ev.get("finetuned", {}), ev.get("base", {})
    if split is None:
        base_acc = statistics.fmean(v["acc"] for v in base.values()) if base else None
        return ev[HEADLINE], base_acc
    if split not in tuned:
        raise KeyError(f"{run.path}: no test split {split!r} (it has {', '.join(sorted(tuned))})")
    return tuned[split]["acc"], base[split]["acc"] if split in base else None


def from_run(run: Run, split: str | None) -> Result:
    acc, base_acc = _local_accuracy(run, split)
    return Result(
        run=str(run.path), loss=run.loss, lr=float(run.get("optim.lr")), batch_size=int(run.get("data.batch_size")),
        seed=run.get("seed"), steps=run.summary.get("steps"), acc=acc, base_acc=base_acc,
    )


def local_results(paths: list[Path], split: str | None) -> tuple[list[Result], list[str]]:
    """Results of the finished, evaluated runs under `paths`, and the runs left out (and why)."""
    results, skipped = [], []
    for path in paths:
        runs = find_runs(path, finished=False)
        if not runs:
            skipped.append(f"{path}: no run directory found")
        for run in runs:
            if not run.summary:
                skipped.append(f"{run.path}: not finished (no summary.json)")
            elif "eval" not in run.summary:
                skipped.append(f"{run.path}: not evaluated")
            elif None in (run.loss, run.get("optim.lr"), run.get("data.batch_size")):
                skipped.append(f"{run.path}: not a fine-tuning run (no loss, learning rate or batch size)")
            else:
                results.append(from_run(run, split))
    return results, skipped


def lookup(config: dict, key: str):
    """A config value by dotted key, stored flat (`optim.lr`, as a sweep's) or nested."""
    if key in config:
        return config[key]
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def from_wandb(run, split: str | None) -> Result | None:
    """A W&B run's config (flat keys: the run's own and its sweep's) and summary, or None when
    it lacks the metric or the parameters."""
    config, summary = dict(run.config), run.summary
    loss = lookup(config, "loss.label") or lookup(config, "loss.name") or lookup(config, "loss")
    lr, batch_size = lookup(config, "optim.lr"), lookup(config, "data.batch_size")
    acc = summary.get(metric_name(split))
    if not isinstance(loss, str) or lr is None or batch_size is None or acc is None:
        return None
    if split is None:
        base = [v for k, v in dict(summary).items() if k.startswith("base/") and k.endswith("/acc")]
        base_acc = statistics.fmean(base) if base else None
    else:
        base_acc = summary.get(f"base/{split}/acc")
    return Result(
        run="/".join(run.path), loss=loss, lr=float(lr), batch_size=int(batch_size), seed=lookup(config, "seed"),
        steps=summary.get("trainer/global_step"), acc=float(acc), base_acc=base_acc,
    )


def wandb_results(project: str, groups: list[str], split: str | None) -> tuple[list[Result], list[str]]:
    """Finished runs of `project` (`entity/project`), of the given groups (all when none)."""
    import wandb

    api = wandb.Api()
    results, skipped = [], []
    for group in groups or [None]:
        filters = {"state": "finished", **({"group": group} if group else {})}
        for run in api.runs(project, filters=filters):
            result = from_wandb(run, split)
            if result is None:
                skipped.append(f"{'/'.join(run.path)} ({run.name}): no {metric_name(split)} or no loss/lr/batch config")
            else:
                results.append(result)
    return results, skipped


def beside(prefix: Path, suffix: str) -> Path:
    """`fig3` -> `fig3.png`, keeping any dots of the prefix (`fig3.v2` -> `fig3.v2.png`)."""
    return prefix.with_name(prefix.name + suffix)


def _format(value: float) -> str:
    return f"{value:g}"


def panels(results: list[Result]) -> list[Panel]:
    """One panel per axis that varies: the runs holding the other axis at the value under which
    this one takes the most values (a pooled lr sweep and batch sweep give one panel each)."""
    out = []
    for axis in AXES:
        other = next(a for a in AXES if a is not axis)
        spans = defaultdict(set)
        for r in results:
            spans[getattr(r, other.key)].add(getattr(r, axis.key))
        counts = Counter(getattr(r, other.key) for r in results)
        held = max(spans, key=lambda v: (len(spans[v]), counts[v]))
        if len(spans[held]) < 2:
            continue
        chosen = [r for r in results if getattr(r, other.key) == held]
        # loss -> x -> seed -> accuracies: runs of one seed at one point (a pooled lr sweep and batch
        # sweep share one) are one sample, their mean; the spread is over seeds
        accs = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
        for r in chosen:
            accs[r.loss][getattr(r, axis.key)][r.seed].append(r.acc)
        panel = Panel(axis, f"{other.label} {_format(held)}")
        panel.series = {
            loss: [Point(x, [statistics.fmean(v) for v in by_seed.values()]) for x, by_seed in sorted(by_x.items())]
            for loss, by_x in sorted(accs.items())
        }
        bases = [r.base_acc for r in chosen if r.base_acc is not None]
        panel.base = statistics.fmean(bases) if bases else None
        out.append(panel)
    return out


def _cell(point: Point | None) -> str:
    if point is None:
        return "-"
    if len(point.accs) == 1:
        return f"{100 * point.mean:.1f}"
    return f"{100 * point.mean:.1f} ± {100 * point.std:.1f} (n={len(point.accs)})"


def markdown(panel_list: list[Panel], results: list[Result], metric: str, figure: str | None) -> str:
    lines = [f"# Accuracy against learning rate and global batch size (`{metric}`, %)", ""]
    if figure:
        lines += [f"![]({figure})", ""]
    for p in panel_list:
        losses = list(p.series)
        xs = sorted({pt.x for pts in p.series.values() for pt in pts})
        by_x = {loss: {pt.x: pt for pt in pts} for loss, pts in p.series.items()}
        lines += [f"## {p.axis.label.capitalize()} ({p.fixed})", ""]
        lines += ["| " + p.axis.label + " | " + " | ".join(losses) + " |", "|---:|" + "---:|" * len(losses)]
        lines += [f"| {_format(x)} | " + " | ".join(_cell(by_x[loss].get(x)) for loss in losses) + " |" for x in xs]
        if p.base is not None:
            lines += ["", f"Starting model: {100 * p.base:.1f}."]
        lines.append("")
    lines += ["## Runs", "", "| run | loss | learning rate | global batch | seed | steps | accuracy |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (r.loss, r.lr, r.batch_size, r.seed or 0)):
        lines.append(f"| {Path(r.run).name} | {r.loss} | {_format(r.lr)} | {r.batch_size} | {r.seed} | {r.steps} "
                     f"| {100 * r.acc:.1f} |")
    return "\n".join(lines) + "\n"


def write_csvs(prefix: Path, panel_list: list[Panel], results: list[Result]) -> None:
    with open(beside(prefix, "_runs.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(Result.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in results)
    with open(beside(prefix, ".csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["axis", "x", "held", "loss", "n", "mean", "std", "min", "max"])
        for p in panel_list:
            for loss, points in p.series.items():
                for pt in points:
                    writer.writerow([p.axis.key, pt.x, p.fixed, loss, len(pt.accs), pt.mean, pt.std,
                                     min(pt.accs), max(pt.accs)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, help="run directories or multirun directories")
    parser.add_argument("--out", required=True, type=Path, help="prefix of the outputs (.png, .csv, _runs.csv, .md)")
    parser.add_argument("--split", help="plot this test split's accuracy instead of the mean over the splits")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read the finished runs of this W&B project")
    parser.add_argument("--group", action="append", default=[], help="W&B run group (repeatable; default: all)")
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb:
        parser.error("give run or multirun directories, or --wandb ENTITY/PROJECT")
    if args.group and not args.wandb:
        parser.error("--group selects W&B runs: give --wandb ENTITY/PROJECT too")
    try:
        results, skipped = local_results(args.paths, args.split)
    except KeyError as err:
        parser.error(str(err.args[0]))
    if args.wandb:
        more, more_skipped = wandb_results(args.wandb, args.group, args.split)
        results, skipped = results + more, skipped + more_skipped
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    if not results:
        parser.error("no finished, evaluated run found")

    metric = metric_name(args.split)
    panel_list = panels(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure = None
    if panel_list:
        from dftlab.reporting.ablation_plot import plot_panels  # matplotlib only when there is something to plot

        figure = plot_panels(panel_list, beside(args.out, ".png"), metric).name
    else:
        print("every run has the same learning rate and global batch size: no figure, only the tables", file=sys.stderr)
    write_csvs(args.out, panel_list, results)
    table = markdown(panel_list, results, metric, figure)
    beside(args.out, ".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
