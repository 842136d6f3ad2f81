"""What the "When does DFT help?" reports share: finished runs read from several directories, a
check that they differ only where a study lets them, accuracy pooled over a group of splits, and
the paired gap between two losses.

A cell is the mean +- standard deviation over seeds and the 95% Wilson interval of all problems
(and samples) of all seeds pooled, as in the loss comparison; a gap is the mean over seeds of the
per-seed difference (the two runs of a seed share the base, the data order and the sampling seed),
its standard deviation over seeds, and the 95% Newcombe interval of the pooled difference.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from dftlab.evaluation.stats import newcombe
from dftlab.reporting.compare import MEAN, Cell, _job_order, cells, wall_time_s
from dftlab.reporting.runs import Run, find_runs

ID = "in distribution"
OOD = "unseen rules"
OOD_PREFIX = "test_ood_rule_"
# keys every run of a study may differ in: what the sweep varies, its name, where it writes (and any
# value that names a place inside its own directory)
ALWAYS_ALLOWED = (
    "seed",
    "loss",
    "run_name",
    "run_id",
    "paths",
    "data.seed",
    "data.cache_dir",
    "ckpt_path",
    "callbacks.eval_during_training.seed",
)


def load_runs(paths: list[Path]) -> list[Run]:
    """The finished, evaluated runs under each path (run or multirun directories), each once."""
    runs: dict[Path, Run] = {}
    for path in paths:
        if not Path(path).is_dir():
            raise SystemExit(f"{path}: no such directory")
        found = [r for r in find_runs(path) if r.summary.get("eval")]
        if not found:
            raise SystemExit(f"{path}: no finished run with an evaluation (summary.json with `eval`) under it")
        runs.update((r.path.resolve(), r) for r in sorted(found, key=_job_order))
    return list(runs.values())


def _flat(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for k, v in node.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_same_recipe(runs: list[Run], allowed: tuple[str, ...] = ()) -> None:
    """Refuse runs that differ in anything but `allowed` (and ALWAYS_ALLOWED), naming the key and two runs."""
    prefixes = ALWAYS_ALLOWED + allowed

    def own_place(r: Run, value) -> bool:
        home = r.get("paths.output_dir")
        return isinstance(value, str) and bool(home) and value.startswith(str(home))

    first = _flat(runs[0].config)
    for r in runs[1:]:
        other = _flat(r.config)
        for key in sorted(set(first) | set(other)):
            if any(key == p or key.startswith(p + ".") for p in prefixes):
                continue
            if own_place(runs[0], first.get(key)) and own_place(r, other.get(key)):
                continue
            if first.get(key) != other.get(key):
                raise SystemExit(
                    f"{runs[0].path} and {r.path} differ in {key} ({first.get(key)!r} vs "
                    f"{other.get(key)!r}): a study compares runs of one recipe"
                )


def groups(splits) -> dict[str, list[str]]:
    """In distribution (`test_id`) and the unseen rules (the `test_ood_rule_*` splits), of those present."""
    out = {ID: [s for s in splits if s == "test_id"], OOD: [s for s in splits if s.startswith(OOD_PREFIX)]}
    return {name: members for name, members in out.items() if members}


def rows(run: Run, mode: str, who: str = "finetuned") -> dict[str, dict]:
    """`{split: row}` of a run's end-of-run evaluation: greedy or sampled, of the fine-tune or its base."""
    ev = run.summary["eval"] if mode == "greedy" else run.summary["eval"].get("sampled") or {}
    return ev.get(who) or {}


def sample_count(run: Run, mode: str) -> int:
    return 1 if mode == "greedy" else run.summary["eval"]["sampled"]["k"]


def pooled(measurements: list[dict], splits: list[str], k: int) -> Cell:
    """One cell over `splits`: per seed the mean over the splits, and every problem (and sample) pooled."""
    return cells([{s: m[s] for s in splits} for m in measurements], k)[MEAN]


@dataclass
class Gap:
    diffs: list[float]  # b - a, one per seed
    ci: tuple[float, float]  # 95% Newcombe interval of the pooled difference

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.diffs) if len(self.diffs) > 1 else None

    def markdown(self) -> str:
        spread = f" ± {100 * self.std:.1f}" if self.std is not None else ""
        lo, hi = self.ci
        return f"{100 * self.mean:+.1f}{spread} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def gap(a: dict[int, dict], b: dict[int, dict], splits: list[str], k: int) -> Gap | None:
    """b - a over `splits`, paired by seed (`{seed: {split: row}}`); None without a seed in common."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    ca, cb = pooled([a[s] for s in seeds], splits, k), pooled([b[s] for s in seeds], splits, k)
    return Gap([vb - va for va, vb in zip(ca.values, cb.values)], newcombe(cb.hits, cb.total, ca.hits, ca.total))


def by_seed(runs: list[Run], mode: str, who: str = "finetuned") -> dict[int, dict]:
    """`{seed: {split: row}}`; a seed run twice is refused."""
    out: dict[int, dict] = {}
    for r in runs:
        seed = r.get("seed")
        if seed in out:
            raise SystemExit(f"two runs of seed {seed} in one group (one is {r.path}): give each seed once")
        out[seed] = rows(r, mode, who)
    return out


def unique_base(runs: list[Run], mode: str) -> list[dict]:
    """The base's measurements of a group of runs, each distinct one once (fine-tunes of one base share it)."""
    seen: dict[str, dict] = {}
    for r in runs:
        base = rows(r, mode, "base")
        if base:
            seen.setdefault(repr(sorted(base.items())), base)
    return list(seen.values())


