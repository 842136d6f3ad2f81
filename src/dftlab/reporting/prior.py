"""DFT's gain over SFT against the strength of the prior: fine-tunes of bases pre-trained for more or
fewer steps, in distribution and on the unseen rules, greedy and sampled.

    python train.py -m experiment=study_prior          # SFT and DFT from the 200- and 3200-step bases
    python -m dftlab.reporting.prior logs/studies/temperature logs/studies/prior --out docs/figures/prior

Runs are grouped by their base (its recipe: `experiment=base` with the run's `model.base_overrides`),
labelled by its pre-training steps; they must share everything else but the loss and the seed.
Writes `<out>.md` (and prints it), `<out>.csv` and `<out>.png` (accuracy of the base and of each
loss, and the gap, against the base's steps; a row of panels per decoding).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from dftlab.embedded_base import base_config, base_key
from dftlab.reporting import study
from dftlab.reporting.runs import Run

ALLOWED = ("model.base_overrides",)  # what the arms differ in, besides the loss and the seed


def arms(runs: list[Run]) -> list[study.Arm]:
    """One arm per base, in order of its pre-training steps."""
    bases: dict[tuple, tuple[str, int]] = {}
    grouped: dict[str, list[Run]] = {}
    steps: dict[str, int] = {}
    for r in runs:
        overrides = tuple(r.get("model.base_overrides") or ())
        if overrides not in bases:
            cfg = base_config(OmegaConf.create({"model": {"base_overrides": list(overrides)}}))
            bases[overrides] = (base_key(cfg), int(cfg.trainer.max_steps))
        key, n = bases[overrides]
        grouped.setdefault(key, []).append(r)
        steps[key] = n
    by_steps: dict[int, str] = {}
    for key, n in steps.items():
        if n in by_steps:
            raise SystemExit(
                f"two bases of {n} steps ({grouped[by_steps[n]][0].path} and {grouped[key][0].path} "
                f"start from different ones): give runs whose bases differ in their steps only"
            )
        by_steps[n] = key
    return [study.Arm(n, f"{n}", grouped[by_steps[n]]) for n in sorted(by_steps)]


def write(paths: list[Path], out: Path, losses: tuple[str, str]) -> str:
    runs = study.load_study(paths, losses, ALLOWED)
    arm_list = arms(runs)
    columns = study.groups(study.rows(runs[0], "greedy"))
    text = study.write_tables(
        arm_list, runs, losses, columns, out, "base steps", "against the base's pre-training steps", ""
    )
    plot(arm_list, runs, losses, columns, out)
    return text


def plot(arm_list: list[study.Arm], runs: list[Run], losses: tuple[str, str], columns: dict, out: Path) -> Path:
    from dftlab.reporting.study_plot import Panel, plot_grid

    grid = []
    for mode, (title, k) in study.modes(runs).items():
        gap = Panel(f"{losses[1]} − {losses[0]}: {title}", "gap (points)", zero_line=True)
        for column, splits in columns.items():
            gap.series[column] = study.gap_series(arm_list, losses, mode, splits, k)
        grid.append([*study.accuracy_panels(arm_list, runs, losses, columns, mode), gap])
    return plot_grid(
        grid,
        study.with_suffix(out, ".png"),
        "Fine-tuning from a weaker or stronger prior (bands: lowest to highest seed; gap: 95% interval)",
        "base pre-training steps",
        [arm.x for arm in arm_list],
        log_base=2,
    )


def main(argv: list[str] | None = None) -> None:
    study.cli("python -m dftlab.reporting.prior", __doc__, "prior", write, argv)


if __name__ == "__main__":
    main()
