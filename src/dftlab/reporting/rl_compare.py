"""DFT against RL from a multirun of the `rl_*` experiments: the DFT paper's Table 2 and Figure 2 in
miniature.

    python -m dftlab.reporting.rl_compare logs/multiruns/<date>_rl_compare --out docs/figures/rl_compare

Writes what `dftlab.reporting.compare` writes (per-split tables, greedy and Average@k, mean +- std
over seeds with pooled Wilson intervals), then `<out>_table2.md` (one row per method: the mean over
splits, greedy and Average@k, and the rejection samples it trained on) and `<out>_token_probs.png`
with its table (`<out>_token_probs.md`): p(target token) on the same demonstrations for the base
and each method's first seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dftlab.formats.token_probs import BEFORE, FINAL, load_point
from dftlab.plots.histograms import plot_histograms
from dftlab.reporting import compare
from dftlab.reporting.histograms import markdown_table
from dftlab.reporting.runs import Run

KIND = {"sft": "demonstrations", "dft": "demonstrations", "rft": "offline (rejection samples)",
        "dft_rs": "offline (rejection samples)", "dpo": "offline (preference pairs)", "grpo": "online"}


def _samples_line(runs: list[Run]) -> str:
    counts = next((r.summary["samples"] for r in runs if r.summary.get("samples", {}).get("samples")), None)
    if counts is None:
        return ""
    return (f"Rejection samples (the base, {counts['n']} per training prompt, temperature 1): {counts['samples']} "
            f"samples of {counts['sampled_prompts']} prompts, {100 * counts['acceptance_rate']:.1f}% correct; "
            f"{counts['prompts_with_correct']} prompts with at least one correct ({counts['accepted_rows']} RFT rows); "
            f"{counts['pairs']} DPO pairs from {counts['prompts_with_pairs']} prompts; {counts['truncated']} samples "
            f"cut by max_new_tokens.")


def table2(runs: list[Run]) -> str:
    """One row per method: the mean over splits, greedy and Average@k (mean +- std over seeds [pooled Wilson])."""
    greedy, _ = compare.table(runs, "greedy")
    sampled, k = compare.table(runs, "sampled")
    lines = [f"| method | trained on | greedy, mean over splits | Average@{k}, mean over splits |", "|---|---|---|---|"]
    for label, row in greedy.items():
        seeds = len(row[compare.MEAN].values)
        other = sampled.get(label, {}).get(compare.MEAN)
        name = label if label == compare.BASE and seeds == 1 else f"{label} ({seeds} seed{'s' if seeds > 1 else ''})"
        lines.append(f"| {name} | {KIND.get(label, '')} | {row[compare.MEAN].markdown()} | "
                     f"{other.markdown() if other else '-'} |")
    return "\n".join(lines)


def histograms(runs: list[Run], out: Path) -> str:
    """The base (the first run's `before` point) and each method's first run's last point."""
    first: dict[str, Run] = {}
    for r in runs:
        first.setdefault(r.get("run_name"), r)
    base_run = next(iter(first.values()))
    rows = [("base", load_point(base_run.path, BEFORE))]
    rows += [(label, load_point(r.path, FINAL)) for label, r in first.items()]
    title = f"p(target token) on {rows[0][1].summary['n_tokens']:.0f} demonstration tokens"
    plot_histograms(rows, out, title)
    table = markdown_table(rows)
    out.with_suffix(".md").write_text(f"# {title}\n\n![]({out.name})\n\n{table}\n")
    return table


def _with(prefix: Path, suffix: str) -> Path:
    return prefix.with_name(prefix.name + suffix)


def write(root: Path, out: Path) -> str:
    text = compare.write(root, out)
    runs = compare.load(root)
    parts = [text, "### The Table 2 analogue", "", table2(runs), "", _samples_line(runs)]
    summary = "\n".join(parts[1:]) + "\n"
    _with(out, "_table2.md").write_text(summary)
    hist = histograms(runs, _with(out, "_token_probs.png"))
    return "\n".join(parts) + "\n\n### p(target token) on the demonstrations\n\n" + hist + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dftlab.reporting.rl_compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a multirun directory of the rl_* experiments")
    parser.add_argument("--out", type=Path, default=None, help="output prefix (default: <root>/rl_compare)")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        raise SystemExit(f"{args.root}: no such directory")
    sys.stdout.write(write(args.root, args.out or args.root / "rl_compare"))


if __name__ == "__main__":
    main()