# --- a study's arms: the runs at one value of what it varies (base steps, number of rules) ------

BASE = "base"


@dataclass
class Arm:
    x: float  # where it sits on the figure's x axis
    name: str
    runs: list[Run]

    def finetuned(self, loss: str, mode: str) -> dict[int, dict]:
        return by_seed([r for r in self.runs if r.loss == loss], mode)

    def cell(self, who: str, mode: str, splits: list[str], k: int) -> Cell | None:
        """`who`: BASE or a loss; None when the arm has no such runs."""
        measurements = unique_base(self.runs, mode) if who == BASE else list(self.finetuned(who, mode).values())
        return pooled(measurements, splits, k) if measurements else None

    def gap(self, a: str, b: str, mode: str, splits: list[str], k: int) -> Gap | None:
        return gap(self.finetuned(a, mode), self.finetuned(b, mode), splits, k)


def modes(runs: list[Run]) -> dict[str, tuple[str, int]]:
    """Mode -> (its title, k): greedy, and the runs' Average@k when they sampled."""
    out = {"greedy": ("Greedy accuracy", 1)}
    s = runs[0].summary["eval"].get("sampled")
    if s:
        out["sampled"] = (f"Average@{s['k']} at temperature {s['temperature']:g}, top_p {s['top_p']:g}", s["k"])
    return out


def _who_label(arm: Arm, who: str) -> str:
    if who == BASE:
        return BASE
    n = len({r.get("seed") for r in arm.runs if r.loss == who})
    return f"{who} ({n} seed{'s' if n != 1 else ''})"


def arm_table(
    arms: list[Arm], losses: tuple[str, str], mode: str, k: int, columns: dict[str, list[str]], arm_header: str
) -> tuple[list[str], list[list]]:
    """Markdown lines (a row per arm and base / loss, then the gap `losses[1] - losses[0]`) and CSV rows."""
    a, b = losses
    lines = [f"| {arm_header} | | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    csv_rows = []
    for arm in arms:
        for who in (BASE, a, b):
            found = {c: arm.cell(who, mode, splits, k) for c, splits in columns.items()}
            if not any(found.values()):
                continue
            lines.append(
                f"| {arm.name} | {_who_label(arm, who)} | "
                + " | ".join(c.markdown() if c else "-" for c in found.values())
                + " |"
            )
            csv_rows += [
                [arm.name, mode, col, who, len(c.values), c.mean, c.std, *c.ci] for col, c in found.items() if c
            ]
        gaps = {c: arm.gap(a, b, mode, splits, k) for c, splits in columns.items()}
        if any(gaps.values()):
            lines.append(
                f"| {arm.name} | **{b} − {a}** | "
                + " | ".join(g.markdown() if g else "-" for g in gaps.values())
                + " |"
            )
            csv_rows += [
                [arm.name, mode, col, f"{b}-{a}", len(g.diffs), g.mean, g.std, *g.ci] for col, g in gaps.items() if g
            ]
    return lines, csv_rows


CSV_COLUMNS = ["arm", "mode", "column", "row", "seeds", "mean", "std", "ci95_lo", "ci95_hi"]


def accuracy_series(arms: list[Arm], who: str, mode: str, splits: list[str], k: int):
    """`who`'s accuracy across the arms, in %: the band is the lowest to the highest seed (a single
    measurement, the base: its 95% Wilson interval)."""
    from dftlab.reporting.study_plot import Series

    points = [(arm.x, c) for arm in arms if (c := arm.cell(who, mode, splits, k))]
    lo = [min(c.values) if len(c.values) > 1 else c.ci[0] for _, c in points]
    hi = [max(c.values) if len(c.values) > 1 else c.ci[1] for _, c in points]
    return Series(
        [x for x, _ in points],
        [100 * c.mean for _, c in points],
        [100 * v for v in lo],
        [100 * v for v in hi],
        dashed=who == BASE,
    )


def gap_series(arms: list[Arm], losses: tuple[str, str], mode: str, splits: list[str], k: int):
    """The gap across the arms, in points, with its 95% Newcombe interval as the band."""
    from dftlab.reporting.study_plot import Series

    points = [(arm.x, g) for arm in arms if (g := arm.gap(*losses, mode, splits, k))]
    return Series(
        [x for x, _ in points],
        [100 * g.mean for _, g in points],
        [100 * g.ci[0] for _, g in points],
        [100 * g.ci[1] for _, g in points],
    )


def note(runs: list[Run], what: str) -> str:
    n = next(iter(rows(runs[0], "greedy").values()))["n"]
    seeds = len({r.get("seed") for r in runs})
    return (
        f"Each cell: mean ± standard deviation over seeds [95% Wilson interval of all problems and samples of all "
        f"seeds pooled], in %; a gap: the mean over seeds of the paired per-seed difference ± its standard "
        f"deviation [95% Newcombe interval of the pooled difference], in points; several splits: per seed the mean "
        f"over them. {n} problems a split; {len(runs)} runs, {seeds} seed{'s' if seeds != 1 else ''}; {what}. "
        f"{wall_times(runs)}"
    )


def wall_times(runs: list[Run]) -> str:
    """The wall time of each folder's runs, from the first one's start to the last one's end."""
    by_folder: dict[Path, list[Run]] = {}
    for r in runs:
        by_folder.setdefault(r.path.parent, []).append(r)
    return (
        "Wall time from the first run's start to the last run's end: "
        + "; ".join(f"`{folder}` ({len(rs)} runs) {wall_time_s(rs) / 60:.1f} min" for folder, rs in by_folder.items())
        + "."
    )


def write_outputs(out: Path, text: str, header: list[str], csv_rows: list[list]) -> None:
    """`<out>.md` and `<out>.csv`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with_suffix(out, ".md").write_text(text)
    with open(with_suffix(out, ".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(csv_rows)


def with_suffix(prefix: Path, suffix: str) -> Path:
    """`fig` -> `fig.png`, keeping any dots of the prefix."""
    return prefix.with_name(prefix.name + suffix)


def load_study(paths: list[Path], losses: tuple[str, str], allowed: tuple[str, ...]) -> list[Run]:
    """The runs of the two losses under `paths`, checked to share one recipe but for `allowed`."""
    runs = [r for r in load_runs(paths) if r.loss in losses]
    missing = [loss for loss in losses if not any(r.loss == loss for r in runs)]
    if missing:
        raise SystemExit(f"no run of {' or '.join(missing)} under {', '.join(map(str, paths))}")
    check_same_recipe(runs, allowed)
    return runs


def write_tables(
    arms: list[Arm],
    runs: list[Run],
    losses: tuple[str, str],
    columns: dict[str, list[str]],
    out: Path,
    arm_header: str,
    heading: str,
    what: str,
) -> str:
    """`<out>.md` (a table per decoding) and `<out>.csv`; returns the markdown."""
    parts, csv_rows = [], []
    for mode, (title, k) in modes(runs).items():
        lines, table_rows = arm_table(arms, losses, mode, k, columns, arm_header)
        parts.append(f"### {title} (%) {heading}\n\n" + "\n".join(lines))
        csv_rows += table_rows
    parts.append(note(runs, f"{losses[1]} − {losses[0]}: the gap{what}"))
    text = "\n\n".join(parts) + "\n"
    write_outputs(out, text, CSV_COLUMNS, csv_rows)
    return text


def accuracy_panels(
    arms: list[Arm], runs: list[Run], losses: tuple[str, str], columns: dict[str, list[str]], mode: str
):
    """A panel per column: the base's and each loss's accuracy across the arms."""
    from dftlab.reporting.study_plot import Panel

    title, k = modes(runs)[mode]
    panels = []
    for column, splits in columns.items():
        panel = Panel(f"{column}: {title}", "accuracy (%)")
        for who in (BASE, *losses):
            series = accuracy_series(arms, who, mode, splits, k)
            if series.x:
                panel.series[who] = series
        panels.append(panel)
    return panels


def cli(prog: str, doc: str, default_name: str, write, argv: list[str] | None) -> None:
    """The command line every study report shares: paths, --out, --losses."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="multirun or run directories of finished runs")
    parser.add_argument(
        "--out", type=Path, help=f"output prefix: <out>.md, .csv, .png (default: <first path>/{default_name})"
    )
    parser.add_argument(
        "--losses",
        nargs=2,
        default=["sft", "dft"],
        metavar=("A", "B"),
        help="the two losses compared; the gap is B - A (default: sft dft)",
    )
    args = parser.parse_args(argv)
    sys.stdout.write(write(args.paths, args.out or args.paths[0] / default_name, tuple(args.losses)))
